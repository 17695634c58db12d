"""Health, readiness, the OpenAPI document, problem-type pages and the CA's public files."""

from __future__ import annotations

import asyncio
import html
import time
from datetime import timedelta

from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import build_crl
from signer.api.openapi import document
from signer.api.problems import NotFound, all_kinds
from signer.api.state import CRL_CACHE, SERVICES, Services
from signer.errors import SignerError
from signer.hsm import HsmSession

READY_TIMEOUT = 2.0
CRL_CACHE_SECONDS = 3600


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves requests."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: PostgreSQL answers and the HSM has a usable session."""
    services: Services = request.app[SERVICES]
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(services.records.ping(), READY_TIMEOUT)
        checks["database"] = "ok"
    except (SignerError, TimeoutError):
        checks["database"] = "unavailable"
    try:
        ok = await asyncio.wait_for(services.hsm.ready(), READY_TIMEOUT)
        checks["hsm"] = "ok" if ok else "unavailable"
    except (SignerError, TimeoutError):
        checks["hsm"] = "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def openapi(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    return web.json_response(document(services.settings.server))


async def problem_page(request: web.Request) -> web.Response:
    kind = all_kinds().get(request.match_info["slug"])
    if kind is None:
        raise NotFound()
    doc = (kind.__doc__ or "").strip().splitlines()[0] if kind.__doc__ else ""
    body = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(kind.title)}"
        f"</title><h1>{html.escape(kind.title)}</h1><p>HTTP status {kind.status}.</p>"
        f"<p>{html.escape(doc)}</p></html>"
    )
    return web.Response(text=body, content_type="text/html")


def _pkix(der: bytes) -> web.Response:
    return web.Response(body=der, content_type="application/pkix-cert")


async def root_certificate(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    return _pkix(services.signing.chain.root.public_bytes(Encoding.DER))


async def issuing_certificate(request: web.Request) -> web.Response:
    """The caIssuers target of every end-entity certificate (RFC 5280 §4.2.2.1: DER)."""
    services: Services = request.app[SERVICES]
    return _pkix(services.signing.chain.issuing.public_bytes(Encoding.DER))


async def root_crl(request: web.Request) -> web.Response:
    """The root's CRL over the CA certificates, re-signed at most hourly per process."""
    services: Services = request.app[SERVICES]
    cache = request.app[CRL_CACHE]
    if "der" not in cache or time.monotonic() - cache["at"] > CRL_CACHE_SECONDS:
        cache.update(at=time.monotonic(), der=await make_root_crl(services))
    return web.Response(body=cache["der"], content_type="application/pkix-crl")


async def make_root_crl(services: Services) -> bytes:
    """A CRL over the CA certificates (none revoked), signed by the root key in the HSM.

    Short-term end-entity certificates need none (RFC 9608), but the CA certificates above them
    are checked for revocation as usual (EN 319 411-1 CSS-6.3.10), so the root publishes one.
    """
    label = services.settings.ca.root_label
    root = services.signing.chain.root
    now = services.clock()

    def sign(session: HsmSession) -> bytes:
        crl = build_crl(session.token_key(label), root, now, timedelta(days=7))
        return crl.public_bytes(Encoding.DER)

    return await services.hsm.run(sign)
