"""What every `qes` command group shares: settings, the one-line failure, token files, tables
and a database pool for the commands that read the log directly."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signer.cli.client import ClientError
from signer.errors import SignerError

DEFAULT_URL = "http://127.0.0.1:8780"
#: What every group's ``register`` gets to give a command the ``--config`` option
#: (:func:`signer.cli.main.with_config`).
WithConfig = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def fail(message: str, code: int = 1) -> int:
    print(f"qes: {message}", file=sys.stderr)
    return code


def load(args: argparse.Namespace) -> Any:
    from signer.settings.config import load_settings

    path = args.config or os.environ.get("QES_CONFIG")
    return load_settings(Path(path) if path else None)


def read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ClientError(f"cannot read token file {path}: {exc.strerror}") from exc
    if not token:
        raise ClientError(f"token file {path} is empty")
    return token


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]

    def line(row: list[str]) -> str:
        return "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


async def pool(settings: Any) -> Any:
    """A one-connection pool (migrations applied) for the audit commands."""
    from signer.storage.db import create_pool

    if settings.database.url is None:
        raise SignerError("database.url: not configured (set QES_DATABASE_URL)")
    return await create_pool(
        settings.database.url.reveal(),
        min_size=1,
        max_size=1,
        command_timeout=settings.database.command_timeout,
    )


async def connect(settings: Any) -> Any:
    import asyncpg

    if settings.database.url is None:
        raise SignerError("database.url: not configured (set QES_DATABASE_URL)")
    try:
        return await asyncpg.connect(settings.database.url.reveal(), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise SignerError(f"cannot connect to PostgreSQL: {exc}") from exc


def progress_items(items: Sequence[Path], enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, unit="file", desc=desc, file=sys.stderr)


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc=desc, file=sys.stderr)


def print_above_bar(bar: Any, line: str) -> None:
    if bar is None:
        print(line)
    else:
        bar.write(line, file=sys.stdout)


def utc_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def admin_log(settings: Any, actor: str | None, clock: Any) -> Any:
    """The :class:`signer.translog.admin.AdminLog` of an operator's command: ``--actor``, else
    this account (``cli:<user>``), with the configured log-privacy key."""
    from signer.policy.enforcement import cli_actor
    from signer.translog.admin import AdminLog, operator
    from signer.translog.log import load_privacy_key

    return AdminLog(load_privacy_key(settings), operator(actor) if actor else cli_actor(), clock)
