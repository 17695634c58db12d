"""A log that holds both entry versions (issue 5): entries appended before version 2 keep
verifying, with `qes audit verify` from the database and from an exported log, next to
version-2 entries; a version-1 entry is rebuilt as version 1 (it never committed to the
format or the time-stamps), a version-2 entry catches a changed token and names the entry.

The log is written through the production SQL (RecordStore, LogStore) into a scratch database;
the checkpoint is signed by an in-memory P-256 key given to the CLI as ``--vkey``."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from ca.logentry import PrivacyKey, entry_version
from signer.storage.db import create_pool
from signer.storage.log import LogStore
from signer.storage.records import Completion, IssuedRecord, RecordStore
from signer.translog.log import issuance_entry, subject_index
from tests.support.pg import scratch_database
from tests.support.service import DEV_CONFIG, ROOT, TEST_LOG_PRIVACY_KEY

ORIGIN = "qes-signer.test/versions"
KEY = PrivacyKey("k1", bytes.fromhex(TEST_LOG_PRIVACY_KEY))


@pytest.fixture
def scratch_db(pg_admin: str) -> Iterator[str]:
    with scratch_database(pg_admin) as url:
        yield url


def _certificate(serial: int, at: datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Person {serial}")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(at)
        .not_valid_after(at + timedelta(minutes=10))
        .sign(key, hashes.SHA256())
    )


def _record(n: int, fmt: str, at: datetime) -> IssuedRecord:
    cert = _certificate(0x1000 + n, at)
    return IssuedRecord(
        id=uuid.uuid4(),
        serial=format(cert.serial_number, "x"),
        request_id=f"req-{n}",
        created_at=at,
        token_issuer="https://idp.example.com",
        issuer_name="idp",
        token_subject=f"person-{n}",
        client_id=None,
        profile="advanced",
        subject_type="natural",
        subject_dn=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        certificate_der=cert.public_bytes(Encoding.DER),
        key_evidence={"local": True},
        hash_algorithm="sha256",
        digests=(os.urandom(32),),
        signature_format=fmt,
    )


def qes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer", "audit", *args, "--config", str(DEV_CONFIG)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        check=False,
        timeout=120,
    )


async def test_version_1_and_2_entries_verify_side_by_side(scratch_db: str, tmp_path: Path) -> None:
    log_key = ec.generate_private_key(ec.SECP256R1())
    signer = NoteSigner(ORIGIN, log_key)
    at = datetime.now(UTC).replace(microsecond=0)
    # (format, time-stamp tokens, entry version): the cades record of version 1 has tokens
    # its entry never committed to; the ones of version 2 do.
    plan = [
        ("raw", (), 1),
        ("cades", (b"\x30\x03v1a",), 1),
        ("cades", (b"\x30\x03v2a", b"\x30\x03v2b"), 2),
        ("raw", (), 2),
    ]
    pool = await create_pool(scratch_db, min_size=1, max_size=2, command_timeout=30)
    try:
        records = RecordStore(pool)
        for n, (fmt, tokens, version) in enumerate(plan):
            rec = _record(n, fmt, at + timedelta(seconds=n))
            await records.record_issued([rec])
            done = at + timedelta(seconds=n, milliseconds=5)
            destruction = {"confirmed_absent": True}
            entry = issuance_entry(
                rec,
                completed_at=done,
                destruction=destruction,
                signed_count=1,
                failure=None,
                time_stamps=tokens,
            ).encode(KEY, version=version)
            assert entry_version(entry) == version
            await records.complete(
                [
                    Completion(
                        record_id=rec.id,
                        at=done,
                        signed_count=1,
                        destruction=destruction,
                        time_stamps=tokens,
                        entry=entry,
                        subject_key=subject_index(KEY, rec.token_issuer, rec.token_subject),
                    )
                ]
            )

        async def sign(checkpoint: Checkpoint) -> str:
            return sign_checkpoint(checkpoint, signer)

        assert (await LogStore(pool, ORIGIN).integrate(sign, at, force=True)) is not None
    finally:
        await pool.close()

    env = {
        "QES_DATABASE_URL": scratch_db,
        "QES_LOG_PRIVACY_KEY": TEST_LOG_PRIVACY_KEY,
        "QES__LOG__ORIGIN": ORIGIN,
        "QES_HSM_PIN": "not-used",  # the settings want one; --vkey means no HSM is opened
    }
    vkey = signer.verifier.vkey()
    clean = qes(env, "verify", "-q", "--vkey", vkey)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith("log verified: 4 entries")
    exported = tmp_path / "log.jsonl"
    done = qes(env, "export-log", str(exported))
    assert done.returncode == 0, done.stderr
    offline = qes(env, "verify", "--log-export", str(exported), "--vkey", vkey)
    assert offline.returncode == 0, offline.stderr
    assert "log export verified: 4 entries" in offline.stdout

    conn = await asyncpg.connect(scratch_db)
    try:
        for token, idx, caught in ((b"\x30\x03v1a", 1, False), (b"\x30\x03v2b", 2, True)):
            await conn.execute(
                "UPDATE signature_time_stamps SET token = $2 WHERE token = $1", token, b"\x30\x01x"
            )
            try:
                result = qes(env, "verify", "-q", "--vkey", vkey)
            finally:
                await conn.execute(
                    "UPDATE signature_time_stamps SET token = $1 WHERE token = $2",
                    token,
                    b"\x30\x01x",
                )
            if caught:
                assert result.returncode == 1, result.stdout
                assert f"entry {idx}: does not match signing record" in result.stderr
                assert "time_stamps_sha256" in result.stderr
            else:  # version 1 never committed to time-stamp tokens
                assert result.returncode == 0, result.stderr
    finally:
        await conn.close()
