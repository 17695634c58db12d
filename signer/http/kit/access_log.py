"""Per-request observation: the HTTP metrics and the opt-in access log, measured once.

The access log (``server.access_log = true``) is one structured line per request: method,
route template, status, duration and request id (bound by the request-id middleware), and the
client address. Never the query string, a header, a path with identifiers in it or a body: the
route template (``/api/v1/certificates/{serial}``) says what was asked without saying of whom,
and query strings may carry an OAuth2 code or state (RFC 6749 §4.1.2).
"""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from signer import metrics
from signer.http.kit.problems import Handler

log = structlog.get_logger("signer.access")
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(request: web.Request) -> str:
    """The matched route's template, or one fixed word: a bounded label, never the raw path."""
    info = request.match_info
    route = info.route if info is not None else None
    resource = route.resource if route is not None else None
    if resource is None or info.http_exception is not None:
        return UNMATCHED
    return resource.canonical


def observe_middleware(*, access_log: bool) -> web.middleware:  # type: ignore[valid-type]
    """Count and time every request (signer.metrics); log it when ``access_log``."""

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # redirects and the like pass the problem layer
            status = exc.status
            raise
        finally:
            elapsed = time.perf_counter() - start
            route = route_of(request)
            method = request.method if request.method in _METHODS else "OTHER"
            metrics.REQUESTS.labels(route, method, str(status)).inc()
            metrics.LATENCY.labels(route, method).observe(elapsed)
            if access_log:
                log.info(
                    "access",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    remote=request.remote,
                )

    return observe
