"""The HTTP server under the app: aiohttp's, with its parse-error path made quiet.

When a request cannot be parsed (RFC 9112 §2.2: a NUL or another control byte in a header
field, a line too long, a bad request line), aiohttp answers 400 before any middleware runs.
Its own error path logs the exception, whose message quotes the offending header line byte for
byte, and sends that message back as the 400 body: a bearer token with a NUL in it lands in the
log and in the response with its signature segment (issue 18). Here the same 400 is an RFC 9457
problem with a fixed title, and the log line names the error class only, never the bytes.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from signer.api.problems import PROBLEM_JSON, MalformedRequest

__all__ = ["SignerRunner", "parse_error_response"]

log = structlog.get_logger(__name__)

_PARSE_ERROR: dict[str, Any] = {
    "type": f"/problems/{MalformedRequest.slug}",
    "title": MalformedRequest.title,
    "status": MalformedRequest.status,
}


def parse_error_response() -> web.Response:
    """The fixed 400 problem for a request aiohttp could not parse."""
    resp = web.Response(status=400, text=json.dumps(_PARSE_ERROR), content_type=PROBLEM_JSON)
    resp.force_close()
    return resp


class _QuietRequestHandler(RequestHandler):
    """aiohttp's protocol handler; only its 400 parse-error path differs (module docstring)."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400:
            return super().handle_error(request, status, exc, message)
        log.warning(
            "http_request_unparsable",
            error=type(exc).__name__ if exc is not None else None,
            client_address=request.remote,
        )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        return parse_error_response()


class _QuietServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class SignerRunner(web.AppRunner):
    """:class:`aiohttp.web.AppRunner` whose connections use :class:`_QuietRequestHandler`.

    ``qes serve`` runs the app with it, and so do the tests (``tests/conftest.py``)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app's server, same state; only the protocol factory (``__call__``) is ours.
        server.__class__ = _QuietServer
        return server
