"""How a suspension reaches another process's in-memory set: by NOTIFY alone (poll far too
slow to explain it), and by the poll alone (no listening connection). Real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from ca.logentry import PrivacyKey
from signer.policy.enforcement import Suspensions
from signer.storage.db import create_pool
from signer.storage.policy import PolicyStore, Target
from signer.translog.log import load_privacy_key


@pytest.fixture
def key(settings: Any) -> PrivacyKey:
    """The run's log privacy key: these actions join the shared log, which must verify."""
    return load_privacy_key(settings)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, min_size=1, max_size=4, command_timeout=5)
    yield p
    await p.close()


def now() -> datetime:
    return datetime.now(UTC)


async def _seen_after(watcher: Suspensions, client: str, *, suspended: bool) -> float:
    start = time.monotonic()
    while time.monotonic() - start < 10:
        if (client in watcher.current.clients) == suspended:
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    raise AssertionError("never seen")


@pytest.mark.parametrize(("listen", "poll"), [(True, 30.0), (False, 0.2)])
async def test_another_process_sees_the_change(
    pool: asyncpg.Pool, database_url: str, key: PrivacyKey, listen: bool, poll: float
) -> None:
    store = PolicyStore(pool)
    watcher = Suspensions(store, key, now, dsn=database_url if listen else None, poll=poll)
    admin = Suspensions(store, key, now)  # the other process (as the CLI is)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(0.5)  # listening (or polling) has begun
        client = f"propagation-{listen}"
        target = Target("client", client_id=client)
        kwargs = {"actor_issuer": None, "actor_subject": "cli:test", "request_id": "t"}
        assert await admin.act("suspend", target, **kwargs) is not None
        assert await _seen_after(watcher, client, suspended=True) < (0.5 if listen else 1.0)
        assert await admin.act("resume", target, **kwargs) is not None
        assert await _seen_after(watcher, client, suspended=False) < (0.5 if listen else 1.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
