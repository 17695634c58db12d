"""The CSC v2 OAuth2 credential flow: a person authorises one credential for exact hashes.

CSC API v2 §8.4 (v1 §8.3) with RFC 6749 §4.1 and RFC 7636 (PKCE, S256 only). The steps, each
served by any replica (state in ``csc_oauth2_requests``):

1. ``oauth2/authorize`` (:meth:`CredentialOAuth2.authorize`): a registered relying party
   (``qes client add``) sends the browser with ``scope=credential``, ``credentialID``,
   ``numSignatures``, the ``hashes`` and ``hashAlgorithmOID`` and its PKCE challenge. Errors
   before the redirect URI is trusted are shown to the person (RFC 6749 §4.1.2.1: never
   redirect to an unverified URI); later ones go back to the RP as ``error=…&state=…``.
2. The person logs in at the IdP *after* the hashes are known: code flow with PKCE, ``state``,
   ``nonce``, ``prompt=login`` and ``max_age`` (OIDC Core §3.1.2.1), ``acr_values`` when the
   service requires an assurance; the callback (:meth:`CredentialOAuth2.finish`) checks that
   the login is fresh and is the credential's owner (CEN EN 419 241-1 sole control, the
   stronger form: STANDARDS.md §6).
3. The consent page shows the RP, the credential's certificate subject, the count and every
   hash; Sign (:meth:`CredentialOAuth2.decide`) issues a 60-second single-use code bound to
   all of it; Cancel sends ``error=access_denied``.
4. ``oauth2/token`` (:meth:`CredentialOAuth2.token`, RFC 6749 §4.1.3): the client
   authenticates (``client_secret_basic`` or ``client_secret_post``, §2.3.1), proves
   possession of the verifier (RFC 7636 §4.6) and gets a credential token: the CSC core's
   authorisation secret for this credential, these hashes and this count, usable as the
   bearer token of ``signatures/signHash`` without a SAD. A code presented twice is refused
   and the token already issued for it is revoked (RFC 6749 §4.1.2, §10.5).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import structlog
from cryptography import x509

from idp_adapter.codeflow import CodeExchangeFailed
from idp_adapter.errors import IdentityNotAllowed, InvalidToken
from idp_adapter.principal import Principal
from signer.errors import RequestError
from signer.flows.login import Consenting, RelyingPartyFlow, Started
from signer.flows.registry import InvalidClient, RpRegistry, scopes_of
from signer.flows.websign import IDP_FAILURES, IDP_REFUSALS, principal_from_json, principal_json
from signer.storage.csc_oauth2 import CscOAuth2Store, NewAuthorization
from signer.storage.csc_oauth2 import StoredAuthorization as Stored
from signer.storage.signing_requests import RpClient

log = structlog.get_logger(__name__)

#: The whole authorisation (login and consent) must end within this time.
REQUEST_LIFETIME = timedelta(minutes=10)
#: RFC 6749 §4.1.2: "a maximum authorization code lifetime of 10 minutes is RECOMMENDED";
#: the client redeems it at once.
CODE_LIFETIME = timedelta(seconds=60)
#: The credential token lives at most this long (and never past its credential).
TOKEN_LIFETIME = timedelta(minutes=5)
#: hashAlgorithmOID (RFC 5754 §2 / NIST CSOR) -> (name, digest size).
HASH_OIDS: Mapping[str, tuple[str, int]] = {
    "2.16.840.1.101.3.4.2.1": ("sha256", 32),
    "2.16.840.1.101.3.4.2.2": ("sha384", 48),
    "2.16.840.1.101.3.4.2.3": ("sha512", 64),
}
_B64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # BASE64URL(SHA-256), RFC 7636 §4.2
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.1
_CREDENTIAL_ID = re.compile(r"^[\x21-\x7e]{1,200}$")


# ------------------------------------------------------------------ the CSC core's side


@dataclass(frozen=True)
class CredentialFacts:
    """What the flow needs to know about a credential (from the CSC core)."""

    credential_id: str
    owner_issuer: str
    owner_subject: str
    certificate: x509.Certificate
    expires_at: datetime
    #: False once its key is gone (used up, expired or destroyed).
    usable: bool = True


@dataclass(frozen=True)
class CredentialGrant:
    """A credential authorisation to create: the owner who consented, how they logged in,
    the credential, the hash algorithm and the exact hashes (ETSI TS 119 432 SAD content)."""

    credential_id: str
    owner_issuer: str
    owner_subject: str
    hash_algorithm_oid: str
    hashes: tuple[bytes, ...]
    num_signatures: int
    expires_at: datetime
    acr: str | None
    amr: tuple[str, ...]
    auth_time: datetime | None

    def __post_init__(self) -> None:
        if not self.hashes or len(self.hashes) != self.num_signatures:
            raise ValueError("one hash per authorised signature")


@dataclass(frozen=True)
class IssuedToken:
    """The core's answer: the bearer secret, a handle to revoke it by, its expiry."""

    secret: str = field(repr=False)
    ref: str
    expires_at: datetime


