"""``/api/v1/log/*``: checkpoints, RFC 9162 proofs and entries of the transparency log.

Checkpoints and proofs are public (they reveal no personal data: entries commit to personal
identifiers through keyed hashes); entry contents and on-demand checkpoints need the auditor
role. Proof hashes are standard base64, path order as RFC 9162 §2.1.3.1 (leaf sibling first)
and §2.1.4.1 (innermost first), so any RFC 9162 verifier checks them against a checkpoint.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from ca.merkle import leaf_hash
from signer.http.kit.auth import authenticate_auditor
from signer.http.kit.problems import InvalidLogQuery, LogSizeUnavailable, NoCheckpoint, NotFound
from signer.http.kit.query import count
from signer.http.kit.state import SERVICES, Services
from signer.translog.log import EntryFilter, describe_entry

NOTE_TYPE = "text/plain"
MAX_INDEX = 2**63 - 1
MAX_SCAN = 1000
_LIST_PARAMS = {"from", "limit", "subject", "issuer", "client_id"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _int(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise InvalidLogQuery(f"{name} is required")
        return default
    value = count(raw, MAX_INDEX)
    if value is None:
        raise InvalidLogQuery(f"{name} must be a non-negative integer")
    return value


async def latest_checkpoint(request: web.Request) -> web.Response:
    """The latest signed checkpoint (C2SP tlog-checkpoint in a signed note), as text."""
    services: Services = request.app[SERVICES]
    latest = await services.log.latest_checkpoint()
    if latest is None:
        raise NoCheckpoint()
    return web.Response(text=latest.note, content_type=NOTE_TYPE, charset="utf-8")


async def publish_checkpoint(request: web.Request) -> web.Response:
    """Integrate now and publish a checkpoint when the tree grew (auditors)."""
    await authenticate_auditor(request)
    services: Services = request.app[SERVICES]
    published = await services.publisher.publish(force=True)
    latest = published or await services.log.latest_checkpoint()
    if latest is None:
        raise NoCheckpoint()
    status = 201 if published is not None else 200
    return web.Response(status=status, text=latest.note, content_type=NOTE_TYPE, charset="utf-8")


async def _tree_size(services: Services, size: int | None) -> tuple[int, str | None]:
    """The requested size (default: the latest checkpoint's) and its checkpoint note."""
    latest = await services.log.latest_checkpoint()
    if size is None:
        if latest is None:
            raise NoCheckpoint()
        return latest.size, latest.note
    if size > await services.log.integrated_size():
        raise LogSizeUnavailable(f"size {size}")
    return size, latest.note if latest is not None and latest.size == size else None


async def inclusion(request: web.Request) -> web.Response:
    """``PATH(index, D[size])``; ``size`` defaults to the latest checkpoint's."""
    services: Services = request.app[SERVICES]
    index = _int(request, "index")
    size, note = await _tree_size(
        services, _int(request, "size") if "size" in request.query else None
    )
    if index >= size:
        raise LogSizeUnavailable(f"index {index} is not below size {size}")
    proof = await services.log.inclusion_proof(index, size)
    stored = await services.log.entry(index)
    body: dict[str, Any] = {
        "index": index,
        "tree_size": size,
        "leaf_hash": _b64(stored.leaf_hash) if stored else None,
        "hashes": [_b64(h) for h in proof.path],
        "checkpoint": note,
    }
    return web.json_response(body)


async def consistency(request: web.Request) -> web.Response:
    """``PROOF(old, D[new])``; ``new`` defaults to the latest checkpoint's size."""
    services: Services = request.app[SERVICES]
    old = _int(request, "old")
    new, note = await _tree_size(services, _int(request, "new") if "new" in request.query else None)
    if old > new:
        raise InvalidLogQuery("old must not exceed new")
    proof = await services.log.consistency_proof(old, new)
    body = {
        "old_size": old,
        "new_size": new,
        "hashes": [_b64(h) for h in proof.path],
        "checkpoint": note,
    }
    return web.json_response(body)


async def entry(request: web.Request) -> web.Response:
    """One entry's canonical bytes (``ca.logentry``) and leaf hash (auditors)."""
    await authenticate_auditor(request)
    services: Services = request.app[SERVICES]
    idx = count(request.match_info["idx"], MAX_INDEX)
    if idx is None:
        raise InvalidLogQuery("index must be a non-negative integer")
    stored = await services.log.entry(idx)
    if stored is None:
        raise NotFound(f"log entry {idx}")
    return web.json_response(
        {
            "index": stored.idx,
            "kind": stored.kind,
            "record_id": stored.record_id,
            "entry": _b64(stored.entry),
            "leaf_hash": _b64(leaf_hash(stored.entry)),
            "created_at": stored.created_at.isoformat(),
        }
    )


async def list_entries(request: web.Request) -> web.Response:
    """Entries from index ``from`` (default 0) with their decoded fields (auditors).

    Scans at most ``limit`` (1..1000, default 100) integrated entries, so every entry shown
    has an RFC 9162 inclusion proof in the latest tree, and returns those matching
    ``subject``/``issuer``/``client_id`` plus ``next``, the index to continue from. ``next``
    equal to ``tree_size`` means caught up. Refusals match through keyed commitments.
    """
    await authenticate_auditor(request)
    unknown = set(request.query) - _LIST_PARAMS
    if unknown:
        raise InvalidLogQuery(f"unknown query parameters {sorted(unknown)}")
    start = _int(request, "from", 0)
    limit = _int(request, "limit", 100)
    if not 1 <= limit <= MAX_SCAN:
        raise InvalidLogQuery(f"limit must be 1..{MAX_SCAN}")
    q = request.query
    flt = EntryFilter(q.get("subject") or None, q.get("issuer") or None, q.get("client_id") or None)
    services: Services = request.app[SERVICES]
    size = await services.log.integrated_size()
    end = min(size, start + limit) if start < size else start
    window = await services.log.entries_window(start, end) if end > start else []
    items = [d for e in window if (d := describe_entry(e, services.privacy_key, flt))]
    return web.json_response({"items": items, "next": end, "tree_size": size})
