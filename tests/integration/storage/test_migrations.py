"""Migrations under an advisory lock: concurrent starts apply each once; newer schema refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from ca.logentry import ADMIN_ACTIONS
from signer.storage.db import SchemaTooNew, create_pool, migrate, migrations
from tests.support.pg import scratch_database


@pytest.fixture
def fresh_db(pg_admin: str) -> Iterator[str]:
    with scratch_database(pg_admin) as url:
        yield url


async def test_concurrent_starts_apply_each_migration_once(fresh_db: str) -> None:
    conns = [await asyncpg.connect(fresh_db) for _ in range(6)]
    try:
        versions = await asyncio.gather(*(migrate(c) for c in conns))
        assert set(versions) == {len(migrations())}
        rows = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, len(migrations()) + 1))
    finally:
        for c in conns:
            await c.close()


async def test_newer_schema_is_refused(fresh_db: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        await migrate(conn)
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'x')")
    finally:
        await conn.close()
    with pytest.raises(SchemaTooNew, match="999 is newer"):
        await create_pool(fresh_db, min_size=1, max_size=1, command_timeout=5)


async def test_the_admin_action_check_allows_exactly_what_the_log_format_does(
    fresh_db: str,
) -> None:
    """The (action, scope) pairs the database accepts are those ca.logentry.ADMIN_ACTIONS
    encodes: admin_actions references admin_action_scopes, whose rows are exactly those pairs,
    so a row the log cannot hold is refused, and every loggable act can be stored."""
    conn = await asyncpg.connect(fresh_db)
    try:
        await migrate(conn)
        definition = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conname = 'admin_actions_action_scope'"
        )
        rows = await conn.fetch("SELECT action, scope FROM admin_action_scopes")
    finally:
        await conn.close()
    assert definition == (
        "FOREIGN KEY (action, scope) REFERENCES admin_action_scopes(action, scope)"
    ), definition
    allowed = {(r["action"], r["scope"]) for r in rows}
    expected = {(action, scope) for action, scopes in ADMIN_ACTIONS.items() for scope in scopes}
    assert allowed == expected
