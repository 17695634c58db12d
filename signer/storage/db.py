"""PostgreSQL pool and schema migrations.

Migrations are the numbered ``migrations/NNNN_name.sql`` files, applied in order inside one
transaction under a PostgreSQL advisory lock, so several replicas starting at once apply each
exactly once. A database whose schema is newer than this code is refused: running old code on a
new schema could write records the new code misreads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from signer.errors import DatabaseUnavailable

log = structlog.get_logger(__name__)

# pg_advisory_xact_lock key: the first 8 bytes of "qes-mig" as a signed bigint.
MIGRATION_LOCK = 0x7165732D6D6967
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> tuple[Migration, ...]:
    """The migrations shipped with this code, ordered by version; gaps are a packaging bug."""
    folder = resources.files("signer.storage").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("migration versions must be 1..N without gaps")
    return tuple(found)


class SchemaTooNew(DatabaseUnavailable):
    slug = "schema-too-new"
    title = "Database schema is newer than this service"


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply missing migrations; return the schema version. Raises SchemaTooNew."""
    known = migrations()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        if current > len(known):
            raise SchemaTooNew(
                f"database schema version {current} is newer than this code ({len(known)})"
            )
        for m in known[current:]:
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
            )
            log.info("migration_applied", version=m.version, name=m.name)
    return len(known)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook: the service sets no session state (no SET, LISTEN, cursor or
    session-level advisory lock; migrations use a transaction-level lock), so asyncpg's default
    reset query (``RESET ALL; UNLISTEN *; CLOSE ALL; pg_advisory_unlock_all()``) would be one
    more round trip per statement for nothing. asyncpg still rolls back an open transaction."""


async def create_pool(
    url: str, *, min_size: int, max_size: int, command_timeout: float
) -> asyncpg.Pool:
    """Open the pool and bring the schema up to date; DatabaseUnavailable when unreachable."""
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout,
            reset=_keep_session,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except BaseException:
        await pool.close()
        raise
    return pool
