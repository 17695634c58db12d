"""RFC 9457 problem details at the HTTP edge.

Errors raised below the edge know nothing of HTTP; this module maps each kind to a status, a
stable ``type`` (a relative URI ``/problems/<slug>``, served as a short HTML explanation), a
fixed ``title`` and, for some kinds, a fixed ``detail``. Exception messages go to the log only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from ca.errors import CaError
from idp_adapter.errors import (
    IdentityNotAllowed,
    IdpError,
    IdpUnavailable,
    InvalidProof,
    InvalidToken,
)
from idp_adapter.settings import DPOP_ALGORITHMS
from signer import metrics
from signer.errors import RequestError, SignerError
from signer.http.kit.state import REQUEST_ID

log = structlog.get_logger(__name__)
PROBLEM_JSON = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Unauthenticated(RequestError):
    slug = "invalid-token"
    title = "Missing or invalid bearer token"
    status = 401


class MalformedAuthorization(RequestError):
    """RFC 6750 §3.1 ``invalid_request``: the header itself is not valid text."""

    slug = "malformed-authorization"
    title = "The Authorization header holds characters that are not allowed"
    status = 400


class MalformedRequest(RequestError):
    """RFC 9112 §2.2: the request could not be parsed (answered by ``signer.http.kit.server``)."""

    slug = "malformed-request"
    title = "The request could not be parsed; its bytes are neither shown nor logged"
    status = 400


class TokenReplayed(Unauthenticated):
    slug = "token-replayed"
    title = "This token was already used"


#: RFC 9449 §7.1 challenge parameter ``algs``: the proof algorithms issuers accept by default.
DPOP_ALGS = " ".join(DPOP_ALGORITHMS)


class SenderConstrained(Unauthenticated):
    """RFC 9449 §7.1 / RFC 8705 §3: a token bound to a key, presented without its proof."""

    slug = "token-sender-constrained"
    title = "This token is bound to a key: present it with its DPoP proof or client certificate"
    challenge = f'DPoP error="invalid_token", algs="{DPOP_ALGS}"'


class TokenBindingMismatch(Unauthenticated):
    slug = "token-binding-mismatch"
    title = "The proof's key or the client certificate is not the one the token is bound to"
    challenge = f'DPoP error="invalid_token", algs="{DPOP_ALGS}"'


class InvalidDpopProof(Unauthenticated):
    """RFC 9449 §7.1 ``invalid_dpop_proof``."""

    slug = "dpop-proof-invalid"
    title = "The DPoP proof is invalid"
    challenge = f'DPoP error="invalid_dpop_proof", algs="{DPOP_ALGS}"'


class DpopNonceRequired(InvalidDpopProof):
    """RFC 9449 §9: retry with the nonce in the ``DPoP-Nonce`` header."""

    slug = "dpop-nonce-required"
    title = "The DPoP proof must carry the server's current nonce"
    challenge = f'DPoP error="use_dpop_nonce", algs="{DPOP_ALGS}"'

    def __init__(self, nonce: str | None = None) -> None:
        super().__init__("use_dpop_nonce")
        self.headers = {"DPoP-Nonce": nonce} if nonce else {}


class Forbidden(RequestError):
    slug = "identity-not-allowed"
    title = "This identity is not allowed to do this"
    status = 403


class AuditorRoleRequired(Forbidden):
    slug = "auditor-role-required"
    title = "This endpoint needs a token with the auditor role"


class IdpUnreachable(SignerError):
    slug = "idp-unavailable"
    title = "Identity provider unavailable"
    status = 503


class MalformedJson(RequestError):
    slug = "malformed-json"
    title = "The request body is not valid JSON"


class JsonTooDeep(MalformedJson):
    """RFC 8259 §9: this service limits nesting (``signer.http.kit.body.MAX_JSON_DEPTH``)."""

    slug = "json-too-deep"
    title = "The request body's JSON is nested too deeply"


class UnacceptableText(RequestError):
    """A NUL character or an unpaired surrogate (RFC 8259 §8.2) in a JSON string, a query
    parameter or a path segment: text that cannot be stored, logged or encoded as UTF-8."""

    slug = "unacceptable-text"
    title = "The request holds a NUL character or an unpaired surrogate"


class ClientGone(RequestError):
    """The client closed the connection before the answer (nginx's 499 "client closed
    request"): logged once, never answered, since nobody is left to read it."""

    slug = "client-closed-request"
    title = "The client closed the connection"
    status = 499


class InvalidRequest(RequestError):
    slug = "invalid-request"
    title = "The request body does not match the schema"
    status = 422


class UnsupportedMediaType(RequestError):
    slug = "unsupported-media-type"
    title = "Content-Type must be application/json"
    status = 415


class BodyTooLarge(RequestError):
    slug = "body-too-large"
    title = "The request body is larger than allowed"
    status = 413


class UnsupportedAlgorithm(RequestError):
    slug = "unsupported-hash-algorithm"
    title = "Unsupported hash algorithm"
    status = 422


class UnsupportedFormat(RequestError):
    slug = "unsupported-signature-format"
    title = "Unsupported signature format: use raw, cades, cades-b-lt or pades"
    status = 422


class WrongDigestLength(RequestError):
    slug = "wrong-digest-length"
    title = "A digest does not have the length of the hash algorithm"
    status = 422


class NoDigests(RequestError):
    slug = "no-digests"
    title = "The request contains no digests"
    status = 422


class TooManyDigests(RequestError):
    slug = "too-many-digests"
    title = "The request contains more digests than allowed"
    status = 422


class IdempotencyMismatch(RequestError):
    slug = "idempotency-key-reused"
    title = "This Idempotency-Key was used with a different request body"
    status = 422


class IdempotencyInProgress(RequestError):
    slug = "idempotency-key-in-progress"
    title = "A request with this Idempotency-Key is still being processed"
    status = 409


class NotFound(RequestError):
    slug = "not-found"
    title = "Not found"
    status = 404


class InvalidLogQuery(RequestError):
    slug = "invalid-log-query"
    title = "The log query parameters are missing or out of range"
    status = 400


class LogSizeUnavailable(RequestError):
    slug = "log-size-unavailable"
    title = "The log has not integrated a tree of this size yet"
    status = 404


class NoCheckpoint(RequestError):
    slug = "no-checkpoint"
    title = "The log has not published a checkpoint yet"
    status = 404


class MethodNotAllowed(RequestError):
    slug = "method-not-allowed"
    title = "Method not allowed"
    status = 405


TOKEN_DETAIL = {
    "expired": "The token has expired.",
    "not_yet_valid": "The token is not valid yet.",
    "issued_in_future": "The token was issued in the future.",
    "bad_audience": "The token is not meant for this service.",
    "unknown_issuer": "The token's issuer is not trusted by this service.",
    "alg_not_allowed": "The token's signature algorithm is not allowed.",
    "unknown_kid": "The token's signing key is unknown.",
    "bad_signature": "The token's signature is invalid.",
    "malformed": "The token is malformed.",
    "missing_claim": "The token lacks a required claim.",
    "replayed": "The token was already used.",
    "not_access_token": "The token is not an access token (typ at+jwt, RFC 9068).",
    "sender_constrained": "The token is sender-constrained; send it with its proof.",
    "binding_mismatch": "The token is bound to another key or certificate.",
}


_TOKEN_KINDS: dict[str, type[Unauthenticated]] = {
    "replayed": TokenReplayed,
    "sender_constrained": SenderConstrained,
    "binding_mismatch": TokenBindingMismatch,
}
#: Fixed details of :class:`InvalidDpopProof` by reason (RFC 9449 §4.3).
PROOF_DETAIL = {
    "missing": "A DPoP-bound token needs exactly one DPoP proof header.",
    "malformed": "The DPoP proof is malformed.",
    "bad_type": "The DPoP proof is not typed dpop+jwt.",
    "alg_not_allowed": "The DPoP proof's algorithm is not allowed.",
    "bad_key": "The DPoP proof's jwk is not a public asymmetric key.",
    "bad_signature": "The DPoP proof's signature is invalid.",
    "wrong_method": "The DPoP proof is for another HTTP method.",
    "wrong_url": "The DPoP proof is for another URL.",
    "stale": "The DPoP proof's iat is outside the accepted window.",
    "bad_ath": "The DPoP proof is not for this access token.",
    "replayed": "The DPoP proof was already used.",
}


def translate(exc: BaseException) -> tuple[SignerError, str | None] | None:
    """Map errors of the inner packages to the signer's kinds and an optional fixed detail
    (None: not an error we raise on purpose)."""
    if isinstance(exc, SignerError):
        return exc, getattr(exc, "pointer_detail", None)
    if isinstance(exc, InvalidToken):
        return _TOKEN_KINDS.get(exc.reason, Unauthenticated)(), TOKEN_DETAIL.get(exc.reason)
    if isinstance(exc, InvalidProof):
        if exc.reason == "nonce":
            return DpopNonceRequired(exc.nonce), None
        return InvalidDpopProof(), PROOF_DETAIL.get(exc.reason)
    if isinstance(exc, IdentityNotAllowed):
        return Forbidden(), None
    if isinstance(exc, IdpUnavailable):
        return IdpUnreachable(), None
    if isinstance(exc, (IdpError, CaError)):
        return SignerError(), None
    return None


def problem_response(
    err: SignerError, request: web.Request, *, status: int | None = None, detail: str | None = None
) -> web.Response:
    status = status or err.status
    metrics.REFUSALS.labels(err.slug, str(status)).inc()
    body: dict[str, Any] = {
        "type": f"/problems/{err.slug}",
        "title": err.title,
        "status": status,
        "instance": request.path,
        "request_id": request.get(REQUEST_ID),
    }
    if detail:
        body["detail"] = detail
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type=PROBLEM_JSON,
        headers=refusal_headers(err, status),
    )


