"""The one browser login of every surface (audit UI, approvers' UI, web signing, CSC v2
OAuth2): authorization code + PKCE S256 + state + nonce, with step-up parameters.

RFC 6749 §4.1 and §10.12 (``state`` bound to the browser), RFC 7636 §4 (S256), OIDC Core
§3.1.2.1 (``nonce``, ``max_age``, ``acr_values``) and §3.1.3.7 (ID token validation, done by
:meth:`IssuerRegistry.verify_id_token`). All flow state is in PostgreSQL (one table, migration
0014); the browser holds only random values (a flow id during login, then a session id) whose
hashes key the rows. Each surface keeps only its identity check (auditor role, expected
signer, credential owner, approver group), applied to the :class:`Principal` returned here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from idp_adapter.codeflow import CodeFlowClient, CodeFlowRequest
from idp_adapter.principal import Principal
from idp_adapter.registry import IssuerRegistry
from signer.errors import RequestError
from signer.storage.audit_sessions import AuditSessionStore, UiSession
from signer.storage.login_flows import LoginFlow, LoginFlowStore
from signer.storage.signing_requests import RpClientStore

FLOW_LIFETIME = timedelta(minutes=10)


class LoginFailed(RequestError):
    """The callback does not complete a login this browser started (RFC 6749 §10.12)."""

    slug = "audit-login-failed"
    title = "The login could not be completed"
    status = 400


class NotAnAuditor(RequestError):
    """A valid login whose identity lacks the auditor role."""

    slug = "audit-role-required"
    title = "This account does not have the auditor role"
    status = 403


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@dataclass(frozen=True)
class Started:
    flow_id: str
    redirect_url: str


@dataclass(frozen=True)
class Consenting:
    """A signer logged in for one request (web signing, CSC ``scope=credential``): the consent
    session to set as a cookie, and the request it is for."""

    session_id: str
    request_id: uuid.UUID


@dataclass(frozen=True)
class LoggedIn:
    session_id: str
    return_to: str


@dataclass(frozen=True, kw_only=True, eq=False)
class BrowserLogin:
    """Starts and finishes one surface's logins (``purpose``); no I/O in ``__init__``.

    ``failed`` is the surface's own error for a callback that completes no login this browser
    started (its public slug stays); ``max_age`` asks for and checks a fresh authentication
    (OIDC Core §3.1.2.1, §3.1.3.7 ``auth_time``)."""

    client: CodeFlowClient
    tokens: IssuerRegistry
    flows: LoginFlowStore
    purpose: str
    failed: type[RequestError]
    clock: Callable[[], datetime]
    max_age: timedelta | None = None
    random: Callable[[int], str] = secrets.token_urlsafe

    async def begin(
        self,
        *,
        subject_id: uuid.UUID | None = None,
        return_to: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Started:
        """A new flow: fresh state, nonce and 64-byte PKCE verifier (RFC 7636 §7.1); ``extra``
        adds ``prompt``, ``max_age``, ``acr_values`` (step-up), ``login_hint``, ``ui_locales``."""
        now = self.clock()
        req = CodeFlowRequest(self.random(32), self.random(32), self.random(64))
        flow_id = self.random(32)
        flow = LoginFlow(
            self.purpose, subject_id, req.state, req.nonce, req.verifier, return_to,
            now + FLOW_LIFETIME,
        )  # fmt: skip
        await self.flows.save(digest(flow_id), flow, now)
        return Started(flow_id, await self.client.authorization_url(req, extra))

    async def take(self, flow_id: str | None) -> LoginFlow:
        """The flow this browser started, used up here whatever happens next."""
        now = self.clock()
        flow = await self.flows.take(digest(flow_id), self.purpose, now) if flow_id else None
        if flow is None:
            raise self.failed("no login flow for this browser (expired, used, or never started)")
        return flow

    def check_state(self, flow: LoginFlow, state: str | None) -> None:
        """RFC 6749 §10.12: the callback's ``state`` is the one this browser's flow sent."""
        if not state or not hmac.compare_digest(state.encode(), flow.state.encode()):
            raise self.failed("state does not match the flow this browser started")

    async def identify(self, flow: LoginFlow, code: str | None) -> Principal:
        """Redeem ``code`` with the flow's PKCE verifier (RFC 6749 §4.1.3, RFC 7636 §4.5) and
        verify the ID token: signature, audience, ``nonce`` and, with ``max_age``, freshness."""
        if not code:
            raise self.failed("the authorization response has no code")
        id_token = await self.client.redeem(code, flow.verifier)
        return await self.tokens.verify_id_token(
            id_token, client_id=self.client.client_id, nonce=flow.nonce, max_age=self.max_age
        )

    async def finish(
        self, flow_id: str | None, state: str | None, code: str | None
    ) -> tuple[LoginFlow, Principal]:
        """:meth:`take`, :meth:`check_state` and :meth:`identify` in one call."""
        flow = await self.take(flow_id)
        self.check_state(flow, state)
        return flow, await self.identify(flow, code)


@dataclass(frozen=True, kw_only=True, eq=False)
class RelyingPartyFlow:
    """What the flows a relying party sends a person into share (web signing, CSC
    ``scope=credential``): the person's login, the registered clients, this service's public
    URL, a clock and the source of random state (RFC 6749 §10.10: unguessable values)."""

    login: BrowserLogin
    rps: RpClientStore
    public_url: str
    clock: Callable[[], datetime]
    random: Callable[[int], str] = secrets.token_urlsafe


@dataclass(frozen=True, kw_only=True, eq=False)
class AuditLogin:
    """A UI's logged-in sessions (audit, approvers) on top of the one login; ``role`` is the
    identity check (None admits every verified identity: the approvers' UI checks group
    membership per action, with the principal ``keep_principal`` stores in the session);
    ``realm`` keeps each UI's sessions apart."""

    login: BrowserLogin
    store: AuditSessionStore
    role: str | None
    idle: timedelta
    lifetime: timedelta
    clock: Callable[[], datetime]
    random: Callable[[int], str] = secrets.token_urlsafe
    realm: str = "audit"
    keep_principal: Callable[[Principal], Mapping[str, Any]] | None = None

    async def begin(self, return_to: str) -> Started:
        return await self.login.begin(return_to=return_to)

    async def finish(self, flow_id: str | None, state: str | None, code: str | None) -> LoggedIn:
        """Redeem the code of the flow this browser started; the flow is used up either way.

        :raises LoginFailed: no flow for this browser, ``state`` differs, or no ``code``.
        :raises NotAnAuditor: the verified identity lacks the auditor role.
        """
        flow, principal = await self.login.finish(flow_id, state, code)
        if self.role is not None and self.role not in principal.roles:
            raise NotAnAuditor(f"{principal.subject} lacks role {self.role!r}")
        now = self.clock()
        session_id = self.random(32)
        session = UiSession(
            csrf_token=self.random(32),
            token_issuer=principal.issuer,
            token_subject=principal.subject,
            display_name=principal.attributes.get("common_name") or principal.subject,
            created_at=now,
            expires_at=now + self.lifetime,
            realm=self.realm,
            principal=self.keep_principal(principal) if self.keep_principal else None,
        )
        await self.store.create_session(digest(session_id), session, now)
        return LoggedIn(session_id, flow.return_to or "/")

    async def session(self, session_id: str | None) -> UiSession | None:
        if not session_id:
            return None
        return await self.store.touch(digest(session_id), self.clock(), self.idle, self.realm)

    async def logout(self, session_id: str) -> None:
        await self.store.end(digest(session_id))
