"""Wiring of the CSC v2 OAuth2 credential flow (enabled with ``[web_signing]`` and the CSC API).

The person's login reuses the web-signing OIDC client (``[web_signing] client_id``, its secret,
``max_age_seconds``, ``acr_levels``; ``credential_acr`` sets the least ``acr``) with the
redirect URI ``{public_url}/csc/v2/oauth2/callback``, which must be registered at the IdP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web
from cryptography import x509

from signer.flows.csc_oauth2 import (
    AuthorizationLoginFailed,
    CredentialAuthority,
    CredentialFacts,
    CredentialGrant,
    CredentialOAuth2,
    IssuedToken,
    OAuth2Policy,
)
from signer.flows.registry import RpRegistry
from signer.http.browser import Cookies, LoginResources, browser_login
from signer.http.csc import api as csc_api
from signer.http.csc import oauth2_views as views
from signer.settings.config import Settings
from signer.signing.csc import CscService, secret_hash
from signer.storage.csc import CredentialAuthorization, CscStore
from signer.storage.csc_oauth2 import CscOAuth2Store
from signer.storage.signing_requests import RpClientStore

__all__ = ["CoreCredentials", "add_routes", "build"]
CALLBACK = f"{views.BASE}/callback"
METHODS = ("oauth2/authorize", "oauth2/token")


@dataclass(frozen=True, eq=False)
class CoreCredentials:
    """:class:`CredentialAuthority` on the CSC core: its credentials, its authorization secrets
    (``CscService.create_authorization``), revocation by the secret's SHA-256."""

    service: CscService
    credentials: CscStore
    store: CscOAuth2Store
    clock: Callable[[], datetime]

    async def credential(self, credential_id: str) -> CredentialFacts | None:
        found = await self.credentials.get(credential_id)
        if found is None or found.record.purged:
            return None
        return CredentialFacts(
            credential_id=found.id,
            owner_issuer=found.token_issuer,
            owner_subject=found.token_subject,
            certificate=x509.load_der_x509_certificate(found.record.certificate_der),
            expires_at=found.expires_at,
            usable=found.state == "active",
        )

    async def grant(self, grant: CredentialGrant) -> IssuedToken:
        """The core's single-use authorization for exactly this credential, owner, hash
        algorithm, hashes, count and authentication; it cuts the expiry to the credential's."""
        secret = await self.service.create_authorization(
            CredentialAuthorization(
                credential_id=grant.credential_id,
                token_issuer=grant.owner_issuer,
                token_subject=grant.owner_subject,
                hash_algorithm=grant.hash_algorithm_oid,
                digests=grant.hashes,
                count=grant.num_signatures,
                expires_at=grant.expires_at,
                acr=grant.acr,
                amr=grant.amr,
                auth_time=grant.auth_time,
            )
        )
        found = await self.credentials.get(grant.credential_id)
        expires = min(grant.expires_at, found.expires_at) if found else grant.expires_at
        return IssuedToken(secret, secret_hash(secret).hex(), expires)

    async def revoke(self, ref: str) -> None:
        await self.store.revoke_authorization(bytes.fromhex(ref), self.clock())


def build(
    app: web.Application,
    settings: Settings,
    resources: LoginResources,
    *,
    csc: CscService,
) -> None:
    """Put the flow on ``app`` (called from the app's startup, resources already open)."""
    web_settings = settings.web_signing
    assert web_settings is not None
    public_url = settings.server.public_url
    login = browser_login(
        settings, web_settings, callback=CALLBACK, purpose="csc", failed=AuthorizationLoginFailed,
        resources=resources, max_age=web_settings.max_age,
    )  # fmt: skip
    pool, clock = resources.pool, resources.clock
    accepted = None
    if web_settings.credential_acr is not None:
        levels = web_settings.acr_levels
        accepted = levels[levels.index(web_settings.credential_acr) :]
    rps = RpClientStore(pool)
    store = CscOAuth2Store(pool)
    credentials: CredentialAuthority = CoreCredentials(csc, CscStore(pool), store, clock)
    app[views.CSC_OAUTH2] = CredentialOAuth2(
        login=login,
        store=store,
        rps=rps,
        registry=RpRegistry(rps, clock),
        credentials=credentials,
        policy=OAuth2Policy(
            max_age=web_settings.max_age,
            acr_accepted=accepted,
            max_hashes=settings.csc.max_signatures,
        ),
        public_url=public_url,
        clock=clock,
        screen=csc.screen_signer,
    )


def add_routes(app: web.Application, public_url: str) -> None:
    app[csc_api.OAUTH2_INFO] = views.info_fields(public_url)
    app[csc_api.EXTRA_METHODS] = [*app.get(csc_api.EXTRA_METHODS, []), *METHODS]
    app[views.OAUTH2_COOKIES] = Cookies.for_url(public_url, "qes-csc-consent", "qes-csc-login")
    app[views.OAUTH2_TEMPLATES] = views.templates()
    r = app.router
    r.add_get(f"{views.BASE}/authorize", views.authorize)
    r.add_get(CALLBACK, views.callback)
    r.add_get(f"{views.BASE}/consent/{{id}}", views.consent_page)
    r.add_post(f"{views.BASE}/consent/{{id}}", views.decide)
    r.add_post(f"{views.BASE}/token", views.token)
    # RFC 8414 §3: the metadata of issuer {public_url}/csc/v2.
    r.add_get("/.well-known/oauth-authorization-server/csc/v2", views.metadata)
