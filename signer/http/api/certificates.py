"""``GET /api/v1/certificates[/{serial}]``: the issued-certificate inventory for auditors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from signer.http.kit.auth import authenticate_auditor
from signer.http.kit.problems import InvalidRequest, NotFound
from signer.http.kit.query import count, instant
from signer.http.kit.records import decode_cursor, detail, email_notice, encode_cursor, summary
from signer.http.kit.state import SERVICES, Services
from signer.storage.records import RecordFilter

MAX_PAGE = 500
_FILTERS = {
    "subject": "subject",
    "issuer": "issuer",
    "client_id": "client_id",
    "serial": "serial",
    "status": "status",
    "email": "email",
}


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = instant(value)
    if parsed is None:
        raise InvalidRequest(f"{name} is not an ISO 8601 time with an offset, in range")
    return parsed


def _limit(text: str | None) -> int:
    if text is None:
        return 50
    value = count(text, MAX_PAGE)
    if value is None or value < 1:
        raise InvalidRequest(f"limit must be 1..{MAX_PAGE}")
    return value


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


async def show_certificate(request: web.Request) -> web.Response:
    await authenticate_auditor(request)
    serial = request.match_info["serial"].lower()
    services: Services = request.app[SERVICES]
    rec = await services.records.get(serial)
    if rec is None:
        raise NotFound(f"no certificate with serial {serial}")
    return web.json_response(detail(rec))
