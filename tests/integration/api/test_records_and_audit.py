"""Idempotency, the certificate records, the auditor API, and the service's meta endpoints."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from cryptography import x509

from tests.support.service import api_headers


def body(*data: bytes) -> dict[str, Any]:
    return {
        "hash_algorithm": "sha256",
        "hashes": [base64.b64encode(hashlib.sha256(d).digest()).decode() for d in data],
    }


async def count_records(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM signing_records"))
    finally:
        await conn.close()


async def test_idempotent_retry_returns_the_same_result(
    client: TestClient, batch_token: str, database_url: str
) -> None:
    key = secrets.token_hex(8)
    headers = api_headers(batch_token, **{"Idempotency-Key": key})
    first = await client.post("/api/v1/signatures", json=body(b"a", b"b"), headers=headers)
    assert first.status == 201
    before = await count_records(database_url)
    again = await client.post("/api/v1/signatures", json=body(b"a", b"b"), headers=headers)
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await first.json()
    assert await count_records(database_url) == before, "a retry made a second certificate"
    other = await client.post("/api/v1/signatures", json=body(b"c"), headers=headers)
    assert other.status == 422
    assert (await other.json(content_type=None))["type"] == "/problems/idempotency-key-reused"


async def test_concurrent_requests_with_one_key_make_one_certificate(
    client: TestClient, batch_token: str, database_url: str
) -> None:
    headers = api_headers(batch_token, **{"Idempotency-Key": secrets.token_hex(8)})
    before = await count_records(database_url)
    responses = await asyncio.gather(
        *[client.post("/api/v1/signatures", json=body(b"same"), headers=headers) for _ in range(5)]
    )
    statuses = sorted(r.status for r in responses)
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {200, 201, 409}
    assert await count_records(database_url) == before + 1


async def test_a_failed_request_frees_its_idempotency_key(
    client: TestClient, batch_token: str, idp: Any
) -> None:
    headers = api_headers(batch_token, **{"Idempotency-Key": secrets.token_hex(8)})
    refused = await client.post(
        "/api/v1/signatures", json={**body(b"z"), "profile": "nope"}, headers=headers
    )
    assert refused.status == 403
    retry = await client.post("/api/v1/signatures", json=body(b"z"), headers=headers)
    assert retry.status == 201


async def test_record_is_complete_and_visible_to_auditors(
    client: TestClient, batch_token: str, auditor_token: str
) -> None:
    signed = await client.post(
        "/api/v1/signatures", json=body(b"one", b"two"), headers=api_headers(batch_token)
    )
    result = await signed.json()
    resp = await client.get(
        f"/api/v1/certificates/{result['serial']}", headers=api_headers(auditor_token)
    )
    assert resp.status == 200
    rec = await resp.json()
    assert rec["status"] == "completed" and rec["signed_count"] == 2
    assert rec["key_destroyed"] is True
    assert rec["destruction"] == {
        "private_destroyed": True,
        "public_destroyed": True,
        "confirmed_absent": True,
    }
    assert rec["key_evidence"]["never_extractable"] is True
    assert rec["identity"]["subject"] == "demo-batch"
    assert rec["identity"]["client_id"] == "demo-batch"
    assert rec["digests"] == body(b"one", b"two")["hashes"]
    cert = x509.load_pem_x509_certificate(rec["certificate"].encode())
    assert int(result["serial"], 16) == cert.serial_number and len(result["serial"]) % 2 == 0
    assert rec["subject_dn"] == cert.subject.rfc4514_string()


async def test_only_auditors_read_records(client: TestClient, batch_token: str) -> None:
    resp = await client.get("/api/v1/certificates", headers=api_headers(batch_token))
    assert resp.status == 403
    assert (await resp.json(content_type=None))["type"] == "/problems/auditor-role-required"
    resp = await client.get("/api/v1/certificates")
    assert resp.status == 401


async def test_filters_and_cursor_pagination(
    client: TestClient, batch_token: str, alice_token: str, auditor_token: str
) -> None:
    start = datetime.now(UTC)
    serials = []
    for token in (batch_token, alice_token, batch_token, batch_token):
        resp = await client.post("/api/v1/signatures", json=body(b"p"), headers=api_headers(token))
        serials.append((await resp.json())["serial"])
    auditor = api_headers(auditor_token)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"subject": "demo-batch", "since": start.isoformat(), "limit": "2"}
        if cursor:
            params["cursor"] = cursor
        page = await (
            await client.get("/api/v1/certificates", params=params, headers=auditor)
        ).json()
        seen += [item["serial"] for item in page["items"]]
        assert all(item["identity"]["subject"] == "demo-batch" for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [serials[3], serials[2], serials[0]]  # newest first, alice filtered out
    alice = await (
        await client.get(
            "/api/v1/certificates",
            headers=auditor,
            params={"subject": "alice", "since": start.isoformat()},
        )
    ).json()
    assert [i["serial"] for i in alice["items"]] == [serials[1]]
    assert (
        alice["items"][0]["subject_dn"].startswith("2.5.4.5=PNODE-1234567890")
        or "PNODE-1234567890" in alice["items"][0]["subject_dn"]
    )
    assert alice["items"][0]["email"] == "alice@example.com"
    by_email = await (
        await client.get(
            "/api/v1/certificates",
            headers=auditor,
            params={"email": "Alice@Example.COM", "since": start.isoformat()},
        )
    ).json()
    assert [i["serial"] for i in by_email["items"]] == [serials[1]]
    by_serial = await (
        await client.get("/api/v1/certificates", headers=auditor, params={"serial": serials[2]})
    ).json()
    assert [i["serial"] for i in by_serial["items"]] == [serials[2]]


async def test_bad_audit_queries(client: TestClient, auditor_token: str) -> None:
    auditor = api_headers(auditor_token)
    for params in (
        {"since": "yesterday"},
        {"limit": "0"},
        {"cursor": "%%%"},
        {"since": "2026-01-01T00:00:00"},
        {"colour": "red"},
    ):
        resp = await client.get("/api/v1/certificates", params=params, headers=auditor)
        assert resp.status == 422, params
    resp = await client.get("/api/v1/certificates/abcdef0123", headers=auditor)
    assert resp.status == 404


async def test_health_readiness_and_openapi(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"database": "ok", "hsm": "ok"}
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"] == "3.1.0"
    post = doc["paths"]["/api/v1/signatures"]["post"]
    for status in ("201", "400", "401", "403", "413", "415", "422", "503"):
        assert status in post["responses"], status
    problem = await client.get("/problems/wrong-digest-length")
    assert problem.status == 200 and "digest" in await problem.text()


async def test_ca_files_are_published(client: TestClient, batch_token: str) -> None:
    issuing = x509.load_der_x509_certificate(await (await client.get("/ca/issuing.cer")).read())
    root = x509.load_der_x509_certificate(await (await client.get("/ca/root.cer")).read())
    issuing.verify_directly_issued_by(root)
    crl = x509.load_der_x509_crl(await (await client.get("/ca/root.crl")).read())
    assert crl.is_signature_valid(root.public_key())
    assert crl.get_revoked_certificate_by_serial_number(issuing.serial_number) is None


async def test_key_held_by_a_dead_request_is_taken_over(
    client: TestClient, batch_token: str, database_url: str
) -> None:
    """A process that died mid-request leaves its Idempotency-Key unanswered; after
    ABANDONED_AFTER a retry runs instead of getting 409 forever."""
    key = secrets.token_hex(8)
    payload = body(b"orphan")
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO idempotency_keys (token_issuer, token_subject, key, body_sha256,"
            " created_at) VALUES ($1, 'demo-batch', $2, $3, now() - interval '1 minute')",
            client_issuer(batch_token),
            key,
            hashlib.sha256(canonical).digest(),
        )
        headers = api_headers(batch_token, **{"Idempotency-Key": key})
        busy = await client.post("/api/v1/signatures", json=payload, headers=headers)
        assert busy.status == 409
        await conn.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '3 minutes' WHERE key = $1",
            key,
        )
        retried = await client.post("/api/v1/signatures", json=payload, headers=headers)
        assert retried.status == 201
    finally:
        await conn.close()


async def test_expired_token_ids_are_purged(database_url: str) -> None:
    from signer.storage.db import create_pool
    from signer.storage.records import RecordStore

    pool = await create_pool(database_url, min_size=1, max_size=1, command_timeout=5)
    try:
        store = RecordStore(pool)
        now = datetime.now(UTC)
        jti = secrets.token_hex(8)
        assert await store.first_use("https://idp.example.com", jti, now - timedelta(hours=1))
        assert not await store.first_use("https://idp.example.com", jti, now)
        assert await store.purge_replay(now) >= 1
        assert await store.first_use("https://idp.example.com", jti, now)
    finally:
        await pool.close()


def client_issuer(token: str) -> str:
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return str(claims["iss"])
