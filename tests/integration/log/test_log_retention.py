"""Retention and data-subject requests (issue 5; GDPR Art. 15, 17): `qes audit subject` finds a
person's records with their log indexes, and refusals through keyed commitments; the lookup is
an index scan on a table with many rows; `qes audit purge` refuses dates inside the retention,
erases personal payload, and `qes audit verify` still verifies the log, reporting tombstones and
catching an altered one."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from signer.storage.retention import SUBJECT_RECORDS, SUBJECT_REFUSALS, RetentionStore
from signer.translog import retention
from tests.support.service import DEV_CONFIG, api_headers, run_qes, sign_random


async def qes(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    return await run_qes("audit", *args, "--config", str(DEV_CONFIG), env=env)


async def test_subject_request_lists_records_entries_and_refusals(
    client: TestClient,
    alice_token: str,
    batch_token: str,
    signer_env: dict[str, str],
    idp: Any,
) -> None:
    first = await sign_random(client, alice_token)
    refused = await sign_random(client, alice_token, profile="no-such-profile")
    second = await sign_random(client, alice_token)
    batch = await sign_random(client, batch_token)
    assert (first[0], refused[0], second[0], batch[0]) == (201, 403, 201, 201)
    refusal_index = first[1]["log"]["index"] + 1
    assert second[1]["log"]["index"] == refusal_index + 1

    code, out, err = await qes(signer_env, "subject", "--subject", "alice", "--json")
    assert code == 0, err
    report = json.loads(out)
    found = {r["serial"]: r["log_index"] for r in report["records"]}
    assert found[first[1]["serial"]] == first[1]["log"]["index"]
    assert found[second[1]["serial"]] == second[1]["log"]["index"]
    assert batch[1]["serial"] not in found
    assert all(r["subject_dn"] for r in report["records"])
    refusals = [r["index"] for r in report["refusals"]]
    assert refusal_index in refusals
    assert all(r["subject"] == "alice" and r["outcome"] == "refused" for r in report["refusals"])

    code, out, _ = await qes(signer_env, "subject", "--subject", "demo-batch", "--json")
    assert code == 0
    assert refusal_index not in [r["index"] for r in json.loads(out)["refusals"]]
    code, out, _ = await qes(
        signer_env, "subject", "--subject", "alice", "--issuer", "https://other.example.com"
    )
    assert code == 0
    assert out.startswith("0 signing record(s) of alice") and "\n0 refused request(s)" in out
    code, out, _ = await qes(signer_env, "subject", "--subject", "alice", "--issuer", idp.issuer)
    assert code == 0 and first[1]["serial"] in out and f"log index {refusal_index}" in out


async def test_subject_lookup_is_an_index_scan(database_url: str) -> None:
    """With 20,000 other people's records and 20,000 other refusals (rolled back afterwards)
    the planner finds one person's entries through the subject index (log_entries_subject),
    their records through the primary key, never by scanning, and answers in milliseconds."""
    conn = await asyncpg.connect(database_url)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(
                "INSERT INTO signing_records (id, serial, status, request_id, created_at,"
                " token_issuer, issuer_name, token_subject, profile, subject_type, subject_dn,"
                " not_before, not_after, certificate, key_evidence, hash_algorithm, digests)"
                " SELECT gen_random_uuid(), 'dsr-' || g, 'completed', 'r', now(), 'iss', 'n',"
                " 'person-' || g, 'advanced', 'natural', 'CN=x', now(), now(), '\\x30'::bytea,"
                " '{}'::jsonb, 'sha256', '{}' FROM generate_series(1, 20000) AS g"
            )
            # Stand-in keys (the index does not care how they were computed; the HMAC path
            # is covered end to end above): sha256 of the subject.
            await conn.execute(
                "INSERT INTO log_entries (idx, kind, record_id, entry, leaf_hash, subject_key)"
                " SELECT 1000000000000 + row_number() OVER (), 'issuance', id, '\\x00'::bytea,"
                " '\\x00'::bytea, sha256(convert_to(token_subject, 'UTF8'))"
                " FROM signing_records WHERE serial LIKE 'dsr-%'"
            )
            await conn.execute(
                "INSERT INTO log_entries (idx, kind, entry, leaf_hash, subject_key)"
                " SELECT 2000000000000 + g, 'refusal', '\\x00'::bytea, '\\x00'::bytea,"
                " sha256(convert_to('person-' || g, 'UTF8')) FROM generate_series(1, 20000) AS g"
            )
            await conn.execute("ANALYZE signing_records")
            await conn.execute("ANALYZE log_entries")
            key = [hashlib.sha256(b"person-42").digest()]
            for sql, args in (
                (SUBJECT_RECORDS, (key, "person-42", None)),
                (SUBJECT_REFUSALS, (key,)),
            ):
                rows = await conn.fetch("EXPLAIN " + sql, *args)
                plan = "\n".join(r[0] for r in rows)
                assert "log_entries_subject" in plan, plan
                assert "Seq Scan" not in plan, plan
            started = time.perf_counter()
            found = await conn.fetch(SUBJECT_RECORDS, key, "person-42", None)
            refused = await conn.fetch(SUBJECT_REFUSALS, key)
            elapsed = time.perf_counter() - started
            assert [r["serial"] for r in found] == ["dsr-42"] and found[0]["idx"] is not None
            assert [r["idx"] for r in refused] == [2000000000042]
            assert elapsed < 0.5, elapsed  # milliseconds on an idle machine; generous here
        finally:
            await tx.rollback()
    finally:
        await conn.close()


#: What a purge erases from approval requests, decisions and admin actions (put back as is).
_APPROVAL_PAYLOAD = (
    "token_subject, client_id, display_name, principal, digests, labels, reason, pdf,"
    " pdf_reserved_start, pdf_reserved_end, signed_pdf, result, webhook_url, webhook_secret_hash"
)
_DECISION_PAYLOAD = "token_subject, email, display_name"
_ACTION_PAYLOAD = "token_subject, client_id, reason, actor_subject"


def _set(columns: str, first: int = 2) -> str:
    names = [c.strip() for c in columns.split(",")]
    return ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=first))


class Snapshot:
    """Every record's payload, time-stamp token and stored response, and the payload of every
    approval request, decision and admin action, saved by :meth:`take` and put back by
    :meth:`restore`, so the purge below does not leak into other tests."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.saved: tuple[list[Any], list[Any], list[Any], list[Any]] | None = None
        self.approvals: tuple[list[Any], list[Any], list[Any]] | None = None

    async def take(self) -> None:
        self.saved = (
            await self.pool.fetch(
                "SELECT id, token_subject, client_id, subject_dn, certificate, digests"
                " FROM signing_records WHERE octet_length(certificate) > 0"
            ),
            await self.pool.fetch("SELECT record_id, position, token FROM signature_time_stamps"),
            await self.pool.fetch(
                "SELECT token_issuer, token_subject, key, body_sha256, created_at, record_id,"
                " response FROM idempotency_keys WHERE record_id IS NOT NULL"
            ),
            await self.pool.fetch(
                "SELECT idx, subject_key FROM log_entries WHERE subject_key IS NOT NULL"
            ),
        )
        self.approvals = (
            await self.pool.fetch(
                f"SELECT id, {_APPROVAL_PAYLOAD} FROM approval_requests"  # noqa: S608
                " WHERE purged_at IS NULL"
            ),
            await self.pool.fetch(
                "SELECT d.id, d.token_subject, d.email, d.display_name"
                " FROM approval_decisions AS d JOIN approval_requests AS r"
                " ON r.id = d.approval_request WHERE r.purged_at IS NULL"
            ),
            await self.pool.fetch(
                f"SELECT id, {_ACTION_PAYLOAD} FROM admin_actions"  # noqa: S608
                " WHERE purged_at IS NULL"
            ),
        )

    async def restore(self) -> None:
        if self.saved is None:
            return
        records, stamps, keys, subject_keys = self.saved
        await self.pool.executemany(
            "UPDATE signing_records SET token_subject = $2, client_id = $3, subject_dn = $4,"
            " certificate = $5, digests = $6 WHERE id = $1",
            [tuple(r) for r in records],
        )
        await self.pool.executemany(
            "INSERT INTO signature_time_stamps (record_id, position, token) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            [tuple(r) for r in stamps],
        )
        await self.pool.executemany(
            "INSERT INTO idempotency_keys (token_issuer, token_subject, key, body_sha256,"
            " created_at, record_id, response) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT DO NOTHING",
            [tuple(r) for r in keys],
        )
        await self.pool.executemany(
            "UPDATE log_entries SET subject_key = $2 WHERE idx = $1",
            [tuple(r) for r in subject_keys],
        )
        if self.approvals is None:
            return
        requests, decisions, actions = self.approvals
        await self.pool.executemany(
            f"UPDATE approval_requests SET purged_at = NULL, {_set(_APPROVAL_PAYLOAD)}"  # noqa: S608
            " WHERE id = $1",
            [tuple(r) for r in requests],
        )
        await self.pool.executemany(
            f"UPDATE approval_decisions SET {_set(_DECISION_PAYLOAD)} WHERE id = $1",  # noqa: S608
            [tuple(r) for r in decisions],
        )
        await self.pool.executemany(
            f"UPDATE admin_actions SET purged_at = NULL, {_set(_ACTION_PAYLOAD)}"  # noqa: S608
            " WHERE id = $1",
            [tuple(r) for r in actions],
        )


