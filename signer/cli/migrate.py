"""``qes migrate``: bring the database schema up to date and exit (a Kubernetes Job, or a step
before a rolling upgrade). ``qes serve`` applies the same migrations at start under the same
advisory lock, so running both at once is safe; a schema newer than the code stops with one
line."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from signer.cli.common import WithConfig, load
from signer.errors import SignerError


async def _migrate(settings: Any) -> int:
    from signer.storage.db import create_pool, migrations

    if settings.database.url is None:
        raise SignerError("database.url: not configured (set QES_DATABASE_URL)")
    pool = await create_pool(  # applies the migrations under the advisory lock
        settings.database.url.reveal(),
        min_size=1,
        max_size=1,
        command_timeout=max(settings.database.command_timeout, 300.0),
    )
    await pool.close()
    return len(migrations())


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load(args)  # --config, else $QES_CONFIG, as every command
    print(f"database schema at version {asyncio.run(_migrate(settings))}")
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], with_config: WithConfig
) -> None:
    migrate = with_config(sub.add_parser("migrate", help="apply database migrations and exit"))
    migrate.set_defaults(func=cmd_migrate)
