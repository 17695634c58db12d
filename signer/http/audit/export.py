"""Exports of one search: JSON Lines or CSV, every page, and the manifest that describes one.

An export is pinned to an ``as_of`` time (rows created before it only), so the manifest, made by
a second request with the same query, hashes the same rows as the download it describes as long
as none of them changes state in between (records still ``issued`` may complete later).
The manifest names the transparency log's signed checkpoint published (integrating everything
sequenced) just before the rows are hashed: every finished record of the export has its log
entry inside that tree. The manifest is signed with the log key as a C2SP signed note whose
first line is ``<origin>/export`` (:mod:`signer.translog.manifest` says why that key and that line);
``qes audit verify --export FILE --manifest FILE`` checks it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from signer.http.kit.records import summary
from signer.storage.log import StoredCheckpoint
from signer.storage.records import Cursor, RecordFilter, RecordStore, SigningRecord
from signer.translog.manifest import sign_manifest

PAGE = 500
FORMATS = {"jsonl": "application/jsonl", "csv": "text/csv"}
CSV_COLUMNS = (
    "serial",
    "status",
    "created_at",
    "completed_at",
    "issuer",
    "subject",
    "client_id",
    "subject_dn",
    "profile",
    "not_before",
    "not_after",
    "hash_algorithm",
    "signature_format",
    "digest_count",
    "signed_count",
    "key_evidence",
    "key_destroyed",
    "failure",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def pinned(flt: RecordFilter, as_of: datetime) -> RecordFilter:
    until = as_of if flt.until is None else min(flt.until, as_of)
    return replace(flt, until=until)


async def records(store: RecordStore, flt: RecordFilter) -> AsyncIterator[SigningRecord]:
    """Every matching record, newest first, a keyset page at a time."""
    after = None
    while True:
        page = await store.search(flt, limit=PAGE, after=after)
        for rec in page:
            yield rec
        if len(page) < PAGE:
            return
        last = page[-1]
        after = Cursor(last.created_at, last.id)


def json_line(rec: SigningRecord) -> bytes:
    body = summary(rec)
    body["digests"] = [d.hex() for d in rec.digests]
    return (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode()


def safe_cell(value: Any) -> str:
    """OWASP CSV injection: a cell a spreadsheet would run as a formula starts with ``'``."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(values: Any) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([safe_cell(v) for v in values])
    return out.getvalue().encode()


def csv_record(rec: SigningRecord) -> bytes:
    s = summary(rec)
    evidence = ";".join(f"{k}={'yes' if v else 'no'}" for k, v in sorted(s["key_evidence"].items()))
    return csv_row(
        [
            s["serial"],
            s["status"],
            s["created_at"],
            s["completed_at"],
            s["identity"]["issuer"],
            s["identity"]["subject"],
            s["identity"]["client_id"],
            s["subject_dn"],
            s["profile"],
            s["not_before"],
            s["not_after"],
            s["hash_algorithm"],
            s["signature_format"],
            s["digest_count"],
            s["signed_count"],
            evidence,
            "yes" if s["key_destroyed"] else "no",
            s["failure"],
        ]
    )


Encoder = Callable[[SigningRecord], bytes]
ENCODERS: Mapping[str, tuple[bytes, Encoder]] = {
    "jsonl": (b"", json_line),
    "csv": (csv_row(CSV_COLUMNS), csv_record),
}


async def chunks(store: RecordStore, flt: RecordFilter, fmt: str) -> AsyncIterator[bytes]:
    header, encode = ENCODERS[fmt]
    if header:
        yield header
    async for rec in records(store, flt):
        yield encode(rec)


async def manifest(
    store: RecordStore,
    flt: RecordFilter,
    fmt: str,
    *,
    query: Mapping[str, str],
    as_of: datetime,
    now: datetime,
    checkpoint: StoredCheckpoint | None,
) -> dict[str, Any]:
    """What an export of ``fmt`` with these filters contains: its SHA-256 and row count."""
    sha, rows = hashlib.sha256(), 0
    header, encode = ENCODERS[fmt]
    sha.update(header)
    async for rec in records(store, flt):
        sha.update(encode(rec))
        rows += 1
    return {
        "format": fmt,
        "media_type": FORMATS[fmt],
        "sha256": sha.hexdigest(),
        "rows": rows,
        "filters": dict(query),
        "as_of": as_of.isoformat(),
        "generated_at": now.isoformat(),
        "checkpoint": None
        if checkpoint is None
        else {
            "size": checkpoint.size,
            "root_hash": base64.b64encode(checkpoint.root).decode(),
            "note": checkpoint.note,
        },
    }


async def signed_manifest(
    body: Mapping[str, Any],
    *,
    exported_by: Mapping[str, str],
    origin: str,
    sign: Callable[[str], Awaitable[str]],
) -> dict[str, Any]:
    """A :func:`manifest` ``body`` plus who exported, signed as a note of the log key
    (``signed_note``)."""
    return await sign_manifest({**body, "exported_by": dict(exported_by)}, origin, sign)
