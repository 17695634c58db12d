"""Wiring of the CSC v2 OAuth2 credential flow (enabled with ``[web_signing]`` and the CSC API).

The person's login reuses the web-signing OIDC client (``[web_signing] client_id``, its secret,
``max_age_seconds``, ``acr_levels``; ``credential_acr`` sets the least ``acr``) with the
redirect URI ``{public_url}/csc/v2/oauth2/callback``, which must be registered at the IdP.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import aiohttp
import asyncpg
from aiohttp import web

from idp_adapter.codeflow import CodeFlowClient
from idp_adapter.registry import IssuerRegistry
from signer.config import Settings
from signer.csc import oauth2_views as views
from signer.csc.oauth2 import CredentialAuthority, CredentialOAuth2, OAuth2Policy
from signer.storage.csc_oauth2 import CscOAuth2Store
from signer.storage.signing_requests import RpClientStore
from signer.webflow.registry import RpRegistry

__all__ = ["add_routes", "build"]
CALLBACK = f"{views.BASE}/callback"


def build(
    app: web.Application,
    settings: Settings,
    *,
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    tokens: IssuerRegistry,
    credentials: CredentialAuthority,
    clock: Callable[[], datetime],
) -> None:
    """Put the flow on ``app`` (called from the app's startup, resources already open)."""
    web_settings = settings.web_signing
    assert web_settings is not None
    issuer = next(i.issuer for i in settings.issuers if i.name == web_settings.issuer)
    public_url = settings.server.public_url
    idp = CodeFlowClient(
        issuer,
        web_settings.client_id,
        web_settings.client_secret.reveal(),
        f"{public_url}{CALLBACK}",
        http,
        scope=web_settings.scope,
    )
    accepted = None
    if web_settings.credential_acr is not None:
        levels = web_settings.acr_levels
        accepted = levels[levels.index(web_settings.credential_acr) :]
    rps = RpClientStore(pool)
    app[views.CSC_OAUTH2] = CredentialOAuth2(
        idp=idp,
        tokens=tokens,
        store=CscOAuth2Store(pool),
        rps=rps,
        registry=RpRegistry(rps, clock),
        credentials=credentials,
        policy=OAuth2Policy(
            max_age=web_settings.max_age,
            acr_accepted=accepted,
            max_hashes=settings.server.max_digests,
        ),
        public_url=public_url,
        clock=clock,
    )


def add_routes(app: web.Application, public_url: str) -> None:
    app[views.OAUTH2_COOKIES] = views.cookies_for(public_url)
    app[views.OAUTH2_TEMPLATES] = views.templates()
    r = app.router
    r.add_get(f"{views.BASE}/authorize", views.authorize)
    r.add_get(CALLBACK, views.callback)
    r.add_get(f"{views.BASE}/consent/{{id}}", views.consent_page)
    r.add_post(f"{views.BASE}/consent/{{id}}", views.decide)
    r.add_post(f"{views.BASE}/token", views.token)
    # RFC 8414 §3: the metadata of issuer {public_url}/csc/v2.
    r.add_get("/.well-known/oauth-authorization-server/csc/v2", views.metadata)
