"""`qes audit anchor`: how the database's log relates to the newest published checkpoint kept
outside the database (``log.anchor_file``, signer.translog.anchor), and the operator's
choices when it is behind."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from signer.cli.common import WithConfig, load
from signer.cli.common import pool as open_pool
from signer.errors import ConfigError

CHOICES = """\
The service refuses to sign and to publish until one of these is done:
  1. Bring the missing entries back (nothing is lost): recover PostgreSQL to a point in time
     after the checkpoint (point-in-time recovery from the WAL archive), or fail back to the
     server that had them (a synchronous standby never lacks a committed entry). The service
     resumes by itself at its next check.
  2. The entries are lost for good: accept the loss with `qes audit anchor --accept-loss`.
     The anchor is moved back to the database's newest checkpoint, and the old one is kept
     beside it (<anchor>.lost-<size>); signing resumes and the next checkpoint re-uses those
     indexes, a fork that relying parties holding the old checkpoint WILL see. Tell them
     (the kept checkpoint and this range) before you do it.
Do not delete the anchor file to get going: that hides the fork instead of declaring it."""


def register(
    asub: argparse._SubParsersAction[argparse.ArgumentParser], with_config: WithConfig
) -> None:
    anchor = with_config(
        asub.add_parser(
            "anchor", help="check the log against the newest published checkpoint (anchor file)"
        )
    )
    anchor.add_argument(
        "--accept-loss",
        action="store_true",
        help="declare the missing entries lost: move the anchor back (see the choices)",
    )
    anchor.set_defaults(func=cmd_audit_anchor)


def cmd_audit_anchor(args: argparse.Namespace) -> int:
    settings = load(args)
    if settings.log.anchor_file is None:
        raise ConfigError("log.anchor_file: not configured, so there is no anchor to check")
    ok, text = asyncio.run(_anchor(settings, accept_loss=args.accept_loss))
    print(text)
    return 0 if ok else 1


async def _anchor(settings: Any, *, accept_loss: bool) -> tuple[bool, str]:
    from signer.storage.anchor import AnchorStore
    from signer.storage.log import LogStore
    from signer.translog.anchor import CheckpointAnchor

    pool = await open_pool(settings)
    try:
        anchor = CheckpointAnchor(settings.log.anchor_file, AnchorStore(pool))
        result = await anchor.check()
        if result.anchor is None:
            return True, f"no checkpoint anchored yet in {anchor.path}"
        if result.ok:
            return True, (
                f"the log (size {result.sequenced}) extends the published checkpoint of size"
                f" {result.anchor.size} ({anchor.path})"
            )
        if not accept_loss:
            return False, f"{result.problem()}\n{CHOICES}"
        latest = await LogStore(pool, settings.log.origin).latest_checkpoint()
        kept = anchor.path.with_name(f"{anchor.path.name}.lost-{result.anchor.size}")
        kept.write_text(anchor.path.read_text(encoding="utf-8"), encoding="utf-8")
        if latest is None:
            anchor.path.unlink()
            return True, f"loss accepted: anchor removed (old one kept in {kept})"
        anchor.advance(settings.log.origin, latest.size, latest.root, latest.note, force=True)
        return True, (
            f"loss accepted: anchor moved back to the database's checkpoint of size"
            f" {latest.size}; the old one is kept in {kept}"
        )
    finally:
        await pool.close()
