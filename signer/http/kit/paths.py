"""Path parameters: the one way a handler reads an id from its URL."""

from __future__ import annotations

import uuid

from aiohttp import web

from signer.errors import SignerError


def path_id(request: web.Request, missing: SignerError, name: str = "id") -> uuid.UUID:
    """The UUID in the path parameter ``name``; ``missing`` (the surface's 404) is raised when
    it is not one, so a malformed id answers like an unknown one."""
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError as exc:
        raise missing from exc
