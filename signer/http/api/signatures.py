"""``POST /api/v1/signatures``: batch signing of digests with a bearer token.

The handler parses and validates, submits (sign or hold: :mod:`signer.flows.submit`), and
renders; policy and the key's life are in :mod:`signer.signing.pipeline`; ``Idempotency-Key`` in
:mod:`signer.http.kit.idempotency`; a held request's 202 in :mod:`signer.http.kit.hold`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from signer.errors import RequestError
from signer.http.api.models import SignatureRequest as SignatureBody
from signer.http.kit import hold as approvals
from signer.http.kit.body import read_json
from signer.http.kit.idempotency import claim, release, replayed
from signer.http.kit.links import with_proof_url
from signer.http.kit.models import validate
from signer.http.kit.problems import (
    InvalidRequest,
    NoDigests,
    TooManyDigests,
    UnsupportedAlgorithm,
    UnsupportedFormat,
    WrongDigestLength,
)
from signer.http.kit.refused import authenticate_signing
from signer.http.kit.state import REQUEST_ID, SERVICES, Services
from signer.settings.config import DIGEST_SIZES
from signer.signing.pipeline import SignatureRequest

#: The problem kind of each field's fault (anything else: 422 invalid-request).
_KINDS = {
    "hash_algorithm": UnsupportedAlgorithm,
    "format": UnsupportedFormat,
    "hashes:too_short": NoDigests,
}


def parse_signature_request(body: Any, *, max_digests: int) -> SignatureRequest:
    """The body as the core's frozen :class:`SignatureRequest` (model: ``SignatureBody``)."""
    parsed = validate(SignatureBody, body, _KINDS)
    algorithm = parsed.hash_algorithm
    if len(parsed.hashes) > max_digests:
        raise TooManyDigests(f"{len(parsed.hashes)} > {max_digests}")
    size = DIGEST_SIZES[algorithm]
    digests = []
    for i, item in enumerate(parsed.hashes):
        try:
            digest = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"hashes[{i}] is not base64") from exc
        if len(digest) != size:
            raise WrongDigestLength(f"hashes[{i}] has {len(digest)} bytes, {algorithm} has {size}")
        digests.append(digest)
    return SignatureRequest(
        hash_algorithm=algorithm,
        digests=tuple(digests),
        profile=parsed.profile,
        format=parsed.format,
    )


async def _read(request: web.Request, max_digests: int) -> tuple[Any, SignatureRequest]:
    body = await read_json(request)
    return body, parse_signature_request(body, max_digests=max_digests)


async def create_signatures(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES]
    settings = services.settings.server
    # The token first (401 before any body check); a refusal at either step is logged.
    (body, sign_request), principal = await authenticate_signing(
        request, lambda: _read(request, settings.max_digests), lambda parsed: parsed[1]
    )
    try:
        idem, replay = await claim(request, services, principal, body)
    except RequestError as exc:  # refused after authentication: logged with who asked
        await services.signing.log_refusal(principal, sign_request, request[REQUEST_ID], exc)
        raise

    if replay is not None:
        return replayed(replay)
    try:
        outcome = await approvals.submitted(
            request,
            principal,
            sign_request,
            hold=lambda: approvals.parse_hold(body, sign_request),
            idempotency=idem,
        )
        if isinstance(outcome, web.Response):  # held for m-of-n approval (issue 7): 202
            return outcome
    except BaseException:
        await release(services, idem)
        raise
    return web.json_response(with_proof_url(outcome.body, settings.public_url), status=201)
