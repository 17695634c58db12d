"""Rate-limit windows in PostgreSQL (``policy_rate_take``): counted per identity and window,
a request over a limit counts nothing, and a new window starts from one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from signer.storage.db import create_pool
from signer.storage.policy import PolicyStore, Window


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PolicyStore]:
    pool = await create_pool(database_url, min_size=1, max_size=8, command_timeout=5)
    yield PolicyStore(pool)
    await pool.close()


MINUTE = datetime(2026, 11, 21, 22, 15, tzinfo=UTC)
DAY = MINUTE.replace(hour=0, minute=0)


async def test_windows_count_refuse_and_reset(store: PolicyStore) -> None:
    who = ("https://idp.example.com", f"rate-{uuid.uuid4()}")
    windows = [Window("minute", MINUTE, 2), Window("day", DAY, 3)]
    assert await store.count(*who, windows) is None
    assert await store.count(*who, windows) is None
    assert await store.count(*who, windows) == "minute"  # third in the minute: refused
    assert await store.count(*who, windows) == "minute"  # and refused again, counting nothing
    later = [Window("minute", MINUTE + timedelta(minutes=1), 2), Window("day", DAY, 3)]
    assert await store.count(*who, later) is None  # a new minute starts from one
    assert await store.count(*who, later) == "day"  # the day's three are used up
    tomorrow = [
        Window("minute", MINUTE + timedelta(days=1), 2),
        Window("day", DAY + timedelta(days=1), 3),
    ]
    assert await store.count(*who, tomorrow) is None
    other = ("https://idp.example.com", f"rate-{uuid.uuid4()}")  # per identity
    assert await store.count(*other, windows) is None


async def test_concurrent_requests_never_pass_the_limit(store: PolicyStore) -> None:
    """Twenty requests at once (as from several replicas) for a limit of five: five pass."""
    who = ("https://idp.example.com", f"rate-{uuid.uuid4()}")
    windows = [Window("minute", MINUTE, 5)]
    results = await asyncio.gather(*(store.count(*who, windows) for _ in range(20)))
    assert results.count(None) == 5 and results.count("minute") == 15


async def test_counts_in_the_table(store: PolicyStore, database_url: str) -> None:
    who = ("https://idp.example.com", f"rate-{uuid.uuid4()}")
    for _ in range(4):
        await store.count(*who, [Window("minute", MINUTE, 3)])
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval(
            "SELECT count FROM policy_rate_windows WHERE token_subject = $1", who[1]
        )
    finally:
        await conn.close()
    assert count == 3  # the refused fourth left no trace
