"""``POST /api/v1/signatures/pdf``: a whole PDF in, the PAdES signed PDF out (B-T, or with
``?level=b-lt`` / ``b-lta`` the long-term levels of EN 319 142-1 §6.3,
:mod:`signer.signing.longterm`).

For clients that would rather not prepare the signature field themselves (the batch API's
``"format": "pades"`` signs a byte-range digest and the document never leaves the client). The
service prepares an invisible signature field (ISO 32000-2 §12.8, ``/SubFilter
/ETSI.CAdES.detached``, EN 319 142-1 §6.3), signs its byte-range digest through the same
pipeline as every other request (one key, one certificate, one record, signature-time-stamp in
the same HSM hop) and embeds the CMS. PDF work runs in a worker thread, never in the HSM hop.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from aiohttp import web

from signer.formats.pdf import embed, prepare
from signer.http.kit import hold as approvals
from signer.http.kit.body import read_typed
from signer.http.kit.problems import InvalidRequest
from signer.http.kit.refused import authenticate_signing
from signer.http.kit.state import SERVICES, Services
from signer.signing.longterm import PADES_LEVELS, LongTerm, PadesLevel
from signer.signing.pipeline import SignatureRequest

PDF = "application/pdf"
DEFAULT_FIELD = "Signature1"


async def read_pdf(request: web.Request, limit: int) -> bytes:
    """The body, at most ``limit`` octets (read from the stream: aiohttp's client_max_size is
    the JSON limit); 415 unless ``application/pdf``, 413 over the limit."""
    return await read_typed(request, PDF, limit)


def _field(request: web.Request) -> str:
    name = request.query.get("field", DEFAULT_FIELD)
    if not (0 < len(name) <= 64 and name.isprintable() and "." not in name):
        raise InvalidRequest("field must be 1..64 printable characters without '.'")
    return name


def _level(request: web.Request) -> PadesLevel:
    """``level``: the PAdES baseline level returned (EN 319 142-1 §6.3), default ``b-t``."""
    asked = request.query.get("level", "b-t")
    for level in PADES_LEVELS:
        if asked == level:
            return level
    raise InvalidRequest(f"level must be one of {', '.join(PADES_LEVELS)}")


async def sign_pdf(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    profile = request.query.get("profile")

    async def read() -> tuple[tuple[str, PadesLevel], bytes]:
        field, level = _field(request), _level(request)
        return (field, level), await read_pdf(request, services.settings.server.max_pdf_bytes)

    # The token first (401 before any body check); a refusal at either step is logged.
    asked = SignatureRequest("sha256", (), profile=profile, format="pades")
    ((field, level), document), principal = await authenticate_signing(
        request, read, lambda _: asked
    )
    now: datetime = services.clock()
    prepared = await asyncio.to_thread(prepare, document, field, now)
    sign_request = SignatureRequest("sha256", (prepared.digest,), profile=profile, format="pades")

    outcome = await approvals.submitted(
        request,
        principal,
        sign_request,
        hold=lambda: approvals.pdf_hold(request, sign_request, prepared, level),
    )
    if isinstance(outcome, web.Response):  # held for m-of-n approval (issue 7): 202
        return outcome
    result = outcome.result
    signed = await asyncio.to_thread(embed, prepared, result.signatures[0])
    long_term = LongTerm(services.hsm, services.revocation, services.time_stamps)
    signed = await long_term.augment(signed, level)
    public_url = services.settings.server.public_url
    return web.Response(
        body=signed,
        content_type=PDF,
        status=201,
        headers={
            "Content-Disposition": 'attachment; filename="signed.pdf"',
            "Qes-Certificate-Serial": result.serial,
            "Link": f'<{public_url}/api/v1/certificates/{result.serial}>; rel="related"',
        },
    )