def refusal_headers(err: SignerError | None, status: int) -> dict[str, str]:
    """The headers of a refusal of kind ``err`` (:func:`translate`) answered ``status``, the
    same on every surface (problem+json here, the CSC API's error bodies): a 401's challenge
    (RFC 6750 §3; the kind's ``DPoP`` one, RFC 9449 §7.1), the kind's own headers (a fresh
    ``DPoP-Nonce`` with ``use_dpop_nonce``, RFC 9449 §8, §9), ``Retry-After`` on 503 and on
    a rate limit's 429 (RFC 6585 §4, RFC 9110 §10.2.3)."""
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = getattr(err, "challenge", 'Bearer error="invalid_token"')
    headers.update(getattr(err, "headers", {}))
    if status == 503:
        headers["Retry-After"] = "5"
    retry_after = getattr(err, "retry_after", None)
    if status == 429 and isinstance(retry_after, int):
        headers["Retry-After"] = str(retry_after)
    return headers


_HTTP_KINDS: dict[int, type[SignerError]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: BodyTooLarge,
    415: UnsupportedMediaType,
}


def client_gone(request: web.Request, why: str) -> web.Response:
    """Log, once, that the client left before its answer (status 499, nginx's "client closed
    request"): an event of the client's, not an error of the service. The 499 is for the
    access log and the metrics only; no byte of it can reach the client."""
    log.info("client_disconnected", status=499, during=why, path=request.path)
    return web.Response(status=499)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as problem+json; log details, never the token or body. A 405
    keeps aiohttp's ``Allow`` (RFC 9110 §15.5.6)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _HTTP_KINDS.get(exc.status, RequestError)
        problem = problem_response(kind(), request, status=exc.status)
        if "Allow" in exc.headers:
            problem.headers["Allow"] = exc.headers["Allow"]
        return problem
    except ClientGone:
        return client_gone(request, "request body")
    except asyncio.CancelledError:
        # aiohttp cancels the handler of a connection that is lost when the server runs with
        # handler_cancellation (its test server does; `qes serve` does not): still one line.
        if _gone(request):
            client_gone(request, "request")
        raise
    except Exception as exc:
        return _failure(request, exc)
    if _gone(request) and not response.prepared:
        return client_gone(request, "request")
    return response


def _failure(request: web.Request, exc: Exception) -> web.Response:
    if isinstance(exc, ConnectionError) and _gone(request):  # a form or stream read
        return client_gone(request, "request")
    mapped = translate(exc)
    if mapped is None:
        log.exception("unhandled_error", path=request.path)
        return problem_response(SignerError(), request)
    err, detail = mapped
    level = "warning" if err.status < 500 else "error"
    getattr(log, level)(
        "request_failed",
        kind=err.slug,
        status=err.status,
        error=str(exc) or type(exc).__name__,
        cause=type(exc.__cause__).__name__ if exc.__cause__ else None,
    )
    return problem_response(err, request, detail=detail)


def all_kinds() -> dict[str, type[SignerError]]:
    """Every problem kind by slug, for the /problems pages and the OpenAPI document."""
    found: dict[str, type[SignerError]] = {}
    stack: list[type[SignerError]] = [SignerError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.slug, cls)
        stack.extend(cls.__subclasses__())
    return found
