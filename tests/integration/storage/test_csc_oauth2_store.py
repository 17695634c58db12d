"""The CSC OAuth2 flow's rows in PostgreSQL: each browser handle and the code work once, an
open request past its expiry ends 'expired', and an ended row keeps no verified login."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from signer.storage.csc_oauth2 import CscOAuth2Store, NewAuthorization
from signer.storage.db import create_pool
from signer.storage.login_flows import LoginFlow, LoginFlowStore
from signer.storage.signing_requests import RpClient, RpClientStore

PRINCIPAL = {"issuer": "https://idp.example.com", "subject": "alice", "attributes": {"n": "A"}}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=8, command_timeout=10)
    try:
        yield pool
    finally:
        await pool.close()


async def new_request(pool: asyncpg.Pool, now: datetime) -> tuple[NewAuthorization, bytes]:
    client_id = f"rp-{uuid.uuid4().hex[:12]}"
    uri = "https://app.example.com/cb"
    await RpClientStore(pool).add(RpClient(client_id, "App", (uri,), now), b"\0" * 32)
    new = NewAuthorization(
        id=uuid.uuid4(), client_id=client_id, redirect_uri=uri, state="s",
        credential_id="cred-1", num_signatures=1, hash_algorithm_oid="2.16.840.1.101.3.4.2.1",
        hashes=(hashlib.sha256(b"doc").digest(),), code_challenge="c" * 43, description=None,
        lang=None, created_at=now, expires_at=now + timedelta(minutes=10),
    )  # fmt: skip
    flow = uuid.uuid4().bytes
    await CscOAuth2Store(pool).create(new)
    login = LoginFlow("csc", new.id, "st", "no", "ve" * 30, None, now + timedelta(minutes=10))
    await LoginFlowStore(pool).save(flow, login, now)
    return new, flow


async def take_login(pool: asyncpg.Pool, flow: bytes, now: datetime) -> object | None:
    """What the callback does: use up the login flow, then find its request still logging in."""
    login = await LoginFlowStore(pool).take(flow, "csc", now)
    if login is None or login.subject_id is None:
        return None
    return await CscOAuth2Store(pool).logging_in(login.subject_id, now)


async def test_login_consent_and_code_each_work_once_even_when_raced(pool: asyncpg.Pool) -> None:
    store, now = CscOAuth2Store(pool), datetime.now(UTC)
    new, flow = await new_request(pool, now)
    taken = await asyncio.gather(*(take_login(pool, flow, now) for _ in range(4)))
    assert sum(t is not None for t in taken) == 1
    assert await store.open_consent(new.id, b"session", "csrf", PRINCIPAL, now)
    approved = await asyncio.gather(
        *(store.approve(new.id, b"session", b"code", now + timedelta(seconds=60), now)
          for _ in range(4))
    )  # fmt: skip
    assert sum(a is not None for a in approved) == 1
    redeemed = await asyncio.gather(*(store.redeem(b"code", new.client_id, now) for _ in range(4)))
    assert sum(r is not None for r in redeemed) == 1
    assert await store.redeem(b"code", "another-client", now) is None
    assert await store.mark_reused(b"code", "another-client", now) is None  # not theirs
    assert await store.attach_token(new.id, "ref", now)
    assert await store.mark_reused(b"code", new.client_id, now) == (new.id, "ref")
    done = await store.get(new.id)
    assert done is not None and done.status == "redeemed" and done.principal is None
    assert (done.signer_issuer, done.signer_subject) == (PRINCIPAL["issuer"], "alice")


async def test_a_token_issued_after_a_replay_is_not_attached(pool: asyncpg.Pool) -> None:
    """RFC 6749 §4.1.2: the replay arrives between redemption and issuance."""
    store, now = CscOAuth2Store(pool), datetime.now(UTC)
    new, flow = await new_request(pool, now)
    await take_login(pool, flow, now)
    await store.open_consent(new.id, b"s2", "csrf", PRINCIPAL, now)
    await store.approve(new.id, b"s2", b"code2", now + timedelta(seconds=60), now)
    assert await store.redeem(b"code2", new.client_id, now) is not None
    assert await store.mark_reused(b"code2", new.client_id, now) == (new.id, None)
    assert not await store.attach_token(new.id, "late-ref", now)  # the caller revokes it


async def test_open_requests_past_their_expiry_end_expired_without_the_login(
    pool: asyncpg.Pool,
) -> None:
    store, now = CscOAuth2Store(pool), datetime.now(UTC)
    stale, flow = await new_request(pool, now - timedelta(minutes=11))
    await take_login(pool, flow, now - timedelta(minutes=11))
    await store.open_consent(stale.id, b"s3", "csrf", PRINCIPAL, now - timedelta(minutes=11))
    assert await store.consent(stale.id, b"s3", now) is None  # expired: no consent page
    await new_request(pool, now)  # any later request ends the stale ones
    row = await store.get(stale.id)
    assert row is not None and (row.status, row.principal, row.csrf_token) == (
        "expired",
        None,
        None,
    )
