"""`qes audit verify` on the service's database: an untouched log verifies; altering, deleting,
inserting or reordering a log row, or altering a signing record an entry commits to, makes it
exit non-zero and name the entry. Each tamper is undone before the next one."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from signer.storage.log import INTEGRATOR_LOCK
from tests.support.service import DEV_CONFIG, ROOT, api_headers


def qes_audit_verify(
    env: dict[str, str], config: Path = DEV_CONFIG
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer", "audit", "verify", "--config", str(config), "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        check=False,
        timeout=120,
    )


@pytest.fixture
async def logged(
    client: TestClient, batch_token: str, auditor_token: str, database_url: str
) -> AsyncIterator[tuple[asyncpg.Connection, int]]:
    """A log with at least a few signed requests, one refusal and a checkpoint over all of it;
    the returned connection holds the integrator lock, so no background integration races the
    tampering."""
    for profile in (None, "no-such-profile", None, None):
        body = {"hash_algorithm": "sha256", "hashes": [base64.b64encode(os.urandom(32)).decode()]}
        if profile:
            body["profile"] = profile
        await client.post("/api/v1/signatures", json=body, headers=api_headers(batch_token))
    resp = await client.post("/api/v1/log/checkpoints", headers=api_headers(auditor_token))
    assert resp.status in (200, 201)
    conn = await asyncpg.connect(database_url)
    await conn.execute("SELECT pg_advisory_lock($1)", INTEGRATOR_LOCK)
    size = await conn.fetchval("SELECT size FROM log_state")
    try:
        yield conn, size
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", INTEGRATOR_LOCK)
        await conn.close()


async def _tampered(
    env: dict[str, str],
    conn: asyncpg.Connection,
    tamper: Callable[[], Awaitable[None]],
    undo: Callable[[], Awaitable[None]],
) -> str:
    await tamper()
    try:
        result = qes_audit_verify(env)
    finally:
        await undo()
    assert result.returncode == 1, result.stdout
    return result.stderr.strip()


async def test_tampering_is_caught_and_names_the_entry(
    logged: tuple[asyncpg.Connection, int], client: TestClient, signer_env: dict[str, str]
) -> None:
    conn, size = logged
    env = signer_env  # carries the run's QES_LOG_PRIVACY_KEY, as every signer process's does
    clean = qes_audit_verify(env)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith(f"log verified: {size} entries")

    k = size - 3  # an issuance entry or the refusal, well inside the checkpoint
    row = await conn.fetchrow("SELECT * FROM log_entries WHERE idx = $1", k)
    issued = await conn.fetchrow(
        "SELECT idx, record_id FROM log_entries WHERE kind = 'issuance' ORDER BY idx DESC LIMIT 1"
    )

    async def alter() -> None:
        # Flip the last byte (still a well-formed entry) and recompute the leaf hash to match.
        await conn.execute(
            "UPDATE log_entries SET entry = set_byte(entry, length(entry) - 1,"
            " get_byte(entry, length(entry) - 1) # 1) WHERE idx = $1",
            k,
        )
        await conn.execute(
            "UPDATE log_entries SET leaf_hash = sha256('\\x00'::bytea || entry) WHERE idx = $1", k
        )

    async def restore() -> None:
        await conn.execute(
            "UPDATE log_entries SET entry = $2, leaf_hash = $3 WHERE idx = $1",
            k,
            row["entry"],
            row["leaf_hash"],
        )

    message = await _tampered(env, conn, alter, restore)
    assert f"entry {k}:" in message

    async def delete() -> None:
        await conn.execute("DELETE FROM log_entries WHERE idx = $1", k)

    async def reinsert() -> None:
        await conn.execute(
            "INSERT INTO log_entries (idx, kind, record_id, entry, leaf_hash, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            *(row[c] for c in ("idx", "kind", "record_id", "entry", "leaf_hash", "created_at")),
        )

    message = await _tampered(env, conn, delete, reinsert)
    assert f"entry {k}: is missing" in message

    async def swap() -> None:  # reorder: entries k and k+1 trade places
        async with conn.transaction():
            await conn.execute("UPDATE log_entries SET idx = $2 WHERE idx = $1", k, 2**62)
            await conn.execute("UPDATE log_entries SET idx = $2 WHERE idx = $1", k + 1, k)
            await conn.execute("UPDATE log_entries SET idx = $2 WHERE idx = $1", 2**62, k + 1)

    message = await _tampered(env, conn, swap, swap)
    assert f"entry {k}:" in message

    async def insert_middle() -> None:  # a forged refusal at k, later rows shifted up
        async with conn.transaction():
            await conn.execute("UPDATE log_entries SET idx = idx + $2 WHERE idx >= $1", k, 2**40)
            await conn.execute("UPDATE log_entries SET idx = idx - $1 + 1 WHERE idx >= $1", 2**40)
            await conn.execute(
                "INSERT INTO log_entries (idx, kind, entry, leaf_hash) SELECT $1, 'refusal', e,"
                " sha256('\\x00'::bytea || e) FROM (SELECT set_byte(entry, length(entry) - 1,"
                " get_byte(entry, length(entry) - 1) # 1) AS e FROM log_entries"
                " WHERE kind = 'refusal' LIMIT 1) AS forged",
                k,
            )
            await conn.execute("UPDATE log_state SET size = size + 1")

    async def remove_middle() -> None:
        async with conn.transaction():
            await conn.execute("DELETE FROM log_entries WHERE idx = $1", k)
            await conn.execute("UPDATE log_entries SET idx = idx + $2 WHERE idx > $1", k, 2**40)
            await conn.execute("UPDATE log_entries SET idx = idx - $1 - 1 WHERE idx >= $1", 2**40)
            await conn.execute("UPDATE log_state SET size = size - 1")

    message = await _tampered(env, conn, insert_middle, remove_middle)
    assert f"entry {k}:" in message

    async def append_forged() -> None:  # at the end, without taking a sequence number
        await conn.execute(
            "INSERT INTO log_entries (idx, kind, entry, leaf_hash) VALUES ($1, 'refusal', $2, $3)",
            size,
            row["entry"],
            row["leaf_hash"],
        )

    async def drop_forged() -> None:
        await conn.execute("DELETE FROM log_entries WHERE idx = $1", size)

    message = await _tampered(env, conn, append_forged, drop_forged)
    assert f"entry {size}: is beyond the sequenced log size" in message

    record = await conn.fetchrow(
        "SELECT token_subject, signed_count FROM signing_records WHERE id = $1",
        issued["record_id"],
    )

    async def alter_record() -> None:
        await conn.execute(
            "UPDATE signing_records SET token_subject = 'someone-else' WHERE id = $1",
            issued["record_id"],
        )

    async def restore_record() -> None:
        await conn.execute(
            "UPDATE signing_records SET token_subject = $2 WHERE id = $1",
            issued["record_id"],
            record["token_subject"],
        )

    message = await _tampered(env, conn, alter_record, restore_record)
    assert f"entry {issued['idx']}: does not match signing record" in message
    assert "token_subject" in message

    again = qes_audit_verify(env)
    assert again.returncode == 0, again.stderr


async def test_time_stamp_tokens_and_format_are_bound_to_the_entry(
    client: TestClient,
    batch_token: str,
    auditor_token: str,
    database_url: str,
    signer_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Entry version 2: a CAdES request's entry commits to its format and to its signature's
    RFC 3161 token (parsed by OpenSSL here, so it is a real one). Changing the token, dropping
    it, or changing the record's format makes `qes audit verify` name the entry."""
    digest = os.urandom(32)
    body = {
        "hash_algorithm": "sha256",
        "hashes": [base64.b64encode(digest).decode()],
        "format": "cades",
    }
    resp = await client.post("/api/v1/signatures", json=body, headers=api_headers(batch_token))
    assert resp.status == 201, await resp.text()
    signed = await resp.json()
    idx = signed["log"]["index"]
    record = await client.get(
        f"/api/v1/certificates/{signed['serial']}", headers=api_headers(auditor_token)
    )
    token = base64.b64decode((await record.json())["time_stamps"][0]["token"])
    (tmp_path / "token.der").write_bytes(token)
    shown = subprocess.run(
        ["openssl", "ts", "-reply", "-token_in", "-in", tmp_path / "token.der", "-text"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0 and "Hash Algorithm: sha256" in shown.stdout, shown.stderr
    checkpoint = await client.post("/api/v1/log/checkpoints", headers=api_headers(auditor_token))
    assert checkpoint.status in (200, 201)
    env = signer_env
    conn = await asyncpg.connect(database_url)
    await conn.execute("SELECT pg_advisory_lock($1)", INTEGRATOR_LOCK)
    try:
        record_id = await conn.fetchval("SELECT record_id FROM log_entries WHERE idx = $1", idx)
        stored = await conn.fetchval(
            "SELECT token FROM signature_time_stamps WHERE record_id = $1", record_id
        )
        assert bytes(stored) == token

        async def swap_token() -> None:  # a token of another signature, well-formed
            await conn.execute(
                "UPDATE signature_time_stamps SET token = set_byte(token, length(token) - 1,"
                " get_byte(token, length(token) - 1) # 1) WHERE record_id = $1",
                record_id,
            )

        async def restore_token() -> None:
            await conn.execute(
                "UPDATE signature_time_stamps SET token = $2 WHERE record_id = $1",
                record_id,
                stored,
            )

        message = await _tampered(env, conn, swap_token, restore_token)
        assert f"entry {idx}: does not match signing record" in message
        assert "time_stamps_sha256" in message

        async def drop_token() -> None:
            await conn.execute("DELETE FROM signature_time_stamps WHERE record_id = $1", record_id)

        async def put_back() -> None:
            await conn.execute(
                "INSERT INTO signature_time_stamps (record_id, position, token) VALUES ($1, 0, $2)",
                record_id,
                stored,
            )

        message = await _tampered(env, conn, drop_token, put_back)
        assert f"entry {idx}:" in message and "time_stamp_count" in message

        async def other_format() -> None:
            await conn.execute(
                "UPDATE signing_records SET signature_format = 'pades' WHERE id = $1", record_id
            )

        async def cades_again() -> None:
            await conn.execute(
                "UPDATE signing_records SET signature_format = 'cades' WHERE id = $1", record_id
            )

        message = await _tampered(env, conn, other_format, cades_again)
        assert f"entry {idx}:" in message and "signature_format" in message
        clean = qes_audit_verify(env)
        assert clean.returncode == 0, clean.stderr
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", INTEGRATOR_LOCK)
        await conn.close()