class CredentialAuthority(Protocol):
    """The CSC core as this flow uses it: look a credential up, grant (raises a
    :class:`RequestError` when the credential cannot be authorised), revoke."""

    async def credential(self, credential_id: str) -> CredentialFacts | None: ...

    async def grant(self, grant: CredentialGrant) -> IssuedToken: ...

    async def revoke(self, ref: str) -> None: ...


# ------------------------------------------------------------------ errors


class UnknownClient(RequestError):
    """``client_id`` is not an active registered relying party: no redirect is trusted."""

    slug = "csc-oauth2-unknown-client"
    title = "Unknown client_id"
    status = 400


class RedirectNotRegistered(RequestError):
    """RFC 6749 §3.1.2.4: never redirect to an unregistered (or missing) redirect URI."""

    slug = "csc-oauth2-redirect-uri-not-registered"
    title = "redirect_uri is missing or not registered for this client"
    status = 400


class AuthorizationLoginFailed(RequestError):
    slug = "csc-oauth2-login-failed"
    title = "The login could not be completed"
    status = 400


class EndsAuthorization(RequestError):
    """A refusal after the redirect URI is trusted: the request ends, and the page offers
    ``back_url`` (``error=access_denied``) so the client learns of it."""

    back_url: str | None = None


class NotCredentialOwner(EndsAuthorization):
    slug = "csc-oauth2-not-credential-owner"
    title = "You are not the owner of this credential"
    status = 403


class AuthorizationLoginNotFresh(EndsAuthorization):
    slug = "csc-oauth2-login-not-fresh"
    title = "The login happened before the authorization request was made"
    status = 403


class AuthorizationAssuranceTooLow(EndsAuthorization):
    slug = "csc-oauth2-assurance-too-low"
    title = "The login does not reach the assurance level this service requires"
    status = 403


class PolicyRefusedAuthorization(EndsAuthorization):
    """The signing policy or the kill switch refuses this signer
    (``signer.policy.enforcement``); the refusal's own problem type (``suspended``,
    ``policy-denied``, …) is kept."""

    def __init__(self, refusal: RequestError) -> None:
        super().__init__(str(refusal))
        self.slug, self.title, self.status = refusal.slug, refusal.title, refusal.status


#: The signing policy's check of a logged-in signer: (signer, client id, number of hashes,
#: request id); raises a RequestError (``signer.policy.rules.PolicyRefusal``) to refuse.
Screen = Callable[[Principal, str, int, str], Awaitable[None]]


class NoAuthorizationConsent(RequestError):
    slug = "csc-oauth2-no-consent"
    title = "There is no open consent for this browser"
    status = 403


class AuthorizationCsrf(RequestError):
    slug = "csc-oauth2-consent-form-rejected"
    title = "The consent form was not issued to this browser"
    status = 403


class BackToClient(Exception):
    """The answer goes back to the client at its trusted redirect URI (RFC 6749 §4.1.2.1)."""

    def __init__(self, url: str, error: str) -> None:
        super().__init__(error)
        self.url = url
        self.error = error


class OAuth2Error(Exception):
    """An OAuth 2.0 error: its ``error`` code and ``error_description`` (RFC 6749 §4.1.2.1
    on the redirect, §5.2 in a token response)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


class TokenError(OAuth2Error):
    """RFC 6749 §5.2: ``{"error", "error_description"}``, 400 (401 for ``invalid_client``)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(error, description)
        self.status = status


class _Invalid(OAuth2Error):
    """An authorize parameter is wrong; becomes ``error=…`` on the trusted redirect."""


# ------------------------------------------------------------------ values


@dataclass(frozen=True)
class OAuth2Policy:
    max_age: timedelta
    #: acr values accepted for a credential authorisation (None: any).
    acr_accepted: tuple[str, ...] | None = None
    max_hashes: int = 1000
    skew: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class ConsentView:
    request: Stored
    rp_name: str
    signer: Principal
    credential: CredentialFacts
    hash_name: str


