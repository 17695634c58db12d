"""m-of-n human approval of batch signatures (issue 7): the service, its API and web UI.

:func:`build` wires the service from what :mod:`signer.app` already opened; :func:`add_routes`
registers the API and, when ``[approvals] ui_client_id`` is set, the approvers' pages.
"""

from __future__ import annotations

from aiohttp import web

from ca.logentry import PrivacyKey
from signer.flows.approvals import ApprovalPolicy, ApprovalService
from signer.flows.login import LoginFailed
from signer.flows.webhooks import Webhooks
from signer.flows.websign import principal_json
from signer.http.approvals import api, ui
from signer.http.browser import Cookies, LoginResources, session_login
from signer.http.kit.hold import APPROVALS
from signer.http.kit.outbound import poster
from signer.settings.config import Settings
from signer.signing.longterm import LongTerm
from signer.signing.pipeline import SigningService
from signer.storage.approvals import ApprovalStore
from signer.storage.signing_requests import RpClientStore, SigningRequestStore

__all__ = ["add_routes", "build"]

_ID = "{id:[0-9a-fA-F-]{36}}"


def build(
    app: web.Application,
    settings: Settings,
    resources: LoginResources,
    *,
    policy: ApprovalPolicy,
    signing: SigningService,
    privacy_key: PrivacyKey,
    long_term: LongTerm | None = None,
) -> ApprovalService:
    """Put the service (and the UI, when configured) on ``app``; returns the service."""
    pool, clock = resources.pool, resources.clock
    webhooks = Webhooks(
        requests=SigningRequestStore(pool), rps=RpClientStore(pool), post=poster(resources.http)
    )
    service = ApprovalService(
        store=ApprovalStore(pool),
        policy=policy,
        signing=signing,
        privacy_key=privacy_key,
        clock=clock,
        lifetime=settings.approvals.request_lifetime,
        webhooks=webhooks,
        long_term=long_term,
    )
    app[APPROVALS] = service
    app[WEBHOOKS] = webhooks
    ui_settings = settings.approvals.ui
    if ui_settings is not None:
        public_url = settings.server.public_url
        login = session_login(
            settings, ui_settings, realm="approvals", role=None, failed=LoginFailed,
            resources=resources, keep_principal=principal_json,
        )  # fmt: skip
        app[ui.APPROVAL_UI] = ui.ApprovalUi(
            login=login,
            service=service,
            templates=ui.page_templates(),
            cookies=Cookies.for_url(public_url, "qes-approvals-session", "qes-approvals-login"),
        )
    return service


WEBHOOKS = web.AppKey("approval_webhooks", Webhooks)


def add_routes(app: web.Application, settings: Settings) -> None:
    r = app.router
    r.add_get("/api/v1/approval-requests", api.list_pending)
    r.add_get(f"/api/v1/approval-requests/{_ID}", api.show)
    r.add_get(f"/api/v1/approval-requests/{_ID}/document.pdf", api.document)
    r.add_post(f"/api/v1/approval-requests/{_ID}/approve", api.approve)
    r.add_post(f"/api/v1/approval-requests/{_ID}/deny", api.deny)
    if settings.approvals.ui is None:
        return
    r.add_get("/approvals", ui.list_page)
    ui.SESSION.add_routes(r)
    r.add_get(f"/approvals/{_ID}", ui.detail_page)
    r.add_post(f"/approvals/{_ID}/decide", ui.decide)
