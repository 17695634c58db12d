"""The auditor web UI (``/audit``): OIDC login with the auditor role, search, record detail and
exports, rendered on the server (jinja2, autoescaped); it works without JavaScript.

:func:`build` wires the service from what :mod:`signer.app` already opened; :func:`add_routes`
registers the pages. The JSON API for the same data is ``/api/v1/certificates``.
"""

from __future__ import annotations

from aiohttp import web

from signer.flows.login import LoginFailed
from signer.http.audit import views
from signer.http.audit.views import AUDIT_UI, AuditUi
from signer.http.browser import Cookies, LoginResources, Surface, session_login, templates
from signer.settings.config import Settings
from signer.storage.policy import PolicyStore
from signer.storage.records import RecordStore

__all__ = ["add_routes", "build"]


AUDIT_PAGES = Surface.with_sessions(
    "audit",
    "Audit",
    footer="Every certificate is issued for one request, valid for 10 minutes; its key is"
    " destroyed afterwards.",
    back_label="Back to the search",
)


def build(
    settings: Settings,
    resources: LoginResources,
    *,
    records: RecordStore,
) -> AuditUi:
    ui = settings.audit.ui
    assert ui is not None
    public_url = settings.server.public_url
    login = session_login(
        settings, ui, realm="audit", role=settings.audit.role, failed=LoginFailed,
        resources=resources,
    )  # fmt: skip
    return AuditUi(
        login=login,
        records=records,
        templates=templates(AUDIT_PAGES, "http/audit/templates"),
        cookies=Cookies.for_url(public_url),
        clock=resources.clock,
        actions=PolicyStore(resources.pool),
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/audit", views.search_page)
    r.add_get("/audit/records/{serial}", views.detail_page)
    r.add_get("/audit/administration", views.administration_page)
    r.add_get("/audit/export.{fmt:jsonl|csv}", views.export)
    r.add_get("/audit/manifest.{fmt:jsonl|csv}.json", views.export_manifest)
    views.SESSION.add_routes(r)


__all__ += ["AUDIT_UI"]
