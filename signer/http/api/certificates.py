"""``GET /api/v1/certificates[/{serial}]``: the issued-certificate inventory for auditors."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signer.http.kit.auth import authenticate_auditor
from signer.http.kit.problems import InvalidRequest, NotFound
from signer.http.kit.state import SERVICES, Services
from signer.signing.timestamping import gen_time
from signer.storage.records import Cursor, RecordFilter, SigningRecord

MAX_PAGE = 500
_FILTERS = {
    "subject": "subject",
    "issuer": "issuer",
    "client_id": "client_id",
    "serial": "serial",
    "status": "status",
    "email": "email",
}


def summary(rec: SigningRecord) -> dict[str, Any]:
    return {
        "serial": rec.serial,
        "status": rec.status,
        "created_at": rec.created_at.isoformat(),
        "completed_at": rec.completed_at.isoformat() if rec.completed_at else None,
        "subject_dn": rec.subject_dn,
        "email": rec.email,
        "identity": {
            "issuer": rec.token_issuer,
            "issuer_name": rec.issuer_name,
            "subject": rec.token_subject,
            "client_id": rec.client_id,
            "subject_type": rec.subject_type,
        },
        "profile": rec.profile,
        "not_before": rec.not_before.isoformat(),
        "not_after": rec.not_after.isoformat(),
        "hash_algorithm": rec.hash_algorithm,
        "signature_format": rec.signature_format,
        "digest_count": len(rec.digests),
        "signed_count": rec.signed_count,
        "key_evidence": dict(rec.key_evidence),
        "key_destroyed": bool(rec.destruction and rec.destruction.get("confirmed_absent")),
        "failure": rec.failure,
        "purged": rec.purged,
    }


def detail(rec: SigningRecord) -> dict[str, Any]:
    body = summary(rec)
    body["certificate"] = None
    if not rec.purged:
        cert = x509.load_der_x509_certificate(rec.certificate_der)
        body["certificate"] = cert.public_bytes(Encoding.PEM).decode()
    body["digests"] = [base64.b64encode(d).decode() for d in rec.digests]
    body["destruction"] = dict(rec.destruction) if rec.destruction else None
    body["request_id"] = rec.request_id
    body["time_stamps"] = [
        {"gen_time": gen_time(token).isoformat(), "token": base64.b64encode(token).decode()}
        for token in rec.time_stamps
    ]
    return body


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRequest(f"{name} is not an ISO 8601 time") from exc
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{name} needs a time zone offset")
    return parsed


def encode_cursor(rec: SigningRecord) -> str:
    raw = json.dumps([rec.created_at.isoformat(), str(rec.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        created, ident = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return Cursor(datetime.fromisoformat(created), uuid.UUID(ident))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidRequest("cursor is invalid") from exc


def _limit(text: str | None) -> int:
    if text is None:
        return 50
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidRequest(f"limit must be 1..{MAX_PAGE}")
    return int(text)


async def list_certificates(request: web.Request) -> web.Response:
    await authenticate_auditor(request)
    q = request.query
    unknown = set(q) - {*_FILTERS, "since", "until", "limit", "cursor"}
    if unknown:
        raise InvalidRequest(f"unknown query parameters {sorted(unknown)}")
    given: dict[str, Any] = {field: q.get(param) for param, field in _FILTERS.items()}
    flt = RecordFilter(
        **given,
        since=_time("since", q.get("since")),
        until=_time("until", q.get("until")),
    )
    limit = _limit(q.get("limit"))
    after = decode_cursor(q["cursor"]) if "cursor" in q else None
    services: Services = request.app[SERVICES]
    rows = await services.records.search(flt, limit=limit + 1, after=after)
    page = rows[:limit]
    body: dict[str, Any] = {
        "items": [summary(r) for r in page],
        "next_cursor": encode_cursor(page[-1]) if len(rows) > limit else None,
    }
    if flt.email is not None and (before := await services.records.emails_unknown_before()):
        body["notice"] = email_notice(before)
    return web.json_response(body)


def email_notice(before: datetime) -> str:
    """Said with an e-mail search while older records' e-mails are still being filled in."""
    return (
        f"E-mail not recorded yet for records created before {before.isoformat()}: it is being"
        " read from their certificates (signer.translog.backfill, at the service's start);"
        " until then an e-mail search may miss them. Search them by identity, name or serial."
    )


async def show_certificate(request: web.Request) -> web.Response:
    await authenticate_auditor(request)
    serial = request.match_info["serial"].lower()
    services: Services = request.app[SERVICES]
    rec = await services.records.get(serial)
    if rec is None:
        raise NotFound(f"no certificate with serial {serial}")
    return web.json_response(detail(rec))
