"""Older rows get what newer ones have (issue 5): records made before the e-mail column get
their e-mail from the certificate's subjectAltName, entries made before the subject index get
their index; until that has run an e-mail search says records before a date may be missing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509

from signer.backfill import backfill
from signer.storage.backfill import BackfillStore
from signer.translog import load_privacy_key, subject_index
from tests.support.service import api_headers, sign_random


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
    # What the certificate says, read by cryptography (not by signer.backfill).
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
