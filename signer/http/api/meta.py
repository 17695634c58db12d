"""Health, readiness, the OpenAPI document, problem-type pages and the CA's public files."""

from __future__ import annotations

import asyncio
import html
import json
from datetime import datetime

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding

from signer.errors import SignerError
from signer.http.kit.links import PEM_CHAIN
from signer.http.kit.problems import NotFound, all_kinds
from signer.http.kit.state import SERVICES, TRUST_BUNDLE_CACHE, Services
from signer.signing.revocation import CaName
from signer.storage.authority import Generation
from signer.translog.log import log_verifier

READY_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves requests."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: PostgreSQL answers, and the HSM answers for real (a round trip checking the
    login and finding the issuing CA's key), so an orchestrator takes a replica whose HSM is
    gone or hangs out of rotation; ``reasons`` says why not (for the operator)."""
    services: Services = request.app[SERVICES]
    checks: dict[str, str] = {}
    reasons: dict[str, str] = {}
    try:
        await asyncio.wait_for(services.records.ping(), READY_TIMEOUT)
        checks["database"] = "ok"
    except (SignerError, TimeoutError) as exc:
        checks["database"] = "unavailable"
        reasons["database"] = str(exc) or "no answer within the deadline"
    label = services.authorities.issuing_ca.key_label
    try:
        ok, why = await asyncio.wait_for(services.hsm.readiness(label), READY_TIMEOUT + 1)
    except TimeoutError:
        ok, why = False, "no answer within the deadline"
    checks["hsm"] = "ok" if ok else "unavailable"
    if not ok:
        reasons["hsm"] = why
    anchor = services.publisher.anchor
    if anchor is not None:
        checks["log"] = "ok" if anchor.halted is None else "behind published checkpoint"
        if anchor.halted is not None:
            reasons["log"] = str(anchor.halted)
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "not ready", "checks": checks}
    if reasons:
        body["reasons"] = reasons
    return web.json_response(body, status=200 if ready else 503)


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
    """The root's CRL over the CA certificates it issued (the issuing CA)."""
    return await _crl(request, "root")


async def issuing_crl(request: web.Request) -> web.Response:
    """The issuing CA's CRL: the CRL distribution point of the TSA certificate, which is
    long-lived and so revocation-checked (RFC 5280 §4.2.1.13, EN 319 422 §7)."""
    return await _crl(request, "issuing")


def _generation_key_id(request: web.Request) -> bytes:
    """The ``{key_id}`` of ``/ca/issuing/{key_id}.*``: a subjectKeyIdentifier in hex."""
    try:
        return bytes.fromhex(request.match_info["key_id"])
    except ValueError:
        raise NotFound() from None


async def issuing_generation_certificate(request: web.Request) -> web.Response:
    """An issuing CA generation's certificate by its key identifier: the caIssuers of the TSA
    certificates it certified (RFC 5280 §4.2.2.1), past generations included."""
    services: Services = request.app[SERVICES]
    found = services.revocation.issuing_generation(_generation_key_id(request))
    if found is None:
        raise NotFound()
    return _pkix(found[0].public_bytes(Encoding.DER))


async def issuing_generation_crl(request: web.Request) -> web.Response:
    """An issuing CA generation's CRL by its key identifier: the CRL distribution point of the
    TSA certificates it certified, so one certified by a past generation can still be revoked
    and checked (RFC 5280 §4.2.1.13, §6.3.3: the CRL comes from the certificate's issuer)."""
    crl = await request.app[SERVICES].revocation.issuing_generation_crl(_generation_key_id(request))
    if crl is None:
        raise NotFound()
    return web.Response(body=crl, content_type="application/pkix-crl")


async def _crl(request: web.Request, ca: CaName) -> web.Response:
    """The CRL of ``ca`` this replica publishes (:meth:`RevocationStatus.published_crl`:
    re-signed at most hourly, and at once after a revocation made anywhere).

    Short-term end-entity certificates need none (RFC 9608), but the CA and TSA certificates
    are checked for revocation as usual (EN 319 411-1 CSS-6.3.10), so both CAs publish one.
    """
    crl = await request.app[SERVICES].revocation.published_crl(ca)
    return web.Response(body=crl, content_type="application/pkix-crl")


async def trust_bundle(request: web.Request) -> web.Response:
    """What relying parties trust: root, issuing CA, and the TSA certificate (or the external
    TSA's anchors). JSON by default; the concatenated PEM for ``Accept:
    application/pem-certificate-chain`` (RFC 8555 §9.1)."""
    services: Services = request.app[SERVICES]
    chain = services.signing.chain
    certificates = (chain.root, chain.issuing, *services.time_stamps.certificates)
    history = services.authorities.history
    settings = services.settings.log
    cache = request.app[TRUST_BUNDLE_CACHE]
    fingerprints = tuple(c.fingerprint(SHA256()) for c in certificates)
    periods = tuple((g.role, g.number, g.issued_from, g.issued_until) for g in history)
    key = (fingerprints, periods, settings.origin, settings.key_label)
    if key not in cache:  # once per change of what it is built from; one HSM hop then
        cache.clear()
        cache[key] = await _build_trust_bundle(services, certificates, history)
    pem, body = cache[key]
    if PEM_CHAIN in request.headers.get("Accept", ""):
        return web.Response(text=pem, content_type=PEM_CHAIN)
    return web.Response(body=body, content_type="application/json")


async def _build_trust_bundle(
    services: Services,
    certificates: tuple[x509.Certificate, ...],
    history: tuple[Generation, ...],
) -> tuple[str, bytes]:
    """The bundle: the current certificates first, then every generation (EN 319 411-1
    §6.3.6: after a key changeover relying parties still need the old certificates)."""
    root, issuing, *tsa = (_pem(cert) for cert in certificates)
    generations = [
        {
            "role": g.role,
            "generation": g.number,
            "state": g.state,
            "issued_from": _when(g.issued_from),
            "issued_until": _when(g.issued_until),
            "certificate": _pem(g.certificate),
        }
        for g in history
    ]
    everything = [root, issuing, *tsa, *(_pem(g.certificate) for g in history)]
    pem = "".join(dict.fromkeys(everything))  # an anchor may repeat the root
    settings = services.settings.log
    vkey = await services.hsm.run(lambda s: log_verifier(s, settings).vkey())
    bundle = {
        "root": root,
        "issuing_ca": issuing,
        "tsa": tsa,
        "generations": generations,
        "pem": pem,
        # C2SP signed-note verifier key of the transparency log's checkpoints.
        "log": {"origin": settings.origin, "verifier_key": vkey},
    }
    return pem, json.dumps(bundle).encode()


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode("ascii")
