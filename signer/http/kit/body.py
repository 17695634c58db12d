"""Request bodies: JSON (under aiohttp's ``client_max_size``), and bodies that are not JSON,
read from the stream with a limit of their own.

aiohttp's ``client_max_size`` is the JSON limit (``server.max_body_bytes``); ``request.content``
is not subject to it, so each raw-body endpoint states its own limit here.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from signer.http.kit.params import hostile_text
from signer.http.kit.problems import (
    BodyTooLarge,
    InvalidRequest,
    MalformedJson,
    UnsupportedMediaType,
)


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, reading at most ``limit`` + 1 octets; 413 beyond ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"Content-Length {request.content_length} > {limit}")
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"body over {limit} octets")
    return bytes(body)


async def read_json(request: web.Request) -> Any:
    """The JSON body; 415 for another media type, 413 over the limit, 400 when malformed, 422
    when a string holds a NUL or a lone surrogate. Handlers validate the value with their model
    (``signer.http.kit.models``)."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(f"content type {request.content_type!r}")
    raw = await request.read()  # aiohttp enforces client_max_size -> 413
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedJson(str(exc)) from exc
    if (where := hostile_text(body)) is not None:  # NUL or lone surrogate (signer.http.kit.params)
        err = InvalidRequest(f"{where}: text no store or log can hold")
        err.pointer_detail = f"{where}: holds a NUL character or a lone surrogate"
        raise err
    return body
