"""Older rows get what newer ones have (issue 5): records made before the e-mail column get
their e-mail from the certificate's subjectAltName, entries made before the subject index get
their index; until that has run an e-mail search says records before a date may be missing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca.logentry import PrivacyKey, RefusalEntry, Requester, RequestSummary
from signer.storage.backfill import BackfillStore
from signer.storage.db import Migration, migrate, migrations
from signer.storage.records import IssuedRecord
from signer.storage.retention import RetentionStore
from signer.translog.backfill import backfill
from signer.translog.log import issuance_entry, load_privacy_key, subject_index
from signer.translog.retention import find_subject
from tests.support.pg import scratch_database
from tests.support.service import TEST_LOG_PRIVACY_KEY, api_headers, sign_random


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of its own; puts the backfill bookkeeping back as it was afterwards."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    saved = await pool.fetchrow("SELECT * FROM log_backfill WHERE id = 1")
    try:
        yield pool
    finally:
        await pool.execute(
            "UPDATE log_backfill SET legacy_refusals_below = $1, subject_keys_done = $2,"
            " emails_before = $3, emails_done = $4 WHERE id = 1",
            saved["legacy_refusals_below"],
            saved["subject_keys_done"],
            saved["emails_before"],
            saved["emails_done"],
        )
        await pool.close()


async def _by_email(client: TestClient, token: str, email: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/certificates?email={email}", headers=api_headers(token))
    assert resp.status == 200
    return dict(await resp.json())


async def test_older_records_get_their_email_and_subject_index(
    client: TestClient,
    alice_token: str,
    auditor_token: str,
    pool: asyncpg.Pool,
    settings: Any,
) -> None:
    status, signed = await sign_random(client, alice_token)
    assert status == 201
    record = await (
        await client.get(
            f"/api/v1/certificates/{signed['serial']}", headers=api_headers(auditor_token)
        )
    ).json()
    email = record["email"]
    # What the certificate says, read by cryptography (not by signer.translog.backfill).
    cert = x509.load_pem_x509_certificate(record["certificate"].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [email]

    # As the row looked before those columns existed, with the backfill still to run.
    idx = signed["log"]["index"]
    await pool.execute(
        "UPDATE signing_records SET email = NULL WHERE serial = $1", signed["serial"]
    )
    await pool.execute("UPDATE log_entries SET subject_key = NULL WHERE idx = $1", idx)
    await pool.execute(
        "UPDATE log_backfill SET emails_done = false, emails_before = now(),"
        " subject_keys_done = false, legacy_refusals_below = (SELECT size FROM log_state)"
    )
    before = await _by_email(client, auditor_token, email)
    assert signed["serial"] not in [r["serial"] for r in before["items"]]
    assert before["notice"].startswith("E-mail not recorded yet for records created before")

    report = await backfill(BackfillStore(pool), load_privacy_key(settings))
    assert report.emails >= 1 and report.subject_keys >= 1

    after = await _by_email(client, auditor_token, email)
    assert signed["serial"] in [r["serial"] for r in after["items"]]
    assert "notice" not in after
    key = await pool.fetchval("SELECT subject_key FROM log_entries WHERE idx = $1", idx)
    principal_issuer = record["identity"]["issuer"]
    assert key == subject_index(load_privacy_key(settings), principal_issuer, "alice")
    again = await backfill(BackfillStore(pool), load_privacy_key(settings))
    assert (again.emails, again.subject_keys) == (0, 0)  # done once, not on every start


@pytest.fixture
def scratch_db(pg_admin: str) -> Iterator[str]:
    with scratch_database(pg_admin) as url:
        yield url


async def test_an_upgraded_database_is_backfilled_and_searchable(scratch_db: str) -> None:
    """A log written before this upgrade (schema up to the previous migration, entries of
    version 1, a record without its e-mail column filled, a refusal whose identifiers are only
    per-entry commitments): after the upgrade and the backfill, the e-mail is known, the
    record is found through the subject index and the old refusal by its commitments."""
    key = PrivacyKey("k1", bytes.fromhex(TEST_LOG_PRIVACY_KEY))
    known = migrations()
    conn = await asyncpg.connect(scratch_db)
    try:
        ours = next(
            m.version for m in known if m.name.endswith("_log_subject_index_and_refusal_limits.sql")
        )
        await migrate_to(conn, [m for m in known if m.version < ours])  # before this upgrade
        at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
        rec = old_record(at, "erika@example.com")
        await conn.execute(
            "INSERT INTO signing_records (id, serial, status, request_id, created_at,"
            " completed_at, token_issuer, issuer_name, token_subject, profile, subject_type,"
            " subject_dn, not_before, not_after, certificate, key_evidence, hash_algorithm,"
            " digests, signed_count, destruction)"
            " VALUES ($1, $2, 'completed', 'r', $3, $3, $4, 'idp', $5, 'qes', 'natural', $6,"
            " $7, $8, $9, '{}', 'sha256', $10, 1, '{\"confirmed_absent\": true}')",
            rec.id, rec.serial, at, rec.token_issuer, rec.token_subject, rec.subject_dn,
            rec.not_before, rec.not_after, rec.certificate_der, list(rec.digests),
        )  # fmt: skip
        issuance = issuance_entry(
            rec, completed_at=at, destruction={"confirmed_absent": True}, signed_count=1,
            failure=None,
        ).encode(key, version=1)  # fmt: skip
        refusal = RefusalEntry(
            record_id=str(uuid.uuid4()),
            request_id="r2",
            refused_at=at,
            requester=Requester("idp", rec.token_issuer, rec.token_subject),
            request=RequestSummary("qes", "natural", "sha256", rec.digests),
            reason="profile-not-allowed",
        ).encode(key, version=1)
        for idx, (kind, rid, entry) in enumerate(
            (("issuance", rec.id, issuance), ("refusal", None, refusal))
        ):
            await conn.execute(
                "INSERT INTO log_entries (idx, kind, record_id, entry, leaf_hash)"
                " VALUES ($1, $2, $3, $4, sha256('\\x00'::bytea || $4))",
                idx, kind, rid, entry,
            )  # fmt: skip
        await conn.execute("UPDATE log_state SET size = 2")
        await migrate(conn)  # the upgrade
        state = await conn.fetchrow("SELECT * FROM log_backfill")
        assert state["legacy_refusals_below"] == 2
        assert not state["subject_keys_done"] and not state["emails_done"]
    finally:
        await conn.close()

    pool = await asyncpg.create_pool(scratch_db, min_size=1, max_size=2)
    assert pool is not None
    try:
        report = await backfill(BackfillStore(pool), key)
        assert (report.subject_keys, report.emails) == (1, 1)
        email = await pool.fetchval("SELECT email FROM signing_records WHERE id = $1", rec.id)
        assert email == "erika@example.com"
        found = await find_subject(
            RetentionStore(pool), key, rec.token_subject, None, [rec.token_issuer]
        )
    finally:
        await pool.close()
    assert [(r.serial, r.log_index) for r in found.records] == [(rec.serial, 0)]
    assert [(r["index"], r["reason"]) for r in found.refusals] == [(1, "profile-not-allowed")]


async def migrate_to(conn: asyncpg.Connection, known: Sequence[Migration]) -> None:
    await conn.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for m in known:
        await conn.execute(m.sql)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
        )


def old_record(at: datetime, email: str) -> IssuedRecord:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Erika Mustermann")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x5EED)
        .not_valid_before(at)
        .not_valid_after(at + timedelta(minutes=10))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return IssuedRecord(
        id=uuid.uuid4(),
        serial="5eed",
        request_id="r",
        created_at=at,
        token_issuer="https://idp.example.com",
        issuer_name="idp",
        token_subject="erika",
        client_id=None,
        profile="qes",
        subject_type="natural",
        subject_dn=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        certificate_der=cert.public_bytes(Encoding.DER),
        key_evidence={},
        hash_algorithm="sha256",
        digests=(b"\x11" * 32,),
    )
