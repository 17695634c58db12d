"""Web apps send a person to sign (issue 4): the relying-party API and the ``/sign`` pages.

:func:`build` wires the flow from what :mod:`signer.app` already opened; :func:`add_routes`
registers the API and the pages. Enabled by ``[web_signing]`` in the configuration.
"""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from signer.flows.registry import RpRegistry
from signer.flows.webhooks import Webhooks
from signer.flows.websign import SignerLoginFailed, WebPolicy, WebSigning
from signer.http.browser import STATIC_DIR as AUDIT_STATIC
from signer.http.browser import Cookies, LoginResources, add_static, browser_login
from signer.http.kit.outbound import poster
from signer.http.kit.state import WEB_SIGNING
from signer.http.sign import api, views
from signer.settings.config import Settings
from signer.signing.longterm import LongTerm
from signer.signing.pipeline import SigningService
from signer.storage.signing_requests import RpClientStore, SigningRequestStore

__all__ = ["add_routes", "build"]


def build(
    app: web.Application,
    settings: Settings,
    resources: LoginResources,
    *,
    signing: SigningService,
    long_term: LongTerm | None = None,
) -> None:
    """Put the flow, the RP registry, the cookies and the templates on ``app``; ``long_term``
    answers PAdES requests at B-LT / B-LTA when they ask."""
    web_settings = settings.web_signing
    assert web_settings is not None
    issuer = next(i.issuer for i in settings.issuers if i.name == web_settings.issuer)
    public_url = settings.server.public_url
    login = browser_login(
        settings, web_settings, callback="/sign/callback", purpose="sign", failed=SignerLoginFailed,
        resources=resources, max_age=web_settings.max_age,
    )  # fmt: skip
    pool, clock = resources.pool, resources.clock
    rps = RpClientStore(pool)
    requests = SigningRequestStore(pool)
    webhooks = Webhooks(requests=requests, rps=rps, post=poster(resources.http))
    app[api.WEBHOOKS] = webhooks  # closed by signer.app when the service stops
    grace = timedelta(seconds=settings.clients.secret_grace_seconds)
    app[api.RP_REGISTRY] = RpRegistry(rps, clock, grace=grace)
    app[WEB_SIGNING] = WebSigning(
        login=login,
        issuer=issuer,
        requests=requests,
        rps=rps,
        signing=signing,
        policy=WebPolicy(
            request_lifetime=web_settings.request_lifetime,
            max_age=web_settings.max_age,
            acr_levels=web_settings.acr_levels,
        ),
        public_url=public_url,
        clock=clock,
        webhooks=webhooks,
        long_term=long_term,
    )


def add_routes(app: web.Application, public_url: str) -> None:
    app[views.COOKIES] = Cookies.for_url(public_url, "qes-sign-consent", "qes-sign-login")
    app[views.TEMPLATES] = views.templates()
    r = app.router
    r.add_post("/api/v1/signing-requests", api.create_signing_request)
    r.add_get("/api/v1/signing-requests/{id}", api.show_signing_request)
    r.add_get("/api/v1/signing-requests/{id}/documents/{n:[0-9]+}.pdf", api.signed_pdf)
    r.add_get("/sign/callback", views.callback)
    add_static(r, "/sign/static/base", AUDIT_STATIC)
    add_static(r, "/sign/static", views.STATIC_DIR)
    r.add_get("/sign/{id}", views.start)
    r.add_get("/sign/{id}/consent", views.consent_page)
    r.add_post("/sign/{id}/consent", views.decide)
    r.add_get("/sign/{id}/documents/{n:[0-9]+}", views.original_pdf)