@pytest.fixture
async def snapshot(database_url: str) -> AsyncIterator[Snapshot]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    saved = Snapshot(pool)
    try:
        yield saved
    finally:
        try:
            await saved.restore()
        finally:
            await pool.close()


async def test_purge_respects_retention_and_the_log_still_verifies(
    client: TestClient,
    alice_token: str,
    auditor_token: str,
    signer_env: dict[str, str],
    snapshot: Snapshot,
) -> None:
    status, signed = await sign_random(client, alice_token)
    assert status == 201
    await client.post("/api/v1/log/checkpoints", headers=api_headers(auditor_token))
    await snapshot.take()
    restorable = snapshot.pool

    today = datetime.now(UTC).date().isoformat()
    code, out, err = await qes(signer_env, "purge", "--before", today)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "2557-day retention" in err
    code, _, err = await qes(signer_env, "purge", "--before", "yesterday")
    assert code == 1 and "not an ISO 8601 date" in err
    assert (
        await restorable.fetchval("SELECT count(*) FROM signing_records WHERE certificate = ''")
        == 0
    )

    # Eight years on (time injected, as the service injects its clock), everything so far goes.
    now = datetime.now(UTC)
    store = RetentionStore(restorable)
    with pytest.raises(retention.RetentionRefused):
        await retention.purge(store, now, now=now + timedelta(days=2556), retention_days=2557)
    key_of_entry = "SELECT subject_key FROM log_entries WHERE idx = $1"
    assert await restorable.fetchval(key_of_entry, signed["log"]["index"]) is not None
    purged = await retention.purge(
        store, now + timedelta(seconds=1), now=now + timedelta(days=2558), retention_days=2557
    )
    assert purged.records >= 1
    # The subject index goes with the rest of the personal data, for records and refusals.
    assert await restorable.fetchval(key_of_entry, signed["log"]["index"]) is None
    assert (
        await restorable.fetchval(
            "SELECT count(*) FROM log_entries WHERE subject_key IS NOT NULL AND created_at < $1",
            now,
        )
        == 0
    )
    shown = await client.get(
        f"/api/v1/certificates/{signed['serial']}", headers=api_headers(auditor_token)
    )
    record = await shown.json()
    assert record["purged"] is True and record["certificate"] is None
    assert record["identity"]["subject"] == "" and record["subject_dn"] == ""
    assert record["digests"] == [] and record["time_stamps"] == []

    code, out, err = await qes(signer_env, "verify", "-q")
    assert code == 0, err
    tombstones = await restorable.fetchval(  # approval and admin tombstones count too
        "SELECT (SELECT count(*) FROM log_entries AS e JOIN signing_records AS r"
        "         ON r.id = e.record_id WHERE r.certificate = '')"
        "     + (SELECT count(*) FROM approval_decisions AS d JOIN approval_requests AS r"
        "         ON r.id = d.approval_request WHERE r.purged_at IS NOT NULL)"
        "     + (SELECT count(*) FROM admin_actions WHERE purged_at IS NOT NULL)"
    )
    assert f"({tombstones} purged: fields not compared)" in out and tombstones >= 1

    code, out, _ = await qes(signer_env, "subject", "--subject", "alice", "--json")
    assert code == 0 and json.loads(out)["records"] == []

    # A tombstone is still bound to its entry: altering what it keeps is caught.
    idx = signed["log"]["index"]
    await restorable.execute(
        "UPDATE signing_records SET signed_count = signed_count + 1 WHERE serial = $1",
        signed["serial"],
    )
    try:
        code, _, err = await qes(signer_env, "verify", "-q")
    finally:
        await restorable.execute(
            "UPDATE signing_records SET signed_count = signed_count - 1 WHERE serial = $1",
            signed["serial"],
        )
    assert code == 1
    assert f"entry {idx}: does not match purged signing record" in err
    assert "signed_count" in err
