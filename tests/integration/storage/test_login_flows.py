"""The one login-flow table (migration 0014): a flow is single-use even when raced, only the
surface that started it can take it, and an expired flow completes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from signer.storage.db import create_pool
from signer.storage.login_flows import LoginFlow, LoginFlowStore


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=8, command_timeout=10)
    try:
        yield pool
    finally:
        await pool.close()


def flow(purpose: str, now: datetime, lifetime: timedelta = timedelta(minutes=10)) -> LoginFlow:
    return LoginFlow(purpose, uuid.uuid4(), "st", "no", "ve" * 32, "/audit", now + lifetime)


async def test_a_flow_is_taken_once_even_when_raced(pool: asyncpg.Pool) -> None:
    store, now = LoginFlowStore(pool), datetime.now(UTC)
    started = flow("sign", now)
    await store.save(b"h1", started, now)
    taken = await asyncio.gather(*(store.take(b"h1", "sign", now) for _ in range(4)))
    assert [t for t in taken if t is not None] == [started]


async def test_only_the_surface_that_started_a_flow_can_take_it(pool: asyncpg.Pool) -> None:
    store, now = LoginFlowStore(pool), datetime.now(UTC)
    await store.save(b"h2", flow("audit", now), now)
    assert await store.take(b"h2", "approvals", now) is None
    assert await store.take(b"h2", "csc", now) is None
    assert await store.take(b"h2", "audit", now) is not None


async def test_an_expired_flow_completes_nothing_and_is_dropped(pool: asyncpg.Pool) -> None:
    store, now = LoginFlowStore(pool), datetime.now(UTC)
    await store.save(b"old", flow("csc", now - timedelta(minutes=11)), now - timedelta(minutes=11))
    assert await store.take(b"old", "csc", now) is None
    await store.save(
        b"other", flow("csc", now - timedelta(minutes=11)), now - timedelta(minutes=11)
    )
    await store.save(b"new", flow("csc", now), now)  # saving drops every expired flow
    assert await pool.fetchval("SELECT count(*) FROM login_flows WHERE id_hash=$1", b"other") == 0
