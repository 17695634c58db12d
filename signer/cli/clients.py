"""`qes client ...`: register the web apps that send people to sign."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from signer.cli.common import load, table
from signer.cli.common import pool as open_pool


async def _client(settings: Any, args: argparse.Namespace) -> str:
    """The relying-party registry, straight in the database (an operator's command)."""
    from signer.flows.registry import RpRegistry
    from signer.storage.signing_requests import RpClientStore

    pool = await open_pool(settings)
    try:
        registry = RpRegistry(RpClientStore(pool), lambda: datetime.now(UTC))
        if args.client_command == "add":
            added = await registry.add(args.name, args.redirect_uri)
            return (
                f"client_id: {added.client.client_id}\nclient_secret: {added.secret}\n"
                "(the secret is shown only now; only its hash is stored)"
            )
        if args.client_command == "rotate":
            secret = await registry.rotate(args.client_id)
            return f"client_id: {args.client_id}\nclient_secret: {secret}\n(shown only now)"
        if args.client_command == "revoke":
            await registry.revoke(args.client_id)
            return f"revoked: {args.client_id}"
        rows = [
            [
                c.client_id,
                c.name,
                "revoked" if c.revoked_at else "active",
                " ".join(c.redirect_uris),
            ]
            for c in await registry.all()
        ]
        return table(rows, ["CLIENT ID", "NAME", "STATUS", "REDIRECT URIS"])
    finally:
        await pool.close()


def cmd_client(args: argparse.Namespace) -> int:
    print(asyncio.run(_client(load(args), args)))
    return 0


def register(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser], url: str
) -> None:
    """Add this group's commands to the `qes` parser."""
    client = sub.add_parser("client", help="register web apps that send people to sign")
    csub = client.add_subparsers(dest="client_command", required=True)
    add = with_config(csub.add_parser("add", help="register a web app; prints its secret once"))
    add.add_argument("name", help="shown to signers on the consent page")
    add.add_argument("--redirect-uri", action="append", required=True, metavar="URI")
    with_config(csub.add_parser("list", help="list registered web apps"))
    for name, text in (("rotate", "issue a new secret"), ("revoke", "revoke a web app")):
        with_config(csub.add_parser(name, help=text)).add_argument("client_id")
    client.set_defaults(func=cmd_client)
