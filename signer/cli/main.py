"""The `qes` command: one module per command group (service, sign, audit, clients, db, ltv,
policy, approvals, ca); this one builds the parser from their ``register`` functions and runs a
command.

Every failure ends with one line on stderr and a non-zero exit code; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from idp_adapter.errors import ConfigError as IdpConfigError
from signer.cli import (
    approvals,
    audit,
    backup,
    ca,
    clients,
    db,
    ltv,
    migrate,
    policy,
    service,
    sign,
)
from signer.cli.client import ClientError
from signer.cli.common import DEFAULT_URL, fail
from signer.errors import SignerError


def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sp.add_argument("--config", help="TOML config file (default: $QES_CONFIG)")
    return sp


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qes", description="qes-signer: remote signing service")
    sub = p.add_subparsers(dest="command", required=True)
    url = os.environ.get("QES_URL", DEFAULT_URL)
    for group in (service, sign, audit, clients, db, ltv):
        group.register(sub, with_config, url)
    policy.register(sub, with_config)
    ca.register(sub, with_config)
    approvals.register(sub, url)
    migrate.register(sub, with_config)
    backup.register(sub, with_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from signer.settings.logging import quiet_third_party_warnings

    quiet_third_party_warnings()
    args = parser().parse_args(argv)
    if args.command != "serve":
        from signer.settings.logging import configure

        configure("console", level=logging.WARNING)  # stdout is for the command's result
    try:
        return int(args.func(args))
    except (ClientError, SignerError, IdpConfigError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:  # a bug or an unexpected library error: still one line
        name = type(exc).__module__.split(".")[0]
        if name in ("pkcs11", "asyncpg", "aiohttp"):
            return fail(f"{type(exc).__name__}: {exc}")
        raise
