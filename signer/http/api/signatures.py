"""``POST /api/v1/signatures``: batch signing of digests with a bearer token.

The handler parses and validates, asks the service, and renders; policy and the key's life are
in :mod:`signer.signing.pipeline`; ``Idempotency-Key`` in :mod:`signer.http.kit.idempotency`;
holding for approval in :mod:`signer.http.kit.hold`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from signer.errors import RequestError
from signer.http.kit import hold as approvals
from signer.http.kit.body import read_json
from signer.http.kit.idempotency import claim, release
from signer.http.kit.links import with_proof_url
from signer.http.kit.problems import (
    InvalidRequest,
    NoDigests,
    TooManyDigests,
    UnsupportedAlgorithm,
    UnsupportedFormat,
    WrongDigestLength,
)
from signer.http.kit.refused import authenticate_signing, start_operation
from signer.http.kit.state import REQUEST_ID, SERVICES, Services
from signer.settings.config import DIGEST_SIZES
from signer.signing.pipeline import FORMATS, SignatureRequest
from signer.signing.results import render_result

#: Extra fields of a body, used when the request is held for approval (signer.http.approvals).
HOLD_FIELDS = frozenset({"labels", "reason", "webhook_url"})


def parse_signature_request(body: Any, *, max_digests: int) -> SignatureRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    unknown = set(body) - {"hash_algorithm", "hashes", "profile", "format", *HOLD_FIELDS}
    if unknown:
        raise InvalidRequest(f"unknown fields {sorted(unknown)}")
    algorithm = body.get("hash_algorithm")
    if algorithm not in DIGEST_SIZES:
        raise UnsupportedAlgorithm(f"hash_algorithm {algorithm!r}")
    hashes = body.get("hashes")
    if not isinstance(hashes, list):
        raise InvalidRequest("hashes must be a list of base64 strings")
    if not hashes:
        raise NoDigests()
    if len(hashes) > max_digests:
        raise TooManyDigests(f"{len(hashes)} > {max_digests}")
    profile = body.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise InvalidRequest("profile must be a string")
    fmt = body.get("format", "raw")
    if fmt not in FORMATS:
        raise UnsupportedFormat(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    size = DIGEST_SIZES[algorithm]
    digests = []
    for i, item in enumerate(hashes):
        if not isinstance(item, str):
            raise InvalidRequest(f"hashes[{i}] is not a string")
        try:
            digest = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"hashes[{i}] is not base64") from exc
        if len(digest) != size:
            raise WrongDigestLength(f"hashes[{i}] has {len(digest)} bytes, {algorithm} has {size}")
        digests.append(digest)
    return SignatureRequest(
        hash_algorithm=algorithm, digests=tuple(digests), profile=profile, format=fmt
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
        return approvals.replay(replay)
    try:
        key = None if idem is None else idem.key
        await start_operation(request, principal, key, sign_request)
        requirement = approvals.requirement_of(request, principal)
        if requirement is not None:  # held for m-of-n approval (issue 7): 202, status URL
            hold = approvals.parse_hold(body, sign_request)
            return await approvals.hold(request, principal, hold, requirement, idem)
        _, response = await services.signing.sign(
            principal,
            sign_request,
            request_id=request[REQUEST_ID],
            idempotency=idem,
            render=lambda r: render_result(r, settings.public_url),
        )
    except BaseException:
        await release(services, idem)
        raise
    return web.json_response(with_proof_url(response or {}, settings.public_url), status=201)
