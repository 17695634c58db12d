"""PostgreSQL for tests: a fresh database per test session, dropped afterwards.

The admin URL comes from ``QES_TEST_PG_ADMIN_URL`` (default: the machine's server at
127.0.0.1:5432 as ``postgres``). When nothing answers there, a private cluster is started with
:class:`signer.cli.localdb.LocalPostgres` in a temporary directory, so the suite also runs on a
machine with PostgreSQL installed but not running.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from signer.cli.localdb import LocalPostgres

DEFAULT_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _reachable(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def private_cluster_dir() -> Path:
    """A temp dir the ``postgres`` user can enter (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="qes-pg-"))
    path.chmod(0o755)
    return path


@contextmanager
def admin_url() -> Iterator[str]:
    url = os.environ.get("QES_TEST_PG_ADMIN_URL", DEFAULT_ADMIN)
    if asyncio.run(_reachable(url)):
        yield url
        return
    cluster = LocalPostgres(private_cluster_dir(), database="postgres")
    cluster.start()
    try:
        yield with_database(cluster.url(), "postgres")
    finally:
        cluster.stop(mode="immediate")


@contextmanager
def scratch_database(admin: str) -> Iterator[str]:
    """CREATE a uniquely named database; DROP it (forcing out connections) afterwards."""
    name = f"qes_test_{secrets.token_hex(6)}"
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(admin, name)
    finally:
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def sql(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    """The rows of one ``query`` on a connection of its own to ``url``."""
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()
