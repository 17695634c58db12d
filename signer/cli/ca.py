"""`qes ca ...`: acts on the CA itself, each logged as an admin act of the transparency log.

`qes ca revoke` revokes the issuing CA or the TSA certificate (:mod:`signer.signing.revocation`):
stored in PostgreSQL, so every replica's CRLs and OCSP answers carry it from their next
request on (a ``certificate-revoke`` entry). `qes ca rollover issuing|tsa` makes a pending
generation (new HSM key and certificate) while the current one serves, `qes ca switch
issuing|tsa` makes it current (``ca-rollover``, ``ca-switch`` entries;
:mod:`signer.signing.rollover`); replicas take a switch on their next start."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signer.cli import ceremony
from signer.cli.common import WithConfig, admin_log, load
from signer.cli.common import pool as open_pool
from signer.errors import SignerError

#: RFC 5280 §5.3.1 reasons `qes ca revoke` accepts (no certificateHold: a revocation is final).
_REASON_HELP = (
    "RFC 5280 §5.3.1 reason: keyCompromise, cACompromise, affiliationChanged, superseded, "
    "cessationOfOperation, privilegeWithdrawn or unspecified (left out of the CRL entry)"
)


def _moment(text: str | None) -> datetime | None:
    """``--invalidity-date``: an ISO 8601 time; UTC when it names no zone."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SignerError(f"--invalidity-date {text[:40]!r}: an ISO 8601 time") from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _revoke(settings: Any, args: argparse.Namespace) -> str:
    from signer.signing.revocation import RevocationOrder, revoke
    from signer.storage.authority import CaCertificateStore
    from signer.storage.revocations import RevocationStore

    order = RevocationOrder(
        which=args.certificate,
        reason=args.reason,
        actor=args.actor or getpass.getuser(),
        invalidity_date=_moment(args.invalidity_date),
    )
    now = datetime.now(UTC)
    audit = admin_log(settings, order.actor, lambda: now)
    pool = await open_pool(settings)
    try:
        done = await revoke(
            CaCertificateStore(pool), RevocationStore(pool), settings, order, now, audit
        )
    finally:
        await pool.close()
    r = done.revocation
    return (
        f"revoked: {done.role} certificate {r.serial:x} "
        f"({done.certificate.subject.rfc4514_string()})\n"
        f"reason: {r.reason.value}; at {r.revoked_at.isoformat()}"
        + ("" if r.invalidity_date is None else f"; invalid since {r.invalidity_date.isoformat()}")
        + "\n(on the CRL and in OCSP answers of every replica from their next request)"
    )


def _describe(g: Any) -> str:
    """One line about a generation: role, number, state, key label, serial, subject."""
    return (
        f"{g.role} g{g.number} ({g.state}): key {g.key_label}, certificate "
        f"{g.certificate.serial_number:x} ({g.certificate.subject.rfc4514_string()})"
    )


async def _roll(settings: Any, args: argparse.Namespace) -> str:
    """`qes ca rollover ROLE` and `qes ca switch ROLE`."""
    from signer.keys import Hsm
    from signer.signing.rollover import rollover, switch
    from signer.storage.authority import CaCertificateStore

    now = datetime.now(UTC)
    audit = admin_log(settings, args.actor, lambda: now)
    pool = await open_pool(settings)
    try:
        store = CaCertificateStore(pool)
        if args.ca_command == "switch":
            ended, started = await switch(store, settings, args.role, now, audit)
            return (
                f"switched at {now.isoformat()}: {_describe(started)}\nended: {_describe(ended)}"
                "\n(replicas issue with it from their next start: restart them)"
            )
        hsm = await asyncio.to_thread(Hsm.open, settings.hsm)
        try:
            made = await rollover(hsm, store, settings, args.role, now, audit)
        finally:
            await asyncio.to_thread(hsm.close)
    finally:
        await pool.close()
    return (
        f"pending: {_describe(made)}\n(in the trust bundle from the replicas' next start;"
        f" `qes ca switch {args.role}` makes it current)"
    )


def _transcript(args: argparse.Namespace) -> str:
    """`qes ca transcript show|import FILE`: the witness sheet, or the steps into the log."""
    from signer.translog.ceremony import TranscriptFile

    steps = TranscriptFile(Path(args.file)).read()
    if not steps:
        raise SignerError(f"{args.file}: no transcript there (no steps)")
    if args.transcript_command == "show":
        from ca.ceremony import witness_sheet

        return witness_sheet(steps, args.witness or ("", "", "")).rstrip("\n")
    return asyncio.run(_import(load(args), args, steps))


async def _import(settings: Any, args: argparse.Namespace, steps: Any) -> str:
    from signer.storage.policy import PolicyStore
    from signer.translog.ceremony import import_steps

    audit = admin_log(settings, args.actor, lambda: datetime.now(UTC))
    pool = await open_pool(settings)
    try:
        added, known = await import_steps(PolicyStore(pool), audit, steps)
    finally:
        await pool.close()
    head = steps[-1].digest.hex()
    return f"logged {added} ceremony step(s), {known} logged before; transcript head {head}"


def cmd_ca(args: argparse.Namespace) -> int:
    if args.ca_command == "transcript":
        print(_transcript(args))
        return 0
    act = _revoke if args.ca_command == "revoke" else _roll
    print(asyncio.run(act(load(args), args)))
    return 0


def _register_transcript(csub: Any, with_config: WithConfig) -> None:
    transcript = csub.add_parser("transcript", help="a key ceremony's transcript")
    tsub = transcript.add_subparsers(dest="transcript_command", required=True)
    show = with_config(
        tsub.add_parser("show", help="check the chain and print the sheet witnesses sign")
    )
    show.add_argument("--witness", action="append", metavar="NAME", help="a witness (repeat)")
    imported = with_config(
        tsub.add_parser("import", help="log each step not logged yet (ca-ceremony entries)")
    )
    imported.add_argument("--actor", help="who imports (default: this account)")
    for command in (show, imported):
        command.add_argument("file", metavar="FILE", help="the transcript (JSON lines)")


def register(sub: Any, with_config: WithConfig) -> None:
    """Add this group's commands to the `qes` parser."""
    ca = sub.add_parser(
        "ca", help="acts on the CA: key ceremony, revoke, roll over and switch CA or TSA"
    )
    csub = ca.add_subparsers(dest="ca_command", required=True)
    revoke = with_config(
        csub.add_parser("revoke", help="revoke the issuing CA or the TSA certificate")
    )
    revoke.add_argument(
        "certificate", metavar="WHICH", help="issuing, tsa, or the certificate's serial in hex"
    )
    revoke.add_argument("--reason", required=True, metavar="REASON", help=_REASON_HELP)
    revoke.add_argument(
        "--invalidity-date",
        metavar="TIME",
        help="since when the key is known or suspected compromised (ISO 8601; RFC 5280 §5.3.2)",
    )
    revoke.add_argument("--actor", help="who revokes, for the log (default: this account)")
    for name, what in (
        ("rollover", "make a new TSA key and certificate, pending (issuing CA: the ceremony)"),
        ("switch", "make the pending issuing CA or TSA current, the old one past"),
    ):
        command = with_config(csub.add_parser(name, help=what))
        command.add_argument("role", choices=("issuing", "tsa"), help="which to roll")
        command.add_argument("--actor", help="who acts, for the log (default: this account)")
    _register_transcript(csub, with_config)
    ceremony.register(csub, with_config)
    ca.set_defaults(func=cmd_ca)
