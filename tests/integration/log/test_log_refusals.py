"""Issue 5, "every refused request": signing requests refused before authentication (missing,
malformed, forged or untrusted token; a bad body) are log entries with outcome "refused", a
stable reason and what is known, without attacker-chosen text or the client address in clear;
a flood of bad tokens gives a bounded number of entries plus aggregate entries whose counts add
up to every refusal (signer.policy.refusals)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from ca.logentry import SUPPRESSED_REASON, decode_time, entry_fields, entry_version
from signer.http.kit.refused import REFUSAL_LOG
from signer.http.kit.state import SERVICES
from signer.policy.refusals import RefusalLog, Refused
from signer.storage.refusals import RefusalStore
from tests.support.idp import RunningIdp
from tests.support.service import api_headers


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_token(iss: str) -> str:
    """A well-formed ES256 JWT whose signature is random bytes."""
    header = _b64url(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "x"}).encode())
    claims = _b64url(json.dumps({"iss": iss, "sub": "mallory", "aud": "urn:qes-signer"}).encode())
    return f"{header}.{claims}.{_b64url(os.urandom(64))}"


def tampered(token: str) -> str:
    """The same token with its signature's last bytes changed."""
    head, _, sig = token.rpartition(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    return f"{head}.{_b64url(raw[:-4] + bytes(b ^ 0xFF for b in raw[-4:]))}"


def body(*digests: bytes, **extra: Any) -> dict[str, Any]:
    hashes = [base64.b64encode(d).decode() for d in digests]
    return {"hash_algorithm": "sha256", "hashes": hashes, **extra}


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Any], settings: Any, ca_ready: None
) -> AsyncIterator[Callable[..., Any]]:
    """A signer app with its own log limits and clock (the ``client`` fixture's checks)."""
    from signer.app import create_app

    apps = []

    async def make(clock: Callable[[], datetime], **log: Any) -> TestClient:
        changed = dataclasses.replace(settings, log=dataclasses.replace(settings.log, **log))
        app = create_app(changed, clock=clock)
        apps.append(app)
        return await aiohttp_client(app)  # type: ignore[no-any-return]

    yield make
    for app in apps:
        services = app[SERVICES]
        leftover = await services.hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
        assert leftover == []


async def _entries(database_url: str, start: int) -> list[tuple[int, dict[str, bytes], int]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT idx, entry FROM log_entries WHERE idx >= $1 AND kind = 'refusal' ORDER BY idx",
            start,
        )
    finally:
        await conn.close()
    out = []
    for row in rows:
        entry = bytes(row["entry"])
        out.append((row["idx"], dict(entry_fields(entry)[1]), entry_version(entry)))
    return out


