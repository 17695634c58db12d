"""The HTTP edge of the anonymous endpoints' rate limit (signer.policy.public_limits)."""

from __future__ import annotations

from aiohttp import web

from signer.http.kit.problems import Handler
from signer.policy.public_limits import PublicLimiter

#: The endpoints anyone may call without a token (CSC ``info`` in both versions and methods).
PUBLIC_PATHS = frozenset(
    {
        "/tsa",
        "/ocsp",
        "/api/v1/trust-bundle",
        "/ca/root.cer",
        "/ca/issuing.cer",
        "/ca/root.crl",
        "/ca/issuing.crl",
        "/openapi.json",
        "/csc/v1/info",
        "/csc/v2/info",
    }
)
#: Public endpoints whose path carries the request (OCSP GET, RFC 6960 §A.1.1) or names the
#: object (an issuing CA generation's certificate and CRL).
PUBLIC_PREFIXES = ("/ocsp/", "/ca/issuing/")
PUBLIC_LIMITER = web.AppKey("public_limiter", PublicLimiter)


@web.middleware
async def public_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts a request to a public endpoint before it is served; 429 past the limits."""
    limiter = request.app.get(PUBLIC_LIMITER)
    path = request.path
    if limiter is not None and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)):
        await limiter.admit(request.remote)
    return await handler(request)
