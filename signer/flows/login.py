"""OIDC login for the audit UI: authorization code + PKCE S256 + state + nonce.

RFC 6749 §4.1 and §10.12 (``state`` bound to the browser), RFC 7636 §4 (S256), OIDC Core
§3.1.2.1 (``nonce``) and §3.1.3.7 (ID token validation, done by
:meth:`IssuerRegistry.verify_id_token`). All flow state is in PostgreSQL; the browser holds only
random values (a flow id during login, then a session id) whose hashes key the rows.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from idp_adapter.codeflow import CodeFlowClient, CodeFlowRequest
from idp_adapter.principal import Principal
from idp_adapter.registry import IssuerRegistry
from signer.errors import RequestError
from signer.storage.audit_sessions import AuditSessionStore, LoginFlow, UiSession

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
class LoggedIn:
    session_id: str
    return_to: str


class AuditLogin:
    """Starts and finishes logins and resolves session ids; no I/O in ``__init__``."""

    def __init__(
        self,
        *,
        client: CodeFlowClient,
        tokens: IssuerRegistry,
        store: AuditSessionStore,
        role: str | None,
        idle: timedelta,
        lifetime: timedelta,
        clock: Callable[[], datetime],
        random: Callable[[int], str] = secrets.token_urlsafe,
        realm: str = "audit",
        keep_principal: Callable[[Principal], Mapping[str, Any]] | None = None,
    ) -> None:
        """``role`` None admits every verified identity (the approvers' UI checks group
        membership per action, with the principal ``keep_principal`` stores in the session);
        ``realm`` keeps each UI's sessions apart."""
        self._client = client
        self._tokens = tokens
        self._store = store
        self._role = role
        self.idle = idle
        self._lifetime = lifetime
        self._clock = clock
        self._random = random
        self._realm = realm
        self._keep = keep_principal

    async def begin(self, return_to: str) -> Started:
        """A new flow: fresh state, nonce and 64-byte PKCE verifier (RFC 7636 §7.1)."""
        now = self._clock()
        req = CodeFlowRequest(self._random(32), self._random(32), self._random(64))
        flow_id = self._random(32)
        flow = LoginFlow(req.state, req.nonce, req.verifier, return_to, now + FLOW_LIFETIME)
        await self._store.save_flow(digest(flow_id), flow, now)
        return Started(flow_id, await self._client.authorization_url(req))

    async def finish(self, flow_id: str | None, state: str | None, code: str | None) -> LoggedIn:
        """Redeem the code of the flow this browser started; the flow is used up either way.

        :raises LoginFailed: no flow for this browser, ``state`` differs, or no ``code``.
        :raises NotAnAuditor: the verified identity lacks the auditor role.
        """
        now = self._clock()
        flow = await self._store.take_flow(digest(flow_id), now) if flow_id else None
        if flow is None:
            raise LoginFailed("no login flow for this browser (expired, used, or never started)")
        if not state or not hmac.compare_digest(state.encode(), flow.state.encode()):
            raise LoginFailed("state does not match the flow this browser started")
        if not code:
            raise LoginFailed("the authorization response has no code")
        id_token = await self._client.redeem(code, flow.verifier)
        principal = await self._tokens.verify_id_token(
            id_token, client_id=self._client.client_id, nonce=flow.nonce
        )
        if self._role is not None and self._role not in principal.roles:
            raise NotAnAuditor(f"{principal.subject} lacks role {self._role!r}")
        name = principal.attributes.get("common_name") or principal.subject
        session_id = self._random(32)
        session = UiSession(
            csrf_token=self._random(32),
            token_issuer=principal.issuer,
            token_subject=principal.subject,
            display_name=name,
            created_at=now,
            expires_at=now + self._lifetime,
            realm=self._realm,
            principal=self._keep(principal) if self._keep else None,
        )
        await self._store.create_session(digest(session_id), session, now)
        return LoggedIn(session_id, flow.return_to)

    async def session(self, session_id: str | None) -> UiSession | None:
        if not session_id:
            return None
        return await self._store.touch(digest(session_id), self._clock(), self.idle, self._realm)

    async def logout(self, session_id: str) -> None:
        await self._store.end(digest(session_id))
