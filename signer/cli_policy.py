"""``qes policy check`` (and, with the kill switch, ``qes suspend|resume|suspensions``).

Kept out of :mod:`signer.cli` so the parser there only gains one ``register`` call.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from signer.errors import ConfigError
from signer.policy import PolicyFileError
from signer.policy_file import load_policy_file

WithConfig = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


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


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], with_config: WithConfig
) -> None:
    policy = sub.add_parser("policy", help="the signing policy file")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    check = psub.add_parser("check", help="validate a policy file (exit 1 naming the line)")
    check.add_argument("file", help="the policy TOML file")
    check.set_defaults(func=cmd_policy_check)
