"""Finished web-signing requests and their PDFs are deleted after the configured time (issue 17
item 9): by every replica's :class:`RequestRetention` (clock injected), and by `qes audit
purge`; `qes audit subject` lists a person's requests while they are kept. Requests still
pending are never deleted. Each test has its own PostgreSQL database."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from signer.flows.request_retention import RequestRetention
from signer.storage.db import create_pool
from signer.storage.request_retention import RequestRetentionStore
from signer.storage.signing_requests import (
    NewRequest,
    RequestPdf,
    RpClient,
    RpClientStore,
    SigningRequestStore,
)
from tests.support.pg import scratch_database
from tests.support.service import DEV_CONFIG, run_qes

KEEP = timedelta(hours=168)
URI = "https://rp.example.com/signed"


@pytest.fixture
def scratch_url(pg_admin: str) -> Iterator[str]:
    with scratch_database(pg_admin) as url:
        yield url


@pytest.fixture
async def pool(scratch_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on this test's own database (a purge deletes every finished request in it)."""
    opened = await create_pool(scratch_url, min_size=1, max_size=2, command_timeout=10)
    yield opened
    await opened.close()


async def pades_request(pool: asyncpg.Pool, at: datetime, subject: str) -> uuid.UUID:
    """A 'pades' request made at ``at`` with one PDF, naming ``subject`` as its signer."""
    client = RpClient(f"rp-{uuid.uuid4().hex[:16]}", "Retention RP", (URI,), at)
    await RpClientStore(pool).add(client, bytes(32))
    request = NewRequest(
        id=uuid.uuid4(), client_id=client.client_id, format="pades", profile=None,
        hash_algorithm="sha256", labels=("Contract.pdf",), digests=(bytes(32),),
        redirect_uri=URI, state="s", acr=None, acr_accepted=None, expected_subject=subject,
        expected_email=None, created_at=at, expires_at=at + timedelta(minutes=15),
    )  # fmt: skip
    pdf = RequestPdf(b"%PDF-1.7 original", b"%PDF-1.7 prepared", 10, 20)
    await SigningRequestStore(pool).create(request, [pdf])
    return request.id


async def kept(pool: asyncpg.Pool, request_id: uuid.UUID) -> tuple[int, int]:
    """(request rows, PDF rows) of one request."""
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM signing_requests WHERE id=$1) AS requests,"
        " (SELECT count(*) FROM signing_request_pdfs WHERE request_id=$1) AS pdfs",
        request_id,
    )
    return row["requests"], row["pdfs"]


async def test_finished_requests_and_pdfs_go_after_the_configured_time(
    pool: asyncpg.Pool,
) -> None:
    t0 = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)
    ended = await pades_request(pool, t0, "carol")
    pending = await pades_request(pool, t0, "carol")
    assert await SigningRequestStore(pool).cancel(ended, t0 + timedelta(minutes=2))
    store = RequestRetentionStore(pool)
    assert {r.id for r in await store.subject_requests("carol", None)} == {
        str(ended),
        str(pending),
    }

    now = [t0 + timedelta(minutes=1) + KEEP]  # one minute short of the keep time
    retention = RequestRetention(store, lambda: now[0], KEEP)
    assert await retention.purge_once() == 0
    assert await kept(pool, ended) == (1, 1)
    now[0] += timedelta(minutes=2)
    assert await retention.purge_once() == 1
    assert await kept(pool, ended) == (0, 0)
    assert await kept(pool, pending) == (1, 1)  # never ended: not the retention's to delete
    assert [r.id for r in await store.subject_requests("carol", None)] == [str(pending)]


async def test_audit_subject_and_purge_cover_web_signing_requests(
    pool: asyncpg.Pool, scratch_url: str, signer_env: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    old = await pades_request(pool, now - timedelta(days=400), "dave")
    assert await SigningRequestStore(pool).cancel(old, now - timedelta(days=400))
    recent = await pades_request(pool, now - timedelta(days=1), "dave")
    env = {**signer_env, "QES_DATABASE_URL": scratch_url, "QES__AUDIT__RETENTION_DAYS": "365"}

    async def audit(*args: str) -> tuple[int, str, str]:
        return await run_qes("audit", *args, "--config", str(DEV_CONFIG), env=env)

    code, out, err = await audit("subject", "--subject", "dave", "--json")
    assert code == 0, err
    listed = json.loads(out)["web_signing_requests"]
    assert {(r["id"], r["pdfs"]) for r in listed} == {(str(old), 1), (str(recent), 1)}
    code, out, err = await audit("subject", "--subject", "dave")
    assert code == 0 and "2 web-signing request(s) still kept" in out, err

    before = (now - timedelta(days=366)).date().isoformat()
    code, out, err = await audit("purge", "--before", before)
    assert code == 0, err
    assert "1 finished web-signing request(s) with their PDFs" in out
    assert await kept(pool, old) == (0, 0)
    assert await kept(pool, recent) == (1, 1)
    code, out, _ = await audit("subject", "--subject", "dave", "--json")
    assert [r["id"] for r in json.loads(out)["web_signing_requests"]] == [str(recent)]
