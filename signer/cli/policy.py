"""``qes policy check`` and the kill switch: ``qes suspend|resume|suspensions``.

Kept out of :mod:`signer.cli.main` so the parser there only gains one ``register`` call.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signer.cli.common import WithConfig
from signer.errors import ConfigError
from signer.policy.file import load_policy_file
from signer.policy.rules import PolicyFileError


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate a policy file before deploying it: one line, exit 1 with the line named."""
    path = Path(args.file)
    try:
        policy = load_policy_file(path)
    except PolicyFileError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    groups = len(policy.approver_groups)
    print(f"{path}: ok, {len(policy.rules)} rules, {groups} approver groups")
    return 0


def _target(args: argparse.Namespace, settings: Any) -> Any:
    from signer.policy.enforcement import resolve_issuer
    from signer.storage.policy import Target

    if args.scope == "identity":
        issuer = resolve_issuer(settings, args.issuer)
        return Target("identity", token_issuer=issuer, token_subject=args.subject)
    if args.scope == "client":
        return Target("client", client_id=args.client_id)
    return Target("all")


async def _kill_switch(args: argparse.Namespace, action: str | None) -> str:
    """Suspend, resume or list, straight in the database (an operator's command, like
    ``qes client``): the same transaction and log entry as the admin API."""
    from signer.cli.common import load as _settings
    from signer.cli.common import pool as _pool
    from signer.cli.common import table as _table
    from signer.policy.enforcement import Suspensions, cli_actor
    from signer.storage.policy import PolicyStore
    from signer.translog.log import load_privacy_key

    settings = _settings(args)
    key = load_privacy_key(settings)
    pool = await _pool(settings)
    try:
        switch = Suspensions(PolicyStore(pool), key, lambda: datetime.now(UTC))
        if action is None:
            rows = [
                [
                    s.target.scope,
                    s.target.token_issuer or s.target.client_id or "*",
                    s.target.token_subject or "",
                    s.action.acted_at.isoformat(timespec="seconds"),
                    s.action.reason or "",
                ]
                for s in await switch.list()
            ]
            if not rows:
                return "nothing is suspended"
            return _table(rows, ["SCOPE", "ISSUER / CLIENT", "SUBJECT", "SINCE", "REASON"])
        target = _target(args, settings)
        done = await switch.act(
            action,
            target,
            actor_issuer=None,
            actor_subject=cli_actor(),
            request_id=f"cli-{uuid.uuid4().hex}",
            reason=getattr(args, "reason", None),
        )
        if done is None:
            return f"already suspended: {target.describe()}"
        return f"{action}ed: {target.describe()} (logged, action {done.id})"
    finally:
        await pool.close()


def cmd_suspend(args: argparse.Namespace) -> int:
    print(asyncio.run(_kill_switch(args, "suspend")))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    print(asyncio.run(_kill_switch(args, "resume")))
    return 0


def cmd_suspensions(args: argparse.Namespace) -> int:
    print(asyncio.run(_kill_switch(args, None)))
    return 0


def _targets(parser: argparse.ArgumentParser, with_config: WithConfig, *, reason: bool) -> None:
    scopes = parser.add_subparsers(dest="scope", required=True)
    identity = with_config(scopes.add_parser("identity", help="one identity (iss + sub)"))
    identity.add_argument("issuer", help="the token issuer: its iss, or its [issuers.NAME]")
    identity.add_argument("subject", help="the token subject (sub)")
    client = with_config(scopes.add_parser("client", help="an RP client (client_id / azp)"))
    client.add_argument("client_id")
    everything = with_config(scopes.add_parser("all", help="the whole signer"))
    if reason:
        for p in (identity, client, everything):
            p.add_argument("--reason", help="why (kept with the action; committed in the log)")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], with_config: WithConfig
) -> None:
    policy = sub.add_parser("policy", help="the signing policy file")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    check = psub.add_parser("check", help="validate a policy file (exit 1 naming the line)")
    check.add_argument("file", help="the policy TOML file")
    check.set_defaults(func=cmd_policy_check)

    suspend = sub.add_parser("suspend", help="kill switch: stop an identity, client or all")
    _targets(suspend, with_config, reason=True)
    suspend.set_defaults(func=cmd_suspend)
    resume = sub.add_parser("resume", help="lift a suspension")
    _targets(resume, with_config, reason=True)
    resume.set_defaults(func=cmd_resume)
    listing = with_config(sub.add_parser("suspensions", help="list what is suspended"))
    listing.set_defaults(func=cmd_suspensions)