async def _log_size(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT size FROM log_state"))
    finally:
        await conn.close()


async def test_refusals_before_authentication_are_logged_and_searchable(
    make_client: Callable[..., Any],
    batch_token: str,
    auditor_token: str,
    idp: RunningIdp,
    database_url: str,
) -> None:
    client = await make_client(lambda: datetime.now(UTC), refusals_per_source=100_000)
    start = await _log_size(database_url)
    digest = os.urandom(32)
    sent = [
        (None, body(digest, format="cades"), 401, "token.missing"),
        ("not-a-jwt", body(digest), 401, "token.malformed"),
        (tampered(batch_token), body(digest), 401, "token.bad_signature"),
        (forged_token("https://evil.example.com/攻击"), body(digest), 401, "token.unknown_issuer"),
        (batch_token, body(b"short"), 422, "wrong-digest-length"),
    ]
    for token, payload, status, _ in sent:
        headers = api_headers(token) if token else {}
        resp = await client.post("/api/v1/signatures", json=payload, headers=headers)
        assert resp.status == status, await resp.text()
        problem = await resp.json()
        assert resp.content_type == "application/problem+json" and problem["status"] == status
    pdf = await client.post(
        "/api/v1/signatures/pdf",
        data=b"%PDF-1.7 not really",
        headers={**api_headers("not-a-jwt"), "Content-Type": "application/pdf"},
    )
    assert pdf.status == 401

    logged = await _entries(database_url, start)
    assert [f["reason"].decode() for _, f, _ in logged] == [r for *_, r in sent] + [
        "token.malformed"
    ]
    by_reason = {f["reason"].decode(): (idx, f, v) for idx, f, v in logged}
    for _, fields, version in logged:
        assert version == 2 and fields["suppressed"] == b"\0" * 8
        # No verified identity: nothing in the identity fields; the address only committed.
        assert fields["token_issuer"] == fields["issuer_name"] == fields["token_subject"] == b""
        assert len(fields["client_address"]) == 32
    raw_entries = b"".join(  # (the dev IdP's issuer URL is on 127.0.0.1 too)
        value for _, f, _ in logged for name, value in f.items() if name != "claimed_issuer"
    )
    assert b"127.0.0.1" not in raw_entries and b"evil" not in raw_entries
    assert b"mallory" not in raw_entries
    # The unverified iss is kept only when it names a trusted issuer, marked as claimed.
    assert by_reason["token.bad_signature"][1]["claimed_issuer"] == idp.issuer.encode()
    assert by_reason["token.unknown_issuer"][1]["claimed_issuer"] == b""
    assert by_reason["token.missing"][1]["claimed_issuer"] == b""
    # What was asked, when the body was readable: format and the digests' commitment.
    missing = by_reason["token.missing"][1]
    assert missing["signature_format"] == b"cades"
    assert missing["digest_count"] == struct.pack(">Q", 1)
    assert missing["digests_sha256"] == hashlib.sha256(struct.pack(">I", 32) + digest).digest()
    assert by_reason["wrong-digest-length"][1]["digest_count"] == struct.pack(">Q", 0)
    assert by_reason["token.malformed"][1]["signature_format"] == b"pades"  # the PDF upload

    # Text an anonymous caller chose never enters the log: a profile is kept only when real.
    mark = await _log_size(database_url)
    for profile in ("", "evil-profile", "qualified"):
        resp = await client.post("/api/v1/signatures", json=body(digest, profile=profile))
        assert resp.status == 401
    profiles = [f["profile"] for _, f, _ in await _entries(database_url, mark)]
    assert profiles == [b"", b"", b"qualified"]

    # The auditors' log search shows them as refused, with the reason.
    checkpoint = await client.post("/api/v1/log/checkpoints", headers=api_headers(auditor_token))
    assert checkpoint.status in (200, 201)
    page = await client.get(
        f"/api/v1/log/entries?from={start}&limit=1000", headers=api_headers(auditor_token)
    )
    assert page.status == 200
    shown = {item["index"]: item for item in (await page.json())["items"]}
    for idx, fields, _ in logged:
        item = shown[idx]
        assert item["kind"] == "refusal" and item["outcome"] == "refused"
        assert item["reason"] == fields["reason"].decode() and item["suppressed"] == 0
        assert item["issuer"] is None and item["subject"] is None
    assert shown[by_reason["token.bad_signature"][0]]["claimed_issuer"] == idp.issuer
    assert shown[by_reason["token.missing"][0]]["signature_format"] == "cades"


async def test_a_flood_of_bad_tokens_gives_bounded_entries_and_a_count_that_adds_up(
    make_client: Callable[..., Any], database_url: str
) -> None:
    # A window of its own (a week ahead), so other tests' refusals do not share its counters.
    now = [datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)]
    client = await make_client(lambda: now[0], refusals_per_source=5, refusals_total=50)
    refusal_log: RefusalLog = client.app[REFUSAL_LOG]
    window = refusal_log.window_start(now[0])
    start = await _log_size(database_url)

    async def one(i: int) -> int:
        resp = await client.post(
            "/api/v1/signatures",
            json=body(os.urandom(32)),
            headers=api_headers(f"bad-token-{i}"),
        )
        return resp.status

    for chunk in range(0, 1000, 50):
        statuses = await asyncio.gather(*(one(i) for i in range(chunk, chunk + 50)))
        assert set(statuses) == {401}
    singles = [
        f for _, f, _ in await _entries(database_url, start) if f["reason"] == b"token.malformed"
    ]
    assert len(singles) == 5  # bounded: the per-source limit, whatever the flood's size

    now[0] += timedelta(seconds=61)  # the window closes; its aggregate entry is written
    await refusal_log.flush()
    aggregates = [
        f
        for _, f, _ in await _entries(database_url, start)
        if f["reason"] == SUPPRESSED_REASON.encode() and decode_time(f["refused_at"]) == window
    ]
    assert len(aggregates) == 1
    suppressed = int.from_bytes(aggregates[0]["suppressed"], "big")
    assert suppressed == 995 and len(singles) + suppressed == 1000
    address = aggregates[0]["client_address"]  # committed per entry: unlinkable, never in clear
    assert len(address) == 32 and address not in {f["client_address"] for f in singles}
    assert aggregates[0]["digest_count"] == b"\0" * 8
    conn = await asyncpg.connect(database_url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM log_refusal_windows WHERE window_start = $1", window
        )
    finally:
        await conn.close()
    assert left == 0  # the counters (and the address kept for the aggregate) are gone


