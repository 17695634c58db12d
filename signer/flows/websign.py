"""Send a person to sign: request, fresh OIDC login, consent, activation, signature.

The steps, each served by any replica (all state is in PostgreSQL):

1. the relying party creates a request (:meth:`WebSigning.create`): documents as label +
   digest, format, its exact redirect URI and ``state``, optional ``acr`` and expected signer;
2. the browser at ``sign_url`` starts an authorization code flow with PKCE (RFC 6749 §4.1,
   RFC 7636), ``state`` and ``nonce`` (OIDC Core §3.1.2.1), always with ``prompt=login`` and
   ``max_age`` so the login happens after the digests are known (the stronger form of sole
   control, CEN EN 419 241-1), and ``acr_values`` when the request requires an assurance;
3. the callback (:meth:`WebSigning.finish`) takes the single-use flow, redeems the code,
   verifies the ID token (OIDC Core §3.1.3.7), checks the expected signer, ``acr`` and
   ``auth_time``, and opens a consent session;
4. Sign (:meth:`WebSigning.decide`) creates a signature activation (ETSI TS 119 432 SAD)
   bound to the request, the subject with its ``acr``/``auth_time`` and the exact digests;
   one SQL statement consumes it and checks all of it against the request before the pipeline
   makes a key; the browser goes back to the RP with ``id`` and ``state`` (or ``error``).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from ca.profiles import Level, Subject
from idp_adapter.codeflow import CodeExchangeFailed
from idp_adapter.errors import InvalidToken
from idp_adapter.principal import Principal
from signer.errors import RequestError, SignerError
from signer.flows.login import Consenting, RelyingPartyFlow, Started
from signer.flows.registry import OutOfScope, scopes_of
from signer.flows.webhooks import Webhooks
from signer.formats.pdf import PreparedPdf, embed, prepare
from signer.policy.rules import PolicyRefusal
from signer.signing.longterm import LongTerm, PadesLevel
from signer.signing.pipeline import (
    SignatureFormat,
    SignatureRequest,
    SignatureResult,
    SigningService,
)
from signer.storage.login_flows import LoginFlow
from signer.storage.signing_requests import (
    Activation,
    ConsentSession,
    NewRequest,
    RequestPdf,
    RpClient,
    SigningRequestStore,
    StoredRequest,
)

log = structlog.get_logger(__name__)

CONSENT_LIFETIME = timedelta(minutes=10)
#: The activation lives only between the click on Sign and the pipeline picking it up.
ACTIVATION_LIFETIME = timedelta(seconds=60)


class SigningRequestNotFound(RequestError):
    slug = "signing-request-not-found"
    title = "No such signing request"
    status = 404


class RequestNotPending(RequestError):
    slug = "signing-request-ended"
    title = "This signing request can no longer be signed"
    status = 409


class UnregisteredRedirect(RequestError):
    slug = "redirect-uri-not-registered"
    title = "redirect_uri is not one of the relying party's registered redirect URIs"
    status = 422


class UnsupportedAcr(RequestError):
    slug = "unsupported-acr"
    title = "acr is not one of the assurance levels this service can require"
    status = 422


class SignerLoginFailed(RequestError):
    """The callback does not complete a login this browser started (RFC 6749 §10.12)."""

    slug = "signer-login-failed"
    title = "The login could not be completed"
    status = 400


class WrongSigner(RequestError):
    slug = "wrong-signer"
    title = "This signing request is meant for another person"
    status = 403


class StepUpRequired(RequestError):
    """The signing policy needs a stronger login for this signer: log in again (the request
    now asks for ``acr_values``); not an error the person sees."""

    slug = "step-up-required"
    title = "A stronger login is needed for this request"
    status = 403

    def __init__(self, request_id: uuid.UUID) -> None:
        super().__init__(f"step-up for {request_id}")
        self.request_id = request_id


class AssuranceTooLow(RequestError):
    slug = "assurance-too-low"
    title = "The login does not reach the assurance level this request requires"
    status = 403


class LoginNotFresh(RequestError):
    slug = "login-not-fresh"
    title = "The login happened before the signing request was made"
    status = 403


class NoConsentSession(RequestError):
    slug = "no-consent-session"
    title = "There is no open consent for this browser"
    status = 403


class CsrfRejected(RequestError):
    slug = "consent-form-rejected"
    title = "The consent form was not issued to this browser"
    status = 403


class ActivationRefused(RequestError):
    slug = "activation-refused"
    title = "The signature activation was refused"
    status = 403


@dataclass(frozen=True)
class WebPolicy:
    request_lifetime: timedelta
    max_age: timedelta
    acr_levels: tuple[str, ...]
    #: Clock skew allowed between the IdP's auth_time and our request creation time.
    skew: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class Order:
    """A validated ``POST /api/v1/signing-requests`` body."""

    labels: tuple[str, ...]
    digests: tuple[bytes, ...]
    hash_algorithm: str
    format: SignatureFormat
    profile: str | None
    redirect_uri: str
    state: str
    acr: str | None
    expected_subject: str | None
    expected_email: str | None
    #: Format 'pades': the PDFs themselves (``digests`` is then empty until prepared).
    pdfs: tuple[bytes, ...] = ()
    #: Told when the request ends (``signer.flows.webhooks``).
    webhook_url: str | None = None
    #: Format 'pades': the baseline level of the signed PDFs (EN 319 142-1 §6.3).
    level: PadesLevel = "b-t"


@dataclass(frozen=True)
class ConsentView:
    request: StoredRequest
    rp_name: str
    signer: Principal
    level: Level
    subject: Subject
    csrf_token: str
    #: Format 'pades': SHA-256 of each PDF as sent (its byte range is what gets signed).
    file_digests: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Decision:
    """Where the browser goes next: back to the RP with ``id``/``state`` or ``error``."""

    redirect_url: str
    status: str


#: IdP errors that mean the person did not (or could not) log in: the request is cancelled.
IDP_REFUSALS = frozenset({
    "access_denied", "login_required", "consent_required", "interaction_required",
    "account_selection_required",
})  # fmt: skip
#: Other IdP errors named by RFC 6749 §4.1.2.1 and OIDC Core §3.1.2.6 (logged by name).
IDP_FAILURES = frozenset({
    "invalid_request", "unauthorized_client", "unsupported_response_type", "invalid_scope",
    "server_error", "temporarily_unavailable", "invalid_request_uri",
    "invalid_request_object", "request_not_supported", "request_uri_not_supported",
    "registration_not_supported",
})  # fmt: skip


def _subject(flow: LoginFlow) -> uuid.UUID:
    """The signing request a web-signing login was started for (always set by :meth:`begin`)."""
    if flow.subject_id is None:
        raise SignerLoginFailed("the login flow names no signing request")
    return flow.subject_id


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def back_to_rp(req: StoredRequest, **params: str) -> str:
    """``redirect_uri`` with our parameters added, its own query kept (RFC 6749 §3.1.2)."""
    parts = urlsplit(req.redirect_uri)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items(), ("state", req.state)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _prepare_all(order: Order, field: str, now: datetime) -> list[PreparedPdf]:
    """A signature field in every PDF (PAdES, EN 319 142-1); runs in a worker thread."""
    return [prepare(pdf, field, now, hash_algorithm=order.hash_algorithm) for pdf in order.pdfs]


def principal_json(p: Principal) -> dict[str, Any]:
    """The verified principal as JSON, kept with the consent session (PostgreSQL)."""
    values = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
    values.update(
        attributes=dict(p.attributes),
        profiles=list(p.profiles),
        roles=sorted(p.roles),
        groups=sorted(p.groups),
        amr=list(p.amr),
        expires_at=p.expires_at.isoformat(),
        auth_time=p.auth_time.isoformat() if p.auth_time else None,
    )
    return values


def principal_from_json(v: Mapping[str, Any]) -> Principal:
    auth_time = v.get("auth_time")
    return Principal(
        **{
            **v,
            "attributes": dict(v["attributes"]),
            "profiles": tuple(v["profiles"]),
            "roles": frozenset(v["roles"]),
            "groups": frozenset(v.get("groups", ())),
            "amr": tuple(v["amr"]),
            "expires_at": datetime.fromisoformat(v["expires_at"]),
            "auth_time": datetime.fromisoformat(auth_time) if auth_time else None,
        }
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class WebSigning(RelyingPartyFlow):
    """The web signing flow; no I/O in ``__init__``."""

    issuer: str
    requests: SigningRequestStore
    signing: SigningService
    policy: WebPolicy
    webhooks: Webhooks | None = None
    #: Brings signed PDFs to B-LT / B-LTA (``signer.signing.longterm``); None: B-T only.
    long_term: LongTerm | None = None

    def sign_url(self, request_id: uuid.UUID) -> str:
        return f"{self.public_url}/sign/{request_id}"

    async def create(
        self, rp: RpClient, order: Order, *, http_id: str | None = None
    ) -> StoredRequest:
        """Register a request of ``rp``; the redirect URI must be registered, exactly, the
        request within the client's scopes (else a logged refusal) and the client (or the whole
        signer) not suspended."""
        if order.redirect_uri not in rp.redirect_uris:
            raise UnregisteredRedirect(f"{rp.client_id}: redirect_uri not registered")
        summary = SignatureRequest(order.hash_algorithm, order.digests, profile=order.profile)
        http_id = http_id or str(uuid.uuid4())
        out_of_scope = scopes_of(rp).refusal("web-signing", order.format, order.profile)
        if out_of_scope is not None:
            log.warning("client_out_of_scope", client_id=rp.client_id, reason=out_of_scope)
            await self.signing.refuse_client(
                rp.client_id, summary, request_id=http_id, reason=OutOfScope.slug
            )
            raise OutOfScope(f"{rp.client_id}: {out_of_scope}")
        await self.signing.screen_client(rp.client_id, summary, request_id=http_id)
        accepted = None
        if order.acr is not None:
            if order.acr not in self.policy.acr_levels:
                raise UnsupportedAcr(f"acr {order.acr[:80]!r}")
            accepted = self.policy.acr_levels[self.policy.acr_levels.index(order.acr) :]
        now = self.clock()
        request_id = uuid.uuid4()
        digests, pdfs = order.digests, list[RequestPdf]()
        if order.format == "pades":
            field = f"Signature-{request_id.hex[:8]}"
            prepared = await asyncio.to_thread(_prepare_all, order, field, now)
            digests = tuple(p.digest for p in prepared)
            pdfs = [
                RequestPdf(original, p.document, p.reserved_start, p.reserved_end)
                for original, p in zip(order.pdfs, prepared, strict=True)
            ]
        new = NewRequest(
            id=request_id,
            client_id=rp.client_id,
            format=order.format,
            profile=order.profile,
            hash_algorithm=order.hash_algorithm,
            labels=order.labels,
            digests=digests,
            redirect_uri=order.redirect_uri,
            state=order.state,
            acr=order.acr,
            acr_accepted=accepted,
            expected_subject=order.expected_subject,
            expected_email=order.expected_email,
            webhook_url=order.webhook_url,
            pades_level=order.level,
            created_at=now,
            expires_at=now + self.policy.request_lifetime,
        )
        await self.requests.create(new, pdfs)
        log.info("signing_request_created", id=str(new.id), client_id=rp.client_id)
        return await self._pending(new.id)

    async def get(self, request_id: uuid.UUID) -> StoredRequest:
        """The request; one found past its expiry ends as 'expired' here (and is told)."""
        expired = await self.requests.expire(request_id, self.clock())
        req = await self.requests.get(request_id, self.clock())
        if req is None:
            raise SigningRequestNotFound(str(request_id))
        if expired:
            self._ended(req, "expired")
        return req

    def _ended(self, req: StoredRequest, status: str) -> None:
        """The request's end is committed: its webhook, if any, is sent in the background."""
        if self.webhooks is not None:
            self.webhooks.notify(req, status)

    async def _pending(self, request_id: uuid.UUID) -> StoredRequest:
        req = await self.get(request_id)
        if req.status != "pending":
            raise RequestNotPending(f"{request_id} is {req.status}")
        return req

    async def begin(self, request_id: uuid.UUID) -> Started:
        """A fresh login for a pending request: new state, nonce and PKCE verifier (RFC 7636
        §7.1), ``prompt=login`` + ``max_age``, ``acr_values`` when required (OIDC Core
        §3.1.2.1), ``login_hint`` when the expected signer is known by e-mail."""
        req = await self._pending(request_id)
        order = SignatureRequest(req.hash_algorithm, req.digests, profile=req.profile)
        await self.signing.screen_client(req.client_id, order, request_id=str(req.id))
        extra = {"prompt": "login", "max_age": str(int(self.policy.max_age.total_seconds()))}
        if req.acr is not None:
            extra["acr_values"] = " ".join(reversed(req.acr_accepted or (req.acr,)))
        if req.expected_email is not None:
            extra["login_hint"] = req.expected_email
        return await self.login.begin(subject_id=req.id, extra=extra)

    async def _take_flow(self, flow_id: str | None, state: str | None) -> LoginFlow:
        """The flow this browser started (used up here), if ``state`` is its state."""
        flow = await self.login.take(flow_id)
        self.login.check_state(flow, state)
        return flow

    async def finish(self, flow_id: str | None, state: str | None, code: str | None) -> Consenting:
        """Redeem the code of the flow this browser started (used up either way), verify the
        ID token and the signer, and open the consent session."""
        now = self.clock()
        flow = await self._take_flow(flow_id, state)
        try:
            principal = await self.login.identify(flow, code)
        except (CodeExchangeFailed, InvalidToken) as exc:  # e.g. a code from another flow
            raise SignerLoginFailed(f"code or ID token refused: {exc}") from exc
        req = await self._pending(_subject(flow))
        try:
            self.check_signer(req, principal)
            self.signing.authorize(principal, req.profile)  # refuses before any consent
        except RequestError as exc:  # a refused request: in the log, with who asked (issue 5)
            await self._log_refusal(req, principal, exc)
            raise
        await self._step_up(req, principal)  # the policy logs its own refusals
        session_id = self.random(32)
        session = ConsentSession(
            request_id=req.id,
            csrf_token=self.random(32),
            principal=principal_json(principal),
            expires_at=min(now + CONSENT_LIFETIME, req.expires_at),
        )
        await self.requests.create_session(digest(session_id), session, now)
        log.info("signer_logged_in", id=str(req.id), subject=principal.subject, acr=principal.acr)
        return Consenting(session_id, req.id)

    async def _step_up(self, req: StoredRequest, principal: Principal) -> None:
        """The signing policy (kill switch, rule, profile) before consent; when its rule needs
        an ``acr`` this login lacks, the request is narrowed to the accepted levels and the
        browser logs in again with ``acr_values`` (OIDC Core §3.1.2.1), the existing step-up.
        A login that still falls short is then refused by :meth:`check_signer`."""
        as_rp = dataclasses.replace(principal, client_id=req.client_id)
        order = SignatureRequest(req.hash_algorithm, req.digests, profile=req.profile)
        decision = await self.signing.screen(as_rp, order, request_id=str(req.id))
        if decision is None or not decision.acr_accepted or principal.acr in decision.acr_accepted:
            return
        wanted = decision.acr_accepted
        if req.acr_accepted is not None:  # the RP asked too: both must be met
            wanted = tuple(a for a in req.acr_accepted if a in decision.acr_accepted)
        if not wanted:
            exc = AssuranceTooLow(f"policy rule {decision.rule!r} and the request's acr differ")
            await self._log_refusal(req, principal, exc)
            raise exc
        if not await self.requests.require_acr(req.id, wanted):
            raise RequestNotPending(f"{req.id} ended meanwhile")
        log.info("policy_step_up", id=str(req.id), rule=decision.rule, acr=list(wanted))
        raise StepUpRequired(req.id)

    async def _log_refusal(self, req: StoredRequest, signer: Principal, exc: RequestError) -> None:
        fmt = cast(SignatureFormat, req.format)
        order = SignatureRequest(req.hash_algorithm, req.digests, profile=req.profile, format=fmt)
        as_rp = dataclasses.replace(signer, client_id=req.client_id)
        await self.signing.log_refusal(as_rp, order, str(req.id), exc)

    async def idp_refused(self, flow_id: str | None, state: str | None, error: str) -> Decision:
        """The IdP answered with ``error`` (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6) for the flow
        this browser started: the flow is used up, the request ends (nothing is signed) and
        the browser goes back to the RP. A refusal by the person (``access_denied``,
        ``login_required``, ...) cancels the request and the RP gets ``access_denied``; any
        other error fails it and the RP gets ``server_error``. A callback without this
        browser's flow or with another ``state`` changes nothing: it cannot end a request."""
        now = self.clock()
        flow = await self._take_flow(flow_id, state)
        req = await self._pending(_subject(flow))
        refused = error in IDP_REFUSALS
        status, rp_error = ("cancelled", "access_denied") if refused else ("failed", "server_error")
        if not await self.requests.cancel(
            req.id, now, status=status, error=None if refused else "idp_error"
        ):
            raise RequestNotPending(f"{req.id} ended meanwhile")
        code = error if error in IDP_REFUSALS or error in IDP_FAILURES else "other"
        log.warning("web_signing_idp_error", id=str(req.id), idp_error=code, status=status)
        self._ended(req, status)
        return Decision(back_to_rp(req, error=rp_error), status)

    def check_signer(self, req: StoredRequest, p: Principal) -> None:
        """The request's expected signer, assurance and freshness (checked again, atomically,
        when the activation is consumed)."""
        if p.issuer != self.issuer:
            raise WrongSigner(f"issuer {p.issuer}")
        if req.expected_subject is not None and req.expected_subject != p.subject:
            raise WrongSigner(f"{p.subject} is not the expected subject")
        if req.expected_email is not None and (
            p.email is None or p.email.lower() != req.expected_email.lower()
        ):
            raise WrongSigner(f"{p.subject}: e-mail is not the expected one (or unverified)")
        if req.acr_accepted is not None and p.acr not in req.acr_accepted:
            raise AssuranceTooLow(f"acr {p.acr!r}, need one of {list(req.acr_accepted)}")
        if p.auth_time is None or p.auth_time < req.created_at - self.policy.skew:
            raise LoginNotFresh(f"auth_time {p.auth_time} before {req.created_at}")

    async def consent(self, session_id: str | None, request_id: uuid.UUID) -> ConsentView:
        session = await self._session(session_id, request_id)
        req = await self._pending(request_id)
        found = await self.rps.get(req.client_id)
        rp_name = found[0].name if found else req.client_id
        signer = principal_from_json(session.principal)
        level, subject = self.signing.authorize(signer, req.profile)
        files = tuple(hashlib.sha256(p.original).digest() for p in await self._pdfs(req))
        return ConsentView(req, rp_name, signer, level, subject, session.csrf_token, files)

    async def _pdfs(self, req: StoredRequest) -> list[RequestPdf]:
        return await self.requests.pdfs(req.id) if req.format == "pades" else []

    async def original_pdf(
        self, session_id: str | None, request_id: uuid.UUID, number: int
    ) -> tuple[str, bytes]:
        """A PDF as sent by the RP, for the person on the consent page to read."""
        await self._session(session_id, request_id)
        req = await self._pending(request_id)
        pdfs = await self._pdfs(req)
        if not 1 <= number <= len(pdfs):
            raise SigningRequestNotFound(f"{request_id} has no PDF {number}")
        return req.labels[number - 1], pdfs[number - 1].original

    async def signed_pdf(self, req: StoredRequest, number: int) -> bytes:
        pdfs = await self._pdfs(req)
        if req.status != "completed" or not 1 <= number <= len(pdfs):
            raise SigningRequestNotFound(f"{req.id} has no signed PDF {number}")
        signed = pdfs[number - 1].signed
        if signed is None:
            raise SigningRequestNotFound(f"{req.id}: PDF {number} not signed")
        return signed

    async def _session(self, session_id: str | None, request_id: uuid.UUID) -> ConsentSession:
        now = self.clock()
        session = (
            await self.requests.session(digest(session_id), request_id, now) if session_id else None
        )
        if session is None:
            raise NoConsentSession(f"no consent session for {request_id}")
        return session

    async def decide(
        self,
        session_id: str | None,
        request_id: uuid.UUID,
        csrf: str | None,
        decision: str,
        *,
        http_request_id: str,
    ) -> Decision:
        """The signer's answer on the consent page. The form's CSRF token must be this
        session's; the session is used up by the decision (a second submit finds none)."""
        session = await self._session(session_id, request_id)
        if not csrf or not hmac.compare_digest(csrf.encode(), session.csrf_token.encode()):
            raise CsrfRejected(f"consent form for {request_id}")
        assert session_id is not None
        taken = await self.requests.take_session(digest(session_id), request_id, self.clock())
        if taken is None:
            raise NoConsentSession(f"consent session for {request_id} already used")
        req = await self._pending(request_id)
        if decision == "cancel":
            if not await self.requests.cancel(req.id, self.clock()):
                raise RequestNotPending(f"{request_id} ended meanwhile")
            log.info("signing_request_cancelled", id=str(req.id))
            self._ended(req, "cancelled")
            return Decision(back_to_rp(req, error="access_denied"), "cancelled")
        if decision != "sign":
            raise CsrfRejected(f"unknown decision {decision[:20]!r}")
        signer = principal_from_json(taken.principal)
        await self._refuse_by_policy(req, signer, http_request_id)
        activation = await self._activate(req, signer)
        done = await self._sign(activation, signer, http_request_id)
        self._ended(req, done.status)  # completed or failed, committed
        return done

    async def _refuse_by_policy(self, req: StoredRequest, signer: Principal, http_id: str) -> None:
        """Suspended or no longer allowed since the login: the request ends as 'failed' (the
        RP hears of it), and the person sees why instead of a bare redirect."""
        as_rp = dataclasses.replace(signer, client_id=req.client_id)
        order = SignatureRequest(req.hash_algorithm, req.digests, profile=req.profile)
        try:
            await self.signing.screen(as_rp, order, request_id=http_id)
        except PolicyRefusal as exc:
            await self.requests.finish(req.id, self.clock(), status="failed", error=exc.slug)
            self._ended(req, "failed")
            raise

    async def _activate(self, req: StoredRequest, signer: Principal) -> Activation:
        """The consent's signature activation data: this request, this subject with its acr
        and auth_time, these exact digests, one minute to live."""
        now = self.clock()
        activation = Activation(
            id=uuid.uuid4(),
            request_id=req.id,
            token_issuer=signer.issuer,
            token_subject=signer.subject,
            email=signer.email,
            acr=signer.acr,
            auth_time=signer.auth_time,
            hash_algorithm=req.hash_algorithm,
            digests=req.digests,
            created_at=now,
            expires_at=now + ACTIVATION_LIFETIME,
        )
        await self.requests.add_activation(activation)
        return activation

    async def _sign(self, activation: Activation, signer: Principal, http_id: str) -> Decision:
        """Consume the activation (one statement checks it all), then run the pipeline on the
        digests that statement returned: exactly what the signer consented to."""
        req = await self.requests.activate(
            activation.id, self.issuer, self.clock(), self.policy.skew
        )
        if req is None:
            raise ActivationRefused(f"activation {activation.id} did not match its request")
        fmt = cast(SignatureFormat, req.format)
        order = SignatureRequest(req.hash_algorithm, req.digests, profile=req.profile, format=fmt)
        as_rp = dataclasses.replace(signer, client_id=req.client_id)
        try:
            result, _ = await self.signing.sign(as_rp, order, request_id=http_id)
            signed_pdfs = await self._embed(req, result)
        except SignerError as exc:  # the pipeline released nothing, or a PDF took no CMS
            await self.requests.finish(req.id, self.clock(), status="failed", error=exc.slug)
            log.warning("web_signing_failed", id=str(req.id), kind=exc.slug, error=str(exc))
            return Decision(back_to_rp(req, error="server_error"), "failed")
        except Exception:  # a bug: the request must not stay 'signing'
            await self.requests.finish(req.id, self.clock(), status="failed", error="internal")
            raise
        body = self.result_body(req, result)
        await self.requests.finish(
            req.id,
            self.clock(),
            status="completed",
            serial=result.serial,
            result=body,
            signed_pdfs=signed_pdfs,
        )
        log.info("web_signing_completed", id=str(req.id), serial=result.serial)
        return Decision(back_to_rp(req, id=str(req.id)), "completed")

    async def _embed(self, req: StoredRequest, result: SignatureResult) -> list[bytes]:
        """Format 'pades': each CMS into its prepared PDF (ISO 32000-2 §12.8.1), then at the
        request's baseline level (EN 319 142-1 §6.3: DSS, document time-stamp)."""
        if req.format != "pades":
            return []
        stored = await self._pdfs(req)
        prepared = [
            PreparedPdf(p.prepared, d, req.hash_algorithm, p.reserved_start, p.reserved_end)
            for p, d in zip(stored, req.digests, strict=True)
        ]
        pairs = list(zip(prepared, result.signatures, strict=True))
        signed = await asyncio.to_thread(lambda: [embed(p, sig) for p, sig in pairs])
        level = cast(PadesLevel, req.pades_level)
        if self.long_term is None or level == "b-t":
            return signed
        return [await self.long_term.augment(pdf, level) for pdf in signed]

    def result_body(self, req: StoredRequest, result: SignatureResult) -> dict[str, Any]:
        """What the RP fetches: one signature per document, the certificate and chain, the
        audit record and the log index."""
        body = result.as_json(self.public_url)
        body["documents"] = [
            {"label": label, "digest": base64.b64encode(d).decode(), "signature": sig}
            for label, d, sig in zip(req.labels, req.digests, body.pop("signatures"), strict=True)
        ]
        if req.format == "pades":
            base = f"{self.public_url}/api/v1/signing-requests/{req.id}/documents"
            for n, doc in enumerate(body["documents"], start=1):
                doc["signed_pdf_url"] = f"{base}/{n}.pdf"
        body["log"] = {"index": result.log_index}
        body["signed_at"] = self.clock().astimezone(UTC).isoformat()
        return body
