"""Bearer-token authentication at the edge (RFC 6750 §2.1)."""

from __future__ import annotations

import re

from aiohttp import web

from idp_adapter.principal import Principal
from signer.api.problems import AuditorRoleRequired, MalformedAuthorization, Unauthenticated
from signer.api.state import PRINCIPAL, SERVICES, Services

#: RFC 9110 §5.5 field value as we accept it in ``Authorization``: visible ASCII and spaces.
#: aiohttp passes tab and bytes 0x80-0xff through (the latter as surrogates); NUL, other
#: controls and DEL never reach us (the parser refuses them, see ``signer.api.server``).
_VISIBLE = re.compile(r"[\x20-\x7e]*")


def bearer_token(request: web.Request) -> str | None:
    """The ``Authorization: Bearer`` token (RFC 6750 §2.1), or None when there is none.

    :raises MalformedAuthorization: the header holds anything but visible ASCII (400; the
        value is never echoed or logged, whatever its bytes).
    """
    header = request.headers.get("Authorization", "")
    if not _VISIBLE.fullmatch(header):
        raise MalformedAuthorization("Authorization header with non-ASCII or control bytes")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def claimed_bearer_token(request: web.Request) -> str | None:
    """:func:`bearer_token`, or None when the header is malformed (for refusal records)."""
    try:
        return bearer_token(request)
    except MalformedAuthorization:
        return None


async def authenticate(request: web.Request) -> Principal:
    """Verify the ``Authorization: Bearer`` token; the token itself is never logged."""
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("no bearer token")
    services: Services = request.app[SERVICES]
    principal = await services.tokens.verify_bearer(token)
    request[PRINCIPAL] = principal
    return principal


async def authenticate_auditor(request: web.Request) -> Principal:
    principal = await authenticate(request)
    role = request.app[SERVICES].settings.audit.role
    if role not in principal.roles:
        raise AuditorRoleRequired(f"{principal.subject} lacks role {role!r}")
    return principal
