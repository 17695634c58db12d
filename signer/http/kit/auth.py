"""Access-token authentication at the edge: ``Authorization: Bearer`` (RFC 6750 §2.1) or
``Authorization: DPoP`` with a ``DPoP`` proof (RFC 9449 §7.1), and certificate-bound tokens on
the TLS listener (RFC 8705 §3). Verifying a token never spends its ``jti``."""

from __future__ import annotations

import re
import ssl
from typing import Literal

from aiohttp import web

from idp_adapter.binding import NonceSource, Presented
from idp_adapter.principal import Principal
from signer.http.kit.problems import AuditorRoleRequired, MalformedAuthorization, Unauthenticated
from signer.http.kit.state import PRINCIPAL, SERVICES, Services

#: RFC 9110 §5.5 field value as we accept it in ``Authorization``: visible ASCII and spaces.
#: aiohttp passes tab and bytes 0x80-0xff through (the latter as surrogates); NUL, other
#: controls and DEL never reach us (the parser refuses them, see ``signer.http.kit.server``).
_VISIBLE = re.compile(r"[\x20-\x7e]*")
_SCHEMES: dict[str, Literal["bearer", "dpop"]] = {"bearer": "bearer", "dpop": "dpop"}
#: Server nonces for DPoP proofs (RFC 9449 §9), for issuers with ``dpop_nonce``.
DPOP_NONCES = web.AppKey("dpop_nonces", NonceSource)


def access_token(request: web.Request) -> tuple[Literal["bearer", "dpop"], str] | None:
    """``(scheme, token)`` of ``Authorization: Bearer|DPoP <token>`` (RFC 6750 §2.1, RFC 9449
    §7.1), or None when there is none.

    :raises MalformedAuthorization: the header holds anything but visible ASCII (400; the
        value is never echoed or logged, whatever its bytes).
    """
    header = request.headers.get("Authorization", "")
    if not _VISIBLE.fullmatch(header):
        raise MalformedAuthorization("Authorization header with non-ASCII or control bytes")
    scheme, _, token = header.partition(" ")
    kind = _SCHEMES.get(scheme.lower())
    if kind is None or not token.strip():
        return None
    return kind, token.strip()


def bearer_token(request: web.Request) -> str | None:
    """The access token of :func:`access_token`, whichever the scheme."""
    found = access_token(request)
    return None if found is None else found[1]


def claimed_bearer_token(request: web.Request) -> str | None:
    """:func:`bearer_token`, or None when the header is malformed (for refusal records)."""
    try:
        return bearer_token(request)
    except MalformedAuthorization:
        return None


async def authenticate(request: web.Request) -> Principal:
    """Verify the request's access token; the token itself is never logged."""
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("no bearer token")
    return await verify_token(request, token)


async def verify_token(request: web.Request, token: str) -> Principal:
    """Verify ``token`` (the request's own) and, for a sender-constrained one, its proof:
    the ``DPoP`` header for this method and URL (``htu`` is ``server.public_url`` + path, the
    URL the client addresses), or the TLS client certificate."""
    services: Services = request.app[SERVICES]
    principal = await services.tokens.verify_bearer(token)
    found = access_token(request)
    presented = Presented(
        scheme="bearer" if found is None else found[0],
        token=token,
        proofs=tuple(request.headers.getall("DPoP", ())),
        method=request.method,
        url=services.settings.server.public_url.rstrip("/") + request.rel_url.raw_path,
        client_certificate=_client_certificate(request),
    )
    await services.tokens.check_sender(principal, presented, request.app.get(DPOP_NONCES))
    request[PRINCIPAL] = principal
    return principal


def _client_certificate(request: web.Request) -> bytes | None:
    """The DER certificate the client presented on the TLS listener (RFC 8705 §3), if any."""
    transport = request.transport
    tls = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(tls, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = tls.getpeercert(binary_form=True)
    return der or None


async def authenticate_auditor(request: web.Request) -> Principal:
    principal = await authenticate(request)
    role = request.app[SERVICES].settings.audit.role
    if role not in principal.roles:
        raise AuditorRoleRequired(f"{principal.subject} lacks role {role!r}")
    return principal
