"""Bearer-token authentication at the edge (RFC 6750 §2.1)."""

from __future__ import annotations

from aiohttp import web

from idp_adapter.principal import Principal
from signer.http.kit.problems import AuditorRoleRequired, Unauthenticated
from signer.http.kit.state import PRINCIPAL, SERVICES, Services


async def authenticate(request: web.Request) -> Principal:
    """Verify the ``Authorization: Bearer`` token; the token itself is never logged."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("no bearer token")
    services: Services = request.app[SERVICES]
    principal = await services.tokens.verify_bearer(token.strip())
    request[PRINCIPAL] = principal
    return principal


async def authenticate_auditor(request: web.Request) -> Principal:
    principal = await authenticate(request)
    role = request.app[SERVICES].settings.audit.role
    if role not in principal.roles:
        raise AuditorRoleRequired(f"{principal.subject} lacks role {role!r}")
    return principal