async def test_per_source_and_all_sources_limits_add_up(
    settings: Any, database_url: str, ca_ready: None
) -> None:
    """Thirty addresses, three refusals each, 2 per address and 50 in all per window: 50
    entries, 25 per-address aggregates of 1 and one all-sources aggregate of 15 (= 90)."""
    from signer.storage.db import create_pool
    from signer.translog.log import load_privacy_key

    at = [datetime.now(UTC).replace(microsecond=0) + timedelta(days=14)]
    limits = dataclasses.replace(settings.log, refusals_per_source=2, refusals_total=50)
    pool = await create_pool(database_url, min_size=1, max_size=2, command_timeout=30)
    try:
        log = RefusalLog(
            store=RefusalStore(pool),
            key=load_privacy_key(settings),
            settings=limits,
            clock=lambda: at[0],
        )
        window = log.window_start(at[0])
        results = [
            await log.log(Refused(f"req-{i}-{n}", "token.expired", f"198.51.100.{i}"))
            for i in range(30)
            for n in range(3)
        ]
        assert sum(r is not None for r in results) == 50
        at[0] += timedelta(seconds=60)
        indexes = await log.flush()  # (also closes any other test's window that has ended)
        rows = await pool.fetch(
            "SELECT entry FROM log_entries WHERE idx = ANY($1::bigint[]) ORDER BY idx", indexes
        )
    finally:
        await pool.close()
    decoded = [dict(entry_fields(bytes(r["entry"]))[1]) for r in rows]
    aggregates = [a for a in decoded if decode_time(a["refused_at"]) == window]
    assert all(a["reason"] == SUPPRESSED_REASON.encode() for a in decoded)
    counts = sorted(
        (int.from_bytes(a["suppressed"], "big"), a["client_address"] != b"") for a in aggregates
    )
    assert counts == [(1, True)] * 25 + [(15, False)]
    assert 50 + sum(c for c, _ in counts) == 90


async def test_refusals_after_authentication_name_who_asked(
    client: TestClient, batch_token: str, database_url: str
) -> None:
    """An Idempotency-Key reused with another body, or malformed, is refused after the token
    verified: logged unlimited, with the verified identity (and its subject index)."""
    key = {"Idempotency-Key": f"refusal-test-{os.urandom(4).hex()}"}
    first = await client.post(
        "/api/v1/signatures", json=body(os.urandom(32)), headers=api_headers(batch_token, **key)
    )
    assert first.status == 201
    start = await _log_size(database_url)
    other = await client.post(
        "/api/v1/signatures", json=body(os.urandom(32)), headers=api_headers(batch_token, **key)
    )
    assert other.status == 422
    bad_key = api_headers(batch_token, **{"Idempotency-Key": "x" * 300})
    malformed = await client.post("/api/v1/signatures", json=body(os.urandom(32)), headers=bad_key)
    assert malformed.status == 422
    logged = await _entries(database_url, start)
    assert [f["reason"] for _, f, _ in logged] == [b"idempotency-key-reused", b"invalid-request"]
    conn = await asyncpg.connect(database_url)
    try:
        keys = await conn.fetch(
            "SELECT subject_key FROM log_entries WHERE idx = ANY($1::bigint[])",
            [idx for idx, _, _ in logged],
        )
    finally:
        await conn.close()
    for _, fields, _ in logged:
        assert fields["issuer_name"] == b"demo_organisations" and fields["claimed_issuer"] == b""
        assert len(fields["token_subject"]) == 32  # a commitment to the verified subject
    assert all(r["subject_key"] is not None for r in keys)
