"""`qes db start|stop|url`: a private PostgreSQL for development."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from signer.cli.common import WithConfig


def cmd_db(args: argparse.Namespace) -> int:
    from signer.cli.localdb import LocalPostgres

    db = LocalPostgres(Path(args.data_dir))
    if args.action == "start":
        print(db.start())
    elif args.action == "stop":
        db.stop()
    else:
        print(db.url())
    return 0


def register(sub: Any, with_config: WithConfig, url: str) -> None:
    """Add this group's commands to the `qes` parser."""
    db = sub.add_parser("db", help="a private PostgreSQL in the data directory")
    db.add_argument("action", choices=("start", "stop", "url"))
    db.add_argument("--data-dir", default=".qes/postgres")
    db.set_defaults(func=cmd_db)
