"""Signing requests refused at the edge, before authentication, go to the log (issue 5).

:func:`authenticate_signing` reads the body, then verifies the bearer token (a bad body never
burns a ``jti``); a refusal at either step is handed to :class:`signer.refusals.RefusalLog`
(rate-limited) before it is raised to the problem middleware. Unavailability (IdP or database
down, 5xx) is not a refusal and is not logged as one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from ca.profiles import Level
from idp_adapter.errors import IdentityNotAllowed, InvalidToken
from idp_adapter.principal import Principal
from signer.api.auth import authenticate, claimed_bearer_token
from signer.api.problems import Unauthenticated
from signer.api.state import REQUEST_ID, SERVICES
from signer.errors import RequestError
from signer.pipeline import SignatureRequest
from signer.refusals import RefusalLog, Refused

T = TypeVar("T")
REFUSAL_LOG = web.AppKey("refusal_log", RefusalLog)
#: An unauthenticated request's profile enters the log only when it names a real one: no text
#: an anonymous caller chose goes into the log.
PROFILES = frozenset(level.value for level in Level)


def refusal_reason(exc: BaseException) -> str | None:
    """The stable reason slug of a refusal, or None when ``exc`` is not one."""
    if isinstance(exc, InvalidToken):
        return f"token.{exc.reason}"
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
    """``read()`` the body, then authenticate; log either step's refusal, then re-raise."""
    what: SignatureRequest | None = None
    try:
        body = await read()
        what = asked(body)
        return body, await authenticate(request)
    except Exception as exc:
        await log_refusal(request, exc, what)
        raise
