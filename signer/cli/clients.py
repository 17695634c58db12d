"""`qes client ...`: register the web apps that send people to sign, scope them, rotate and
revoke their secrets (:mod:`signer.flows.registry`)."""

from __future__ import annotations

import argparse
import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from signer.cli.common import WithConfig, admin_log, load, table
from signer.cli.common import pool as open_pool

_DURATION = re.compile(r"(\d{1,7})([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SCOPE_HELP = (
    "what the client may request, repeatable: * (everything), api:web-signing, api:csc, "
    "format:raw|cades|pades, profile:qes|qualified|advanced, KIND:*; must name the APIs "
    "(default: *)"
)


def grace(text: str | None) -> timedelta | None:
    """``--grace``: seconds, or a number with s, m, h or d (``0``: the old secret stops now)."""
    from signer.flows.registry import RegistryError

    if text is None:
        return None
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise RegistryError(f"--grace {text[:40]!r}: a duration such as 0, 90m, 24h or 7d")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def _now() -> datetime:
    return datetime.now(UTC)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _list(clients: list[Any], now: datetime) -> str:
    rows = []
    for c in clients:
        previous = "-"
        if c.previous_secret_until is not None and c.previous_secret_until > now:
            used = _when(c.previous_secret_last_used_at)
            previous = f"valid until {_when(c.previous_secret_until)}, last used {used}"
        rows.append(
            [
                c.client_id,
                c.name,
                "revoked" if c.revoked_at else "active",
                " ".join(c.scopes),
                _when(c.secret_last_used_at),
                previous,
                " ".join(c.redirect_uris),
            ]
        )
    header = ["CLIENT ID", "NAME", "STATUS", "SCOPES", "SECRET LAST USED", "PREVIOUS SECRET"]
    return table(rows, [*header, "REDIRECT URIS"])


async def _client(settings: Any, args: argparse.Namespace) -> str:
    """The relying-party registry, straight in the database (an operator's command)."""
    from signer.flows.registry import RpRegistry
    from signer.storage.signing_requests import RpClientStore

    pool = await open_pool(settings)
    try:
        configured = timedelta(seconds=settings.clients.secret_grace_seconds)
        audit = admin_log(settings, getattr(args, "actor", None), _now)
        registry = RpRegistry(RpClientStore(pool), _now, grace=configured, audit=audit)
        if args.client_command == "add":
            added = await registry.add(args.name, args.redirect_uri, args.scope or ("*",))
            return (
                f"client_id: {added.client.client_id}\nclient_secret: {added.secret}\n"
                f"scopes: {' '.join(added.client.scopes)}\n"
                "(the secret is shown only now; only its hash is stored)"
            )
        if args.client_command == "rotate":
            chosen = grace(args.grace)
            secret = await registry.rotate(args.client_id, chosen)
            kept = configured if chosen is None else chosen
            return (
                f"client_id: {args.client_id}\nclient_secret: {secret}\n(shown only now; "
                f"the previous secret works for {int(kept.total_seconds())} s more)"
            )
        if args.client_command == "scope":
            scopes = await registry.set_scopes(args.client_id, args.scope)
            return f"client_id: {args.client_id}\nscopes: {' '.join(scopes)}"
        if args.client_command == "revoke":
            await registry.revoke(args.client_id)
            return f"revoked: {args.client_id}"
        return _list(await registry.all(), _now())
    finally:
        await pool.close()


def cmd_client(args: argparse.Namespace) -> int:
    print(asyncio.run(_client(load(args), args)))
    return 0


def register(sub: Any, with_config: WithConfig, url: str) -> None:
    """Add this group's commands to the `qes` parser."""
    client = sub.add_parser("client", help="register web apps that send people to sign")
    csub = client.add_subparsers(dest="client_command", required=True)
    add = with_config(csub.add_parser("add", help="register a web app; prints its secret once"))
    add.add_argument("name", help="shown to signers on the consent page")
    add.add_argument("--redirect-uri", action="append", required=True, metavar="URI")
    add.add_argument("--scope", action="append", metavar="SCOPE", help=_SCOPE_HELP)
    with_config(csub.add_parser("list", help="list web apps, their scopes and secret use"))
    rotate = with_config(csub.add_parser("rotate", help="issue a new secret"))
    rotate.add_argument("client_id")
    rotate.add_argument(
        "--grace",
        metavar="DURATION",
        help="how long the old secret keeps working (default: [clients] secret_grace_seconds)",
    )
    scope = with_config(csub.add_parser("scope", help="replace a web app's scopes"))
    scope.add_argument("client_id")
    scope.add_argument("--scope", action="append", required=True, metavar="SCOPE", help=_SCOPE_HELP)
    revoke = with_config(csub.add_parser("revoke", help="revoke a web app"))
    revoke.add_argument("client_id")
    for changing in (add, rotate, scope, revoke):
        changing.add_argument(
            "--actor", help="who makes the change, for the transparency log (default: you)"
        )
    client.set_defaults(func=cmd_client)
