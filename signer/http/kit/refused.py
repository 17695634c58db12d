"""Signing requests refused at the edge, before authentication, go to the log (issue 5).

:func:`authenticate_signing` verifies the token first (RFC 6750 §3.1: a request without a
valid one is answered 401 whatever its body), then reads the body; verifying never spends the
``jti`` (:func:`start_operation` does, once the operation starts). A refusal at either step is
handed to :class:`signer.policy.refusals.RefusalLog` (rate-limited) before it is raised to the
problem middleware; for a refused token the body is still read, best effort, so the log says
what was asked. Unavailability (IdP or database down, 5xx) is not a refusal and is not logged
as one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from ca.profiles import Level
from idp_adapter.errors import IdentityNotAllowed, InvalidProof, InvalidToken
from idp_adapter.principal import Principal
from signer.errors import RequestError
from signer.http.kit.auth import authenticate, claimed_bearer_token
from signer.http.kit.problems import Unauthenticated
from signer.http.kit.state import REQUEST_ID, SERVICES
from signer.policy.refusals import RefusalLog, Refused
from signer.signing.pipeline import SignatureRequest

T = TypeVar("T")
REFUSAL_LOG = web.AppKey("refusal_log", RefusalLog)
#: An unauthenticated request's profile enters the log only when it names a real one: no text
#: an anonymous caller chose goes into the log.
PROFILES = frozenset(level.value for level in Level)


def refusal_reason(exc: BaseException) -> str | None:
    """The stable reason slug of a refusal, or None when ``exc`` is not one."""
    if isinstance(exc, InvalidToken):
        return f"token.{exc.reason}"
    if isinstance(exc, InvalidProof):
        return f"dpop.{exc.reason}"
    if isinstance(exc, Unauthenticated):
        return "token.missing"
    if isinstance(exc, IdentityNotAllowed):
        return "identity-not-allowed"
    if isinstance(exc, RequestError):
        return exc.slug
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return "body-too-large"
    return None


async def log_refusal(
    request: web.Request, exc: BaseException, asked: SignatureRequest | None
) -> None:
    """Hand a pre-authentication refusal to the refusal log (no-op for non-refusals)."""
    reason = refusal_reason(exc)
    refusals = request.app.get(REFUSAL_LOG)
    if reason is None or refusals is None:
        return
    token = claimed_bearer_token(request)
    claimed = request.app[SERVICES].tokens.claimed_issuer(token) if token else None
    await refusals.log(
        Refused(
            request_id=request[REQUEST_ID],
            reason=reason,
            client_address=request.remote,
            claimed_issuer=claimed,
            profile=asked.profile if asked and asked.profile in PROFILES else None,
            hash_algorithm=asked.hash_algorithm if asked else None,
            digests=asked.digests if asked else (),
            signature_format=asked.format if asked else None,
        )
    )


async def authenticate_signing(
    request: web.Request,
    read: Callable[[], Awaitable[T]],
    asked: Callable[[T], SignatureRequest],
) -> tuple[T, Principal]:
    """Authenticate, then ``read()`` the body; log either step's refusal, then re-raise."""
    try:
        principal = await authenticate(request)
    except Exception as exc:
        if refusal_reason(exc) is not None:
            await log_refusal(request, exc, await _asked_anyway(read, asked))
        raise
    what: SignatureRequest | None = None
    try:
        body = await read()
        what = asked(body)
    except Exception as exc:
        await log_refusal(request, exc, what)
        raise
    return body, principal


async def _asked_anyway(
    read: Callable[[], Awaitable[T]], asked: Callable[[T], SignatureRequest]
) -> SignatureRequest | None:
    """What an unauthenticated request asked for, for its refusal entry; a body that cannot be
    read or parsed changes nothing (the answer is the 401)."""
    try:
        return asked(await read())
    except Exception:
        return None


async def start_operation(
    request: web.Request,
    principal: Principal,
    idempotency_key: str | None,
    asked: SignatureRequest | None,
) -> None:
    """A signing operation starts: spend the token's ``jti`` (one operation per ``jti``, or per
    ``Idempotency-Key`` when the client sent one; :meth:`IssuerRegistry.start_operation`).
    Run by the pipeline as its ``Start`` once the policy, the kill switch and the rate limit
    admitted the request (``signer.http.kit.hold.submitted``), never for a refused one.
    A replayed ``jti`` is refused 401 ``token-replayed`` and logged as a refusal."""
    try:
        await request.app[SERVICES].tokens.start_operation(principal, idempotency_key)
    except Exception as exc:
        await log_refusal(request, exc, asked)
        raise
