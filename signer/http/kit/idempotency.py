"""``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key-header) in one place: a retry with
the same key and body replays the stored response (no second key or certificate), the same key
with another body is refused with 422, and one still running with 409. The key is scoped to the
authenticated caller (issuer, subject) and bound to the canonical JSON of the body."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from idp_adapter.principal import Principal
from signer.http.kit.links import with_proof_url
from signer.http.kit.problems import IdempotencyInProgress, IdempotencyMismatch, InvalidRequest
from signer.http.kit.state import Services
from signer.storage.records import IdempotencyKey, IdempotencyOutcome

MAX_IDEMPOTENCY_KEY = 255


async def claim(
    request: web.Request, services: Services, principal: Principal, body: Any
) -> tuple[IdempotencyKey | None, Mapping[str, Any] | None]:
    """The request's Idempotency-Key, claimed; or the stored response of its first run."""
    idem = idempotency_key(request, principal.issuer, principal.subject, body)
    if idem is None:
        return None, None
    claim = await services.records.claim_idempotency(idem, services.clock())
    if claim.outcome is IdempotencyOutcome.REPLAY:
        return idem, with_proof_url(claim.response or {}, services.settings.server.public_url)
    if claim.outcome is IdempotencyOutcome.MISMATCH:
        raise IdempotencyMismatch()
    if claim.outcome is IdempotencyOutcome.IN_PROGRESS:
        raise IdempotencyInProgress()
    return idem, None


async def keep(
    services: Services, idem: IdempotencyKey | None, response: Mapping[str, Any]
) -> None:
    """Keep the answer of a claimed key that did not go through the pipeline (a held request's
    202); a signing's answer is stored with its completion (one commit, in the pipeline)."""
    if idem is not None:
        await services.records.keep_response(idem, response)


def replayed(response: Mapping[str, Any]) -> web.Response:
    """The stored answer of a key's first run: a held request's 202 (its status URL tells the
    rest), else the signing response."""
    headers = {"Idempotent-Replayed": "true"}
    url = response.get("status_url")
    if isinstance(url, str):
        return web.json_response(response, status=202, headers={**headers, "Location": url})
    return web.json_response(response, headers=headers)


async def release(services: Services, idem: IdempotencyKey | None) -> None:
    """Free a claimed key whose request failed, so the client may retry with it."""
    if idem is not None:
        await services.records.release_idempotency(idem)


def idempotency_key(
    request: web.Request, issuer: str, subject: str, body: Any
) -> IdempotencyKey | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidRequest("Idempotency-Key must be 1..255 printable characters")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return IdempotencyKey(issuer, subject, key, hashlib.sha256(canonical).digest())
