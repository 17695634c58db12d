"""The answers the edge itself can give to any operation, added to the OpenAPI document once.

Handlers document their own errors; these come from the layers around every handler, so they
are derived from the shape of each operation instead of being written into each one:

- 400 ``malformed-request`` (``signer.http.kit.server``: a request aiohttp cannot parse) and
  503 ``too-many-connections`` (``signer.http.kit.connections``): any operation;
- 400 ``unacceptable-text``: an operation with path or query parameters (NUL or an unpaired
  surrogate in them, :func:`text_middleware`);
- 404 ``not-found``: a path with parameters (a value its route pattern does not match);
- 408 ``body-timeout`` and 413 ``body-too-large`` (``signer.http.kit.connections``): an
  operation with a request body; with a JSON body also 415 and 400 for malformed, too deeply
  nested or unacceptable JSON (``signer.http.kit.body``);
- 429 ``public-rate-limited``: the anonymous endpoints (``signer.http.kit.public_limits``);
- operations a browser navigates to (a page or a See Other) answer 400, 403 and 404 with an
  HTML page too, every error status of theirs may be a page, and 303 sends to the login.

405 is not an answer of a described operation: an undescribed method on a described path gets
405 with ``Allow`` (RFC 9110 §15.5.6) from the router, and the route table equals the document
(tests/unit/signer/test_openapi_routes.py). 499 is never sent (the client is gone); it is only
logged.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from signer.errors import SignerError
from signer.http.kit.body import text_ok
from signer.http.kit.connections import BodyTimeout, TooManyConnections
from signer.http.kit.problems import (
    PROBLEM_JSON,
    BodyTooLarge,
    Handler,
    JsonTooDeep,
    MalformedJson,
    MalformedRequest,
    NotFound,
    UnacceptableText,
    Unauthenticated,
    UnsupportedMediaType,
)
from signer.http.kit.public_limits import PUBLIC_PATHS
from signer.policy.public_limits import PublicRateLimited

_PROBLEM = {"schema": {"$ref": "#/components/schemas/Problem"}}


def _edge_kinds(path: str, op: dict[str, Any]) -> list[type[SignerError]]:
    kinds: list[type[SignerError]] = [MalformedRequest, TooManyConnections]
    if any("bearer" in requirement for requirement in op.get("security", [])):
        kinds.append(Unauthenticated)  # the bearer check (signer.http.kit.auth)
    params = {p.get("in") for p in op.get("parameters", [])}
    if params & {"path", "query"}:
        kinds.append(UnacceptableText)
    if "path" in params:
        kinds.append(NotFound)
    body = op.get("requestBody", {}).get("content", {})
    if body:
        kinds += [BodyTimeout, BodyTooLarge]
    if "application/json" in body:
        kinds += [UnsupportedMediaType, MalformedJson, JsonTooDeep, UnacceptableText]
    if path in PUBLIC_PATHS:
        kinds.append(PublicRateLimited)
    return kinds


def _add(responses: dict[str, Any], kind: type[SignerError]) -> None:
    """``kind`` as a problem+json answer of its status, merged into what is there."""
    slug = f"`/problems/{kind.slug}`"
    answer = responses.setdefault(str(kind.status), {"description": "Problem kinds: "})
    content = answer.setdefault("content", {})
    content.setdefault(PROBLEM_JSON, _PROBLEM)
    if slug not in answer["description"]:
        sep = "" if answer["description"].endswith(": ") else "; "
        answer["description"] += sep + slug


_HTML = "text/html"
_PAGE_ERRORS = {"400": "Bad Request", "403": "Forbidden", "404": "Not Found"}


def _navigated(op: dict[str, Any]) -> bool:
    """An operation a browser navigates to: a browser page's route, or one that answers with
    a page or a See Other."""
    answers = op.get("responses", {})
    return (
        "Browser pages" in op.get("tags", [])
        or "303" in answers
        or any(_HTML in a.get("content", {}) for a in answers.values())
    )


def _add_pages(responses: dict[str, Any]) -> None:
    """The browser surfaces answer their own refusals with an HTML page (signer.http.browser):
    400, 403 and 404 pages, and a page besides the problem for every other error status; a
    page that needs a login sends the browser to it (303)."""
    responses.setdefault("303", {"description": "See Other: the login, then back"})
    for status, reason in _PAGE_ERRORS.items():
        responses.setdefault(status, {"description": f"{reason}: an HTML error page"})
    for status, answer in responses.items():
        if status >= "400":
            answer.setdefault("content", {}).setdefault(_HTML, {"schema": {}})


def add_edge_answers(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation of ``paths`` with the edge's answers added (module docstring)."""
    for path, ops in paths.items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            for kind in _edge_kinds(path, op):
                _add(responses, kind)
            if _navigated(op):
                _add_pages(responses)
            op["responses"] = dict(sorted(responses.items()))
    return paths


METHODS = frozenset({"get", "post", "put", "patch", "delete"})


def served_operations(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route of ``app``, in the document's spelling:
    ``{n:[0-9]+}`` as ``{n}``, a static prefix as ``prefix/{file}``; the HEAD aiohttp adds to
    each GET (RFC 9110 §9.3.2) counts as the GET's."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if "prefix" in info:
            path = f"{info['prefix']}/{{file}}"
        else:
            path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", info.get("formatter") or info["path"])
        if route.method.lower() in METHODS:
            found.add((route.method.lower(), path))
    return found


def only_served(paths: dict[str, Any], served: set[tuple[str, str]]) -> dict[str, Any]:
    """``paths`` without the operations this deployment does not serve (a surface that is not
    configured, such as web signing, has no routes)."""
    kept: dict[str, Any] = {}
    for path, ops in paths.items():
        mine = {m: op for m, op in ops.items() if m not in METHODS or (m, path) in served}
        if any(m in METHODS for m in mine):
            kept[path] = mine
    return kept


@web.middleware
async def text_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse NUL and unpaired surrogates in the path and the query before any handler (they
    cannot be stored in PostgreSQL ``text`` nor encoded as UTF-8): 400 ``unacceptable-text``."""
    values = [request.path, *request.query.keys(), *request.query.values()]
    if not all(text_ok(v) for v in values):
        raise UnacceptableText("NUL or an unpaired surrogate in the path or the query")
    return await handler(request)
