"""Request bodies: JSON (under aiohttp's ``client_max_size``), and bodies that are not JSON,
read from the stream with a limit of their own.

aiohttp's ``client_max_size`` is the JSON limit (``server.max_body_bytes``); ``request.content``
is not subject to it, so each raw-body endpoint states its own limit here.

JSON (RFC 8259) is checked before it is parsed: nesting deeper than :data:`MAX_JSON_DEPTH`
(RFC 8259 §9 lets a parser limit it; CPython's parser recurses and gives up near 1,000 levels
with a RecursionError) is refused with 400 ``json-too-deep``. After parsing, text the service
cannot store or log is refused with 400 ``unacceptable-text``: a NUL character (PostgreSQL
``text`` cannot hold it) or an unpaired surrogate (RFC 8259 §8.2: not a Unicode character, and
not encodable as UTF-8). ``NaN`` and ``Infinity`` are not JSON (RFC 8259 §6) and are refused
as malformed, as are numbers too long for the interpreter to convert.

A client that goes away while its body is read raises :class:`ClientGone` (HTTP 499 in the
log, the nginx convention: nobody is left to receive an answer).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from signer.errors import RequestError
from signer.http.kit.params import hostile_text, text_fault
from signer.http.kit.problems import (
    BodyTooLarge,
    ClientGone,
    JsonTooDeep,
    MalformedJson,
    UnacceptableText,
    UnsupportedMediaType,
)

#: The deepest JSON any endpoint accepts: the deepest body the API describes is 4 levels.
MAX_JSON_DEPTH = 32
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, reading at most ``limit`` + 1 octets; 413 beyond ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"Content-Length {request.content_length} > {limit}")
    body = bytearray()
    try:
        while chunk := await request.content.read(limit + 1 - len(body)):
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(f"body over {limit} octets")
    except ConnectionError as exc:
        raise ClientGone("connection lost while the body was read") from exc
    return bytes(body)


async def read_typed(
    request: web.Request,
    media_type: str,
    limit: int,
    refusal: type[UnsupportedMediaType] = UnsupportedMediaType,
) -> bytes:
    """The body of an endpoint that takes one media type that is not JSON (a PDF, a DER
    TimeStampReq or OCSPRequest): ``refusal`` (415) for another Content-Type, else
    :func:`read_limited`."""
    if request.content_type != media_type:
        raise refusal(f"content type {request.content_type!r}, expected {media_type}")
    return await read_limited(request, limit)


async def read_body(request: web.Request) -> bytes:
    """The whole body under aiohttp's ``client_max_size`` (413 beyond it)."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise BodyTooLarge(f"body over {exc.text}") from exc
    except ConnectionError as exc:
        raise ClientGone("connection lost while the body was read") from exc


async def read_json(request: web.Request) -> Any:
    """The JSON body; 415 for another media type, 413 over the limit, 400 when malformed,
    too deep or holding text that is refused (module docstring). Handlers validate the value
    with their model (``signer.http.kit.models``)."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(f"content type {request.content_type!r}")
    return parse_json(await read_body(request))


def check_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON text nested deeper than ``limit`` without parsing it: strings are cut out,
    everything but brackets dropped, then innermost ``[]``/``{}`` pairs removed ``limit``
    times (each pass is one regular-expression substitution; a balanced text of depth d is
    empty after d passes). Brackets that never pair up are malformed JSON."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    for _ in range(limit):
        if not brackets:
            return
        brackets, removed = _INNERMOST_PAIR.subn(b"", brackets)
        if not removed:
            raise MalformedJson("brackets do not balance")
    if brackets:
        raise JsonTooDeep(f"nested deeper than {limit} levels")


def _refuse_constant(name: str) -> Any:
    raise MalformedJson(f"{name} is not JSON (RFC 8259 §6)")


def parse_json(raw: bytes, limit: int = MAX_JSON_DEPTH, *, check_text: bool = True) -> Any:
    """JSON text to a value, or a :class:`~signer.errors.RequestError` (never another
    exception): depth checked first, then parsed, then its text checked (unless the caller
    checks it itself, naming the parameter in its own error shape, as CSC does)."""
    check_depth(raw, limit)
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except RequestError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, digits
        raise MalformedJson(f"{type(exc).__name__}: {exc}"[:200]) from exc
    if check_text and (where := hostile_text(value)) is not None:  # keys too (kit.params)
        err = UnacceptableText(f"{where}: a JSON string holds NUL or an unpaired surrogate")
        err.pointer_detail = f"{where}: holds a NUL character or a lone surrogate"
        raise err
    return value


def text_ok(value: str) -> bool:
    """Text without NUL and without unpaired surrogates (see the module docstring)."""
    return text_fault(value) is None


#: What an HTML form posts (WHATWG HTML §4.10.21.7, enctype's default; RFC 1866 §8.2.1).
FORM_URLENCODED = "application/x-www-form-urlencoded"


async def read_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The fields of a form the service's own pages posted; any other body reads as an empty
    form, which the caller's checks (the session's CSRF token first) then refuse. aiohttp would
    parse ``multipart/form-data`` too, and fail with a 500 on one without a boundary
    (RFC 7578 §4.1 makes it mandatory); none of the service's forms sends it."""
    if request.content_type != FORM_URLENCODED:
        return MultiDictProxy(MultiDict())
    return await request.post()