@dataclass(frozen=True)
class TokenResponse:
    credential_id: str
    expires_in: int
    access_token: str = field(repr=False)

    def body(self) -> dict[str, Any]:
        """RFC 6749 §5.1 (CSC API v2 §8.4.3)."""
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": "credential",
            "credentialID": self.credential_id,
        }


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def with_query(uri: str, params: Mapping[str, str | None]) -> str:
    """``uri`` with ``params`` added (None left out), its own query kept (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def s256(verifier: str) -> str:
    """RFC 7636 §4.6: ``BASE64URL(SHA256(ASCII(code_verifier)))``."""
    raw = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def parse_hashes(value: str, size: int) -> tuple[bytes, ...]:
    """CSC API v2 §8.4.2 ``hashes``: base64url values separated by commas."""
    out = []
    for item in value.split(","):
        item = item.strip()
        if not _B64URL.match(item):
            raise _Invalid("invalid_request", "hashes: base64url values separated by commas")
        try:
            raw = base64.urlsafe_b64decode(item.rstrip("=") + "=" * (-len(item.rstrip("=")) % 4))
        except (binascii.Error, ValueError) as exc:
            raise _Invalid("invalid_request", "hashes: not base64url") from exc
        if len(raw) != size:
            raise _Invalid("invalid_request", "hashes: a value has the wrong length")
        out.append(raw)
    return tuple(out)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ------------------------------------------------------------------ the flow


@dataclass(frozen=True, kw_only=True, eq=False)
class CredentialOAuth2(RelyingPartyFlow):
    """The authorization server of CSC ``scope=credential``; no I/O in ``__init__``."""

    store: CscOAuth2Store
    registry: RpRegistry
    credentials: CredentialAuthority
    policy: OAuth2Policy
    screen: Screen | None = None

    # -------------------------------------------------------------- 1. authorize

    async def authorize(
        self, q: Mapping[str, str], repeated: frozenset[str] = frozenset()
    ) -> Started:
        """RFC 6749 §4.1.1 + CSC API v2 §8.4.2. Raises :class:`UnknownClient` or
        :class:`RedirectNotRegistered` (show a page), :class:`BackToClient` (redirect).
        ``repeated`` names parameters given more than once (refused, RFC 6749 §3.1)."""
        if repeated & {"client_id", "redirect_uri"}:
            raise RedirectNotRegistered(f"repeated {sorted(repeated)}")
        rp = await self._trusted_client(q)
        redirect_uri, state = q["redirect_uri"], q.get("state")
        try:
            if repeated:
                raise _Invalid("invalid_request", "a parameter is repeated")
            new = await self._validated(rp, q)
        except _Invalid as exc:
            log.info("csc_oauth2_refused", client_id=rp.client_id, error=exc.description)
            params = {"error": exc.error, "error_description": exc.description, "state": state}
            raise BackToClient(with_query(redirect_uri, params), exc.error) from exc
        await self.store.create(new)
        extra = {"prompt": "login", "max_age": str(int(self.policy.max_age.total_seconds()))}
        if self.policy.acr_accepted:
            extra["acr_values"] = " ".join(reversed(self.policy.acr_accepted))
        if new.lang:
            extra["ui_locales"] = new.lang
        started = await self.login.begin(subject_id=new.id, extra=extra)
        log.info("csc_oauth2_started", id=str(new.id), client_id=rp.client_id)
        return started

    async def _trusted_client(self, q: Mapping[str, str]) -> RpClient:
        found = await self.rps.get(q.get("client_id", "")) if q.get("client_id") else None
        if found is None or found[0].revoked_at is not None:
            raise UnknownClient(f"client_id {q.get('client_id', '')[:40]!r}")
        rp = found[0]
        if q.get("redirect_uri") not in rp.redirect_uris:
            raise RedirectNotRegistered(f"{rp.client_id}: redirect_uri not registered")
        return rp

    async def _validated(self, rp: RpClient, q: Mapping[str, str]) -> NewAuthorization:
        if scopes_of(rp).refusal("csc") is not None:  # RFC 6749 §4.1.2.1
            raise _Invalid("unauthorized_client", "this client may not use the CSC API")
        if q.get("response_type") != "code":
            raise _Invalid("unsupported_response_type", "response_type must be code")
        if q.get("scope") != "credential":
            raise _Invalid("invalid_scope", "scope must be credential")
        if q.get("code_challenge_method") != "S256":  # RFC 7636 §4.4.1: plain is refused
            raise _Invalid("invalid_request", "code_challenge_method must be S256")
        if not _CHALLENGE.match(q.get("code_challenge", "")):
            raise _Invalid("invalid_request", "code_challenge: 43 base64url characters")
        if "authorization_details" in q or "signatureQualifier" in q:
            raise _Invalid("invalid_request", "use credentialID, numSignatures and hashes")
        credential_id = q.get("credentialID", "")
        if not _CREDENTIAL_ID.match(credential_id):
            raise _Invalid("invalid_request", "credentialID is required")
        algorithm = HASH_OIDS.get(q.get("hashAlgorithmOID", ""))
        if algorithm is None:
            raise _Invalid("invalid_request", "hashAlgorithmOID: SHA-256, SHA-384 or SHA-512")
        hashes = parse_hashes(q.get("hashes", ""), algorithm[1])
        count = q.get("numSignatures", "")
        if not (count.isascii() and count.isdigit()) or int(count) != len(hashes):
            raise _Invalid("invalid_request", "numSignatures must equal the number of hashes")
        if len(hashes) > self.policy.max_hashes:
            raise _Invalid("invalid_request", "too many hashes")
        description, lang = q.get("description"), q.get("lang")
        if description is not None and (len(description) > 500 or not description.isprintable()):
            raise _Invalid("invalid_request", "description: up to 500 printable characters")
        if lang is not None and not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*", lang):
            raise _Invalid("invalid_request", "lang: a language tag (RFC 5646)")
        now = self.clock()
        credential = await self.credentials.credential(credential_id)
        if credential is None or not credential.usable or credential.expires_at <= now:
            raise _Invalid("invalid_request", "credentialID: unknown or no longer usable")
        return NewAuthorization(
            id=uuid.uuid4(),
            client_id=rp.client_id,
            redirect_uri=q["redirect_uri"],
            state=q.get("state"),
            credential_id=credential_id,
            num_signatures=len(hashes),
            hash_algorithm_oid=q["hashAlgorithmOID"],
            hashes=hashes,
            code_challenge=q["code_challenge"],
            description=description,
            lang=lang,
            created_at=now,
            expires_at=min(now + REQUEST_LIFETIME, credential.expires_at),
        )

    # -------------------------------------------------------------- 2. the IdP's callback

    async def finish(
        self, flow_id: str | None, state: str | None, code: str | None, error: str | None
    ) -> Consenting:
        """The IdP's answer for the login this browser started (used up here): a fresh login
        of the credential's owner opens the consent; anything else ends the request."""
        now = self.clock()
        login = await self.login.take(flow_id)
        req = await self.store.logging_in(login.subject_id, now) if login.subject_id else None
        if req is None:
            raise AuthorizationLoginFailed("no login flow for this browser")
        try:
            self.login.check_state(login, state)
        except AuthorizationLoginFailed:
            await self._end(req, "failed", "login_failed")
            raise
        if error is not None or not code:  # RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6 at the IdP
            refused = error in IDP_REFUSALS
            status, send = ("denied", "access_denied") if refused else ("failed", "server_error")
            known = error in IDP_REFUSALS or error in IDP_FAILURES
            raise await self._end(req, status, f"idp:{error if known else 'other'}", send=send)
        try:
            principal = await self.login.identify(login, code)
        except (CodeExchangeFailed, InvalidToken) as exc:
            await self._end(req, "failed", "login_failed")
            raise AuthorizationLoginFailed(f"code or ID token refused: {exc}") from exc
        except IdentityNotAllowed as exc:  # not mappable, so not the (mapped) owner either
            err = NotCredentialOwner(f"identity not allowed: {exc}")
            err.back_url = (await self._end(req, "denied", err.slug)).url
            raise err from exc
        await self._check_signer(req, principal)
        session_id, csrf = self.random(32), self.random(32)
        if not await self.store.open_consent(
            req.id, digest(session_id), csrf, principal_json(principal), now
        ):
            raise AuthorizationLoginFailed(f"{req.id} ended meanwhile")
        log.info("csc_oauth2_logged_in", id=str(req.id), subject=principal.subject)
        return Consenting(session_id, req.id)

    async def _check_signer(self, req: Stored, p: Principal) -> None:
        """Sole control: the credential's owner, logged in after the request, with the
        required assurance (the core binds all of it to the credential token)."""
        cred = await self.credentials.credential(req.credential_id)
        accepted = self.policy.acr_accepted
        err: EndsAuthorization | None = None
        if cred is None or (p.issuer, p.subject) != (cred.owner_issuer, cred.owner_subject):
            err = NotCredentialOwner(f"{p.subject} does not own {req.credential_id}")
        elif p.auth_time is None or p.auth_time < req.created_at - self.policy.skew:
            err = AuthorizationLoginNotFresh(f"auth_time {p.auth_time} < {req.created_at}")
        elif accepted is not None and p.acr not in accepted:
            err = AuthorizationAssuranceTooLow(f"acr {p.acr!r}, need one of {list(accepted)}")
        elif self.screen is not None:
            try:
                await self.screen(p, req.client_id, len(req.hashes), str(req.id))
            except RequestError as refusal:
                err = PolicyRefusedAuthorization(refusal)
        if err is not None:
            err.back_url = (await self._end(req, "denied", err.slug)).url
            raise err

    async def _end(
        self, req: Stored, status: str, error: str, *, send: str | None = None
    ) -> BackToClient:
        """End the request; returns the redirect telling the client (``send``, default
        ``access_denied``)."""
        await self.store.end(req.id, self.clock(), status=status, error=error)
        log.info("csc_oauth2_ended", id=str(req.id), status=status, error=error)
        return self.back(req, error=send or "access_denied")

    def back(self, req: Stored, **params: str) -> BackToClient:
        url = with_query(req.redirect_uri, {**params, "state": req.state})
        return BackToClient(url, params.get("error", ""))

    # -------------------------------------------------------------- 3. consent

    async def consent(self, session_id: str | None, request_id: uuid.UUID) -> ConsentView:
        now = self.clock()
        req = await self.store.consent(request_id, digest(session_id), now) if session_id else None
        if req is None or req.principal is None:
            raise NoAuthorizationConsent(f"no consent session for {request_id}")
        cred = await self.credentials.credential(req.credential_id)
        if cred is None or not cred.usable:
            raise NoAuthorizationConsent(f"credential of {request_id} is gone")
        found = await self.rps.get(req.client_id)
        rp_name = found[0].name if found else req.client_id
        hash_name = HASH_OIDS[req.hash_algorithm_oid][0]
        return ConsentView(req, rp_name, principal_from_json(req.principal), cred, hash_name)

    async def decide(
        self, session_id: str | None, request_id: uuid.UUID, csrf: str | None, decision: str
    ) -> str:
        """Sign: the single-use code goes to the client; Cancel: ``access_denied``. The form's
        CSRF token must be this session's; the session is used up either way."""
        view = await self.consent(session_id, request_id)
        token = view.request.csrf_token or ""
        if not csrf or not hmac.compare_digest(csrf.encode(), token.encode()):
            raise AuthorizationCsrf(f"consent form for {request_id}")
        assert session_id is not None
        now = self.clock()
        if decision == "cancel":
            req = await self.store.end(
                request_id, now, status="denied", error="cancelled", session_hash=digest(session_id)
            )
            if req is None:
                raise NoAuthorizationConsent(f"consent for {request_id} already answered")
            return self.back(req, error="access_denied").url
        if decision != "sign":
            raise AuthorizationCsrf(f"unknown decision {decision[:20]!r}")
        code = self.random(32)
        req = await self.store.approve(
            request_id, digest(session_id), digest(code), now + CODE_LIFETIME, now
        )
        if req is None:
            raise NoAuthorizationConsent(f"consent for {request_id} already answered")
        log.info("csc_oauth2_approved", id=str(req.id), credential=req.credential_id)
        return self.back(req, code=code).url

    # -------------------------------------------------------------- 4. token

    async def token(self, form: Mapping[str, str], authorization: str | None) -> TokenResponse:
        """RFC 6749 §4.1.3-4.1.4 with RFC 7636 §4.5-4.6; raises :class:`TokenError`."""
        rp = await self._client(form, authorization)
        if scopes_of(rp).refusal("csc") is not None:  # RFC 6749 §5.2
            log.warning("client_out_of_scope", client_id=rp.client_id, reason="api csc")
            raise TokenError("unauthorized_client", "this client may not use the CSC API")
        if form.get("grant_type") != "authorization_code":
            raise TokenError("unsupported_grant_type", "grant_type must be authorization_code")
        code, verifier = form.get("code", ""), form.get("code_verifier", "")
        if not code or not form.get("redirect_uri"):
            raise TokenError("invalid_request", "code and redirect_uri are required")
        now = self.clock()
        req = await self.store.redeem(digest(code), rp.client_id, now)
        if req is None:
            raise await self._refused_code(digest(code), rp.client_id, now)
        if form["redirect_uri"] != req.redirect_uri:
            raise await self._failed(req, "redirect_uri differs from the authorization's")
        if not _VERIFIER.match(verifier) or not hmac.compare_digest(
            s256(verifier).encode(), req.code_challenge.encode()
        ):
            raise await self._failed(req, "code_verifier does not match the code_challenge")
        issued = await self._grant(req, now)
        if not await self.store.attach_token(req.id, issued.ref, self.clock()):
            await self.credentials.revoke(issued.ref)  # the code was replayed meanwhile
            raise TokenError("invalid_grant", "authorization code already used")
        log.info("csc_oauth2_token_issued", id=str(req.id), credential=req.credential_id)
        expires_in = max(1, int((issued.expires_at - now).total_seconds()))
        return TokenResponse(
            credential_id=req.credential_id, expires_in=expires_in, access_token=issued.secret
        )

    async def _grant(self, req: Stored, now: datetime) -> IssuedToken:
        cred = await self.credentials.credential(req.credential_id)
        if cred is None or not cred.usable or cred.expires_at <= now or req.principal is None:
            raise await self._failed(req, "the credential is no longer usable")
        signer = principal_from_json(req.principal)
        if (signer.issuer, signer.subject) != (cred.owner_issuer, cred.owner_subject):
            raise await self._failed(req, "the credential changed owner")
        grant = CredentialGrant(
            credential_id=req.credential_id,
            owner_issuer=signer.issuer,
            owner_subject=signer.subject,
            hash_algorithm_oid=req.hash_algorithm_oid,
            hashes=req.hashes,
            num_signatures=req.num_signatures,
            expires_at=min(now + TOKEN_LIFETIME, cred.expires_at),
            acr=signer.acr,
            amr=signer.amr,
            auth_time=signer.auth_time,
        )
        try:
            return await self.credentials.grant(grant)
        except RequestError as exc:  # used, expired or gone meanwhile: the core refused
            log.info("csc_oauth2_grant_refused", id=str(req.id), kind=exc.slug)
            raise await self._failed(req, "the credential can no longer be authorised") from exc

    async def _failed(self, req: Stored, description: str) -> TokenError:
        await self.store.fail_redeemed(req.id, self.clock(), description)
        log.warning("csc_oauth2_code_refused", id=str(req.id), error=description)
        return TokenError("invalid_grant", description)

    async def _refused_code(self, code_hash: bytes, client_id: str, now: datetime) -> TokenError:
        """Unknown, expired, another client's, or already used: for the last, the token
        issued for the code is revoked (RFC 6749 §4.1.2)."""
        reused = await self.store.mark_reused(code_hash, client_id, now)
        if reused is not None:
            request_id, ref = reused
            if ref is not None:
                await self.credentials.revoke(ref)
            log.warning("csc_oauth2_code_reused", id=str(request_id), revoked=ref is not None)
            return TokenError("invalid_grant", "authorization code already used")
        return TokenError("invalid_grant", "unknown or expired authorization code")

    async def _client(self, form: Mapping[str, str], authorization: str | None) -> RpClient:
        """RFC 6749 §2.3.1: HTTP Basic or ``client_id``+``client_secret`` in the body, never
        both; an unknown client or a wrong secret is ``invalid_client`` (401)."""
        basic = _basic(authorization)
        if basic is not None and "client_secret" in form:
            raise TokenError("invalid_request", "use one client authentication method")
        if basic is not None:
            client_id, secret = basic
            if form.get("client_id", client_id) != client_id:
                raise TokenError("invalid_request", "client_id differs from the Basic one")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            if not client_id or not secret:
                raise TokenError("invalid_client", "client authentication required", 401)
        try:
            return await self.registry.authenticate(client_id, secret)
        except InvalidClient as exc:
            raise TokenError("invalid_client", "client authentication failed", 401) from exc


def _basic(authorization: str | None) -> tuple[str, str] | None:
    """RFC 7617 credentials, each part form-urlencoded first (RFC 6749 §2.3.1)."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, ValueError) as exc:
        raise TokenError("invalid_client", "malformed Basic credentials", 401) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise TokenError("invalid_client", "malformed Basic credentials", 401)
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
