"""Connection hygiene at the HTTP edge: timeouts, a connection cap, early body refusal.

aiohttp holds a connection for as long as the client likes while it sends its request head
(its keep-alive timer only closes an idle handler, defaulting to an hour), reads a body at the
client's pace, and accepts connections until the process runs out of file descriptors, after
which asyncio logs every failed ``accept()`` (issue 17: 64,255 lines in 20 s). Here:

- ``server.header_timeout``: a connection whose first request head is not complete in time is
  closed (later heads on a kept-alive connection fall under ``server.keepalive_timeout``, the
  idle limit aiohttp applies between requests);
- ``server.body_timeout``: a body not received in full in time fails the request with 408
  (RFC 9110 §15.5.9) and the connection is closed after the answer;
- ``server.max_connections`` per process: past it a new connection gets a fixed 503
  problem+json with ``Retry-After`` and is closed at once, before anything is read;
- a body whose announced ``Content-Length`` is over the largest limit of its kind is refused
  with 413 before any of it is read (the endpoints still enforce their own limits);
- failed ``accept()`` calls are logged at most once per ``ACCEPT_LOG_INTERVAL`` seconds, with
  the count of those not logged.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from signer.errors import RequestError, SignerError
from signer.http.kit.problems import PROBLEM_JSON, BodyTooLarge, Handler
from signer.settings.config import ServerSettings

log = structlog.get_logger(__name__)
ACCEPT_LOG_INTERVAL = 10.0
_ACCEPT_FAILURES = ("socket.accept() out of system resource", "Error on transport creation")


class BodyTimeout(RequestError):
    slug = "body-timeout"
    title = "The request body did not arrive in time"
    status = 408


class TooManyConnections(SignerError):
    slug = "too-many-connections"
    title = "Too many connections: try again shortly"
    status = 503


def _refusal_bytes() -> bytes:
    body = json.dumps(
        {
            "type": f"/problems/{TooManyConnections.slug}",
            "title": TooManyConnections.title,
            "status": TooManyConnections.status,
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Content-Type: {PROBLEM_JSON}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_REFUSAL = _refusal_bytes()


class _Refuse(asyncio.Protocol):
    """Answers a connection over the cap with the fixed 503 and closes it, reading nothing."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()


class GuardedSite(web.TCPSite):
    """A TCPSite whose connections are capped and must send their first head in time
    (``limits``: the ``[server]`` settings, as for :func:`hygiene_middleware`)."""

    def __init__(self, runner: web.BaseRunner, limits: ServerSettings, **kwargs: Any) -> None:
        super().__init__(runner, **kwargs)
        self._limits = limits
        self.refused = 0

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self._factory(server, loop),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

    def _factory(
        self, server: web.Server, loop: asyncio.AbstractEventLoop
    ) -> Callable[[], asyncio.Protocol]:
        limits = self._limits
        opening = [0]  # accepted, connection_made not yet run (bursts of accept() calls)

        def made() -> None:
            opening[0] -= 1

        def make() -> asyncio.Protocol:
            if len(server.connections) + opening[0] >= limits.max_connections:
                self.refused += 1
                return _Refuse()
            # asyncio queues connection_made right after this factory returns, so ``made``
            # (queued first) runs just before it: the count never misses a connection.
            opening[0] += 1
            loop.call_soon(made)
            handler = server()
            _AWAITING_HEAD.add(handler)
            loop.call_later(limits.header_timeout, _expire_if_silent, handler)
            return handler

        return make


#: Connections of this process whose first request head has not arrived yet: added when
#: accepted, removed by the first request or by the deadline (so it holds only the connections
#: of the last ``header_timeout`` seconds). aiohttp's handlers cannot be weakly referenced.
_AWAITING_HEAD: set[Any] = set()


def _expire_if_silent(handler: Any) -> None:
    """Header deadline: close a connection that has not started a request yet."""
    if handler not in _AWAITING_HEAD:
        return
    _AWAITING_HEAD.discard(handler)
    transport = handler.transport
    if transport is not None and not transport.is_closing():
        log.info("connection_header_timeout")
        handler.force_close()
        transport.close()


def hygiene_middleware(limits: ServerSettings) -> Any:
    """Marks the connection as started, refuses oversized announced bodies, and bounds the
    time the body may take to arrive."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        _AWAITING_HEAD.discard(request.protocol)
        announced = request.content_length
        ceiling = _ceiling(request, limits)
        if announced is not None and announced > ceiling:
            _close_after_answer(request)  # the body is never read nor drained
            raise BodyTooLarge(f"Content-Length {announced} > {ceiling}")
        if not request.body_exists or request.content.is_eof():
            return await handler(request)
        expired: list[bool] = []
        loop = asyncio.get_running_loop()
        timer = loop.call_later(limits.body_timeout, _body_expired, request, expired)
        try:
            return await handler(request)
        finally:
            timer.cancel()
            if expired:
                _close_after_answer(request)

    return middleware


def _ceiling(request: web.Request, limits: ServerSettings) -> int:
    """The largest body any endpoint takes in this media type (PDF uploads are the only raw
    bodies over ``max_body_bytes``)."""
    if request.content_type == "application/pdf":
        return max(limits.max_pdf_bytes, limits.max_body_bytes)
    return limits.max_body_bytes


def _close_after_answer(request: web.Request) -> None:
    """Answer, then close the connection without reading (or lingering over) the rest of the
    body: aiohttp sees the body as ended and the connection as closing."""
    request.content.feed_eof()
    request.protocol.close()


def _body_expired(request: web.Request, expired: list[bool]) -> None:
    if request.content.is_eof():
        return
    log.info("request_body_timeout", path=request.path)
    expired.append(True)
    request.content.set_exception(BodyTimeout("request body not received in time"))


class AcceptErrorLog:
    """A loop exception handler that logs failed ``accept()`` calls at most once per interval
    (with how many were not logged) and passes everything else to the default handler."""

    def __init__(self, interval: float = ACCEPT_LOG_INTERVAL, clock: Any = time.monotonic):
        self._interval = interval
        self._clock = clock
        self._next = 0.0
        self.suppressed = 0
        self.logged = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if not message.startswith(_ACCEPT_FAILURES):
            loop.default_exception_handler(context)
            return
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return
        exc = context.get("exception")
        log.error(
            "accept_failed",
            error=f"{type(exc).__name__}: {exc}" if exc else message,
            not_logged_since_last=self.suppressed,
        )
        self.logged += 1
        self.suppressed = 0
        self._next = now + self._interval
