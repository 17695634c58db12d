"""``POST /ocsp`` and ``GET /ocsp/{request}``: the OCSP responder over HTTP (RFC 6960 §A.1).

Public, like the CRLs: no authentication. It answers for the issuing CA and the TSA
certificates (:class:`signer.signing.revocation.RevocationStatus`), signed by the delegated
responder key in the HSM. POST carries a DER ``OCSPRequest`` as
``application/ocsp-request``; GET carries it base64-encoded and then URL-encoded in the last
path segment (§A.1.1). The answer is always ``application/ocsp-response`` with status 200: a
request that is not a usable OCSPRequest (bad base64, bad DER, an over-long nonce) gets the
unsigned ``malformedRequest`` response, one about a CA this responder does not serve gets
``unauthorized``, and a database or HSM outage ``tryLater`` (RFC 6960 §2.3, §4.2.1). HTTP
errors (problem+json) are only for what is no OCSP query at all: another media type (415) or
a body over :data:`ca.ocsp.MAX_REQUEST_OCTETS` (413).
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse

import structlog
from aiohttp import web
from cryptography.x509.ocsp import load_der_ocsp_response

from ca.ocsp import MAX_REQUEST_OCTETS, malformed
from signer.http.kit.body import read_typed
from signer.http.kit.problems import UnsupportedMediaType
from signer.http.kit.state import SERVICES

log = structlog.get_logger(__name__)
REQUEST_TYPE = "application/ocsp-request"
RESPONSE_TYPE = "application/ocsp-response"
PREFIX = "/ocsp/"


class OcspRequestExpected(UnsupportedMediaType):
    """The body of ``POST /ocsp`` must be a DER OCSPRequest (RFC 6960 §A.1.1)."""

    slug = "ocsp-request-expected"
    title = "Content-Type must be application/ocsp-request"


async def post(request: web.Request) -> web.Response:
    der = await read_typed(request, REQUEST_TYPE, MAX_REQUEST_OCTETS, OcspRequestExpected)
    return await _answer(request, der)


async def get(request: web.Request) -> web.Response:
    """The request from the path: taken from the raw path and URL-decoded once, since
    base64 text may hold ``/`` and ``+`` (§A.1.1)."""
    encoded = urllib.parse.unquote(request.raw_path.split("?", 1)[0].removeprefix(PREFIX))
    if len(encoded) > 2 * MAX_REQUEST_OCTETS:
        return _reply(malformed())
    try:
        der = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return _reply(malformed())
    return await _answer(request, der)


async def _answer(request: web.Request, der: bytes) -> web.Response:
    reply = await request.app[SERVICES].revocation.ocsp(der)
    status = load_der_ocsp_response(reply).response_status.name.lower()
    log.info("ocsp_reply", status=status, query_octets=len(der))
    return _reply(reply)


def _reply(der: bytes) -> web.Response:
    return web.Response(body=der, content_type=RESPONSE_TYPE)
