"""`qes audit ...`: issued certificates, the transparency log, retention and data-subject
requests."""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signer.cli.anchor import register as register_anchor
from signer.cli.client import ApiClient
from signer.cli.common import (
    WithConfig,
    admin_log,
    connect,
    fail,
    load,
    print_above_bar,
    read_token,
    table,
    utc_time,
)
from signer.cli.common import pool as open_pool
from signer.errors import SignerError


def cmd_audit_list(args: argparse.Namespace) -> int:
    client = ApiClient(args.url, read_token(args.token_file))
    page = client.get(
        "/api/v1/certificates",
        subject=args.subject,
        issuer=args.issuer,
        client_id=args.client,
        status=args.status,
        since=args.since,
        until=args.until,
        limit=args.limit,
        cursor=args.cursor,
    )
    rows = [
        [
            r["created_at"][:19].replace("T", " "),
            r["serial"],
            r["status"],
            r["profile"],
            r["identity"]["subject"],
            r["subject_dn"],
            str(r["signed_count"] or 0),
            "yes" if r["key_destroyed"] else "NO",
        ]
        for r in page["items"]
    ]
    print(
        table(
            rows,
            [
                "created (UTC)",
                "serial",
                "status",
                "profile",
                "subject",
                "certificate subject",
                "signed",
                "key destroyed",
            ],
        )
    )
    if page["next_cursor"]:
        print(f"\nmore: repeat this command with --cursor {page['next_cursor']}")
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    client = ApiClient(args.url, read_token(args.token_file))
    rec = client.get(f"/api/v1/certificates/{args.serial}")
    ident = rec["identity"]
    fields = [
        ("serial", rec["serial"]),
        ("status", rec["status"]),
        ("created", rec["created_at"]),
        ("completed", rec["completed_at"] or "-"),
        ("certificate subject", rec["subject_dn"]),
        ("profile", rec["profile"]),
        ("valid", f"{rec['not_before']} .. {rec['not_after']}"),
        ("identity", f"{ident['subject']} at {ident['issuer']} ({ident['issuer_name']})"),
        ("client", ident["client_id"] or "-"),
        (
            "digests",
            f"{rec['digest_count']} x {rec['hash_algorithm']}, {rec['signed_count'] or 0} signed",
        ),
        ("key evidence", ", ".join(f"{k}={v}" for k, v in rec["key_evidence"].items())),
        ("key destroyed", _key_fate(rec)),
        ("failure", rec["failure"] or "-"),
        ("request id", rec["request_id"]),
    ]
    width = max(len(k) for k, _ in fields)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in fields))
    if args.pem:
        print(rec["certificate"], end="")
    return 0


def _key_fate(rec: dict[str, Any]) -> str:
    """What became of the record's key: confirmed destroyed, gone with its HSM session (a
    record the sweeper ended 'abandoned', signer.signing.sweeper), or not confirmed."""
    if rec["key_destroyed"]:
        return "yes (confirmed)"
    if (rec.get("destruction") or {}).get("ended_with_session"):
        return "with its HSM session when its process ended (a session object; not confirmed)"
    return "NOT CONFIRMED"


def cmd_audit_watch(args: argparse.Namespace) -> int:
    """Follow the log (signer.cli.watch): a line per matching entry, optionally a signed webhook."""
    from signer.cli.watch import AnchorLines, Watch, WatchStopped, Webhook, entry_line

    if not args.interval > 0:
        return fail("--interval must be a positive number of seconds")
    webhook = None
    if args.webhook:
        if not args.webhook_secret_file:
            return fail("--webhook needs --webhook-secret-file (deliveries are HMAC-signed)")
        secret = read_token(args.webhook_secret_file).encode()
        webhook = Webhook(args.webhook, secret, args.webhook_attempts, args.webhook_backoff)
    read_token(args.token_file)  # fail now, not at the first poll
    client = lambda: ApiClient(args.url, read_token(args.token_file))  # noqa: E731
    anchor = AnchorLines(Path(args.anchor), client) if args.anchor else None
    watch = Watch(
        client=client,
        start=args.from_index,
        subject=args.identity,
        issuer=args.issuer,
        client_id=args.client,
        interval=args.interval,
        once=args.once,
    )
    bar = None
    try:
        for items, position, size in watch.pages():
            if anchor is not None:
                anchor.poll(functools.partial(print_above_bar, bar))
            if bar is None and not args.quiet and sys.stderr.isatty() and size - position > 1000:
                from tqdm import tqdm

                bar = tqdm(
                    total=size - args.from_index,
                    unit="entry",
                    desc="catching up",
                    file=sys.stderr,
                    initial=position - args.from_index,
                )
            for item in items:
                if webhook is not None:
                    webhook.deliver(item)
                print_above_bar(bar, entry_line(item))
            sys.stdout.flush()
            if bar is not None:
                bar.n = min(position, size) - args.from_index
                bar.refresh()
                if position >= size:
                    bar.close()
                    bar = None
    except WatchStopped as exc:
        return fail(str(exc))
    finally:
        if bar is not None:
            bar.close()
    return 1 if anchor is not None and anchor.broken else 0


# ---------------------------------------------------------------- audit: transparency log


async def _log_verifier(settings: Any, vkey: str | None) -> Any:
    """The checkpoint verifier: ``--vkey`` when given, else the log key's public half (HSM)."""
    from ca.checkpoint import NoteError, NoteVerifier
    from signer.keys import Hsm
    from signer.translog.log import log_verifier

    if vkey:
        try:
            return NoteVerifier.from_vkey(vkey)
        except NoteError as exc:
            raise SignerError(f"--vkey: {exc}") from exc
    hsm = await asyncio.to_thread(Hsm.open, settings.hsm)
    try:
        return await hsm.run(lambda s: log_verifier(s, settings.log))
    finally:
        await asyncio.to_thread(hsm.close)


async def _audit_verify(settings: Any, vkey: str | None, quiet: bool) -> str:
    from signer.storage.log import fetch_sizes
    from signer.translog.audit import verify_log
    from signer.translog.log import load_privacy_key

    key = load_privacy_key(settings)
    verifier = await _log_verifier(settings, vkey)
    conn = await connect(settings)
    try:
        total, _ = await fetch_sizes(conn)
        bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="entry", desc="verifying", file=sys.stderr)
        try:
            report = await verify_log(
                conn, verifier, settings.log.origin, key, bar.update if bar else lambda n: None
            )
        finally:
            if bar is not None:
                bar.close()
    finally:
        await conn.close()
    root = base64.b64encode(report.checkpoint.root_hash).decode()
    purged = f" ({report.purged} purged: fields not compared)" if report.purged else ""
    return (
        f"log verified: {report.entries} entries{purged}; signed checkpoint size "
        f"{report.checkpoint.size}, root {root}"
    )


def _read_export(export: str, manifest: str) -> tuple[bytes, dict[str, Any]]:
    import json

    try:
        data = Path(export).read_bytes()
        body = json.loads(Path(manifest).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SignerError(f"{exc.filename}: {exc.strerror}") from exc
    except ValueError as exc:
        raise SignerError(f"{manifest}: not a JSON manifest") from exc
    if not isinstance(body, dict):
        raise SignerError(f"{manifest}: not a JSON manifest")
    return data, body


async def _audit_verify_export(
    settings: Any, vkey: str | None, data: bytes, body: dict[str, Any]
) -> str:
    from signer.storage.log import LogStore
    from signer.translog.audit import verify_export

    verifier = await _log_verifier(settings, vkey)
    pool = await open_pool(settings)
    try:
        origin = settings.log.origin
        report = await verify_export(LogStore(pool, origin), verifier, origin, data, body)
    finally:
        await pool.close()
    return (
        f"export verified: {report.rows} rows, sha256 {report.sha256}; manifest signed by the"
        f" log key; its checkpoint (size {report.checkpoint.size}) is consistent with the"
        f" latest (size {report.latest.size})"
    )


def _audit_verify_log_export(args: argparse.Namespace) -> str:
    from signer.translog.audit import verify_log_export

    settings = None if args.vkey else load(args)
    verifier = asyncio.run(_log_verifier(settings, args.vkey))
    try:
        with open(args.log_export, "rb") as f:
            report = verify_log_export(f, verifier)
    except OSError as exc:
        raise SignerError(f"{args.log_export}: {exc.strerror}") from exc
    return (
        f"log export verified: {report.entries} entries; their root is the one the log key"
        f" signed for {report.checkpoint.origin} at size {report.checkpoint.size}"
    )


async def _audit_export_log(settings: Any, write: Any) -> Any:
    from signer.storage.log import LogStore
    from signer.translog.audit import EXPORT_WINDOW, export_log

    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None and sys.stderr.isatty() and total > EXPORT_WINDOW:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="entry", desc="exporting", file=sys.stderr)
        if bar is not None:
            bar.update(done - bar.n)

    pool = await open_pool(settings)
    try:
        store = LogStore(pool, settings.log.origin)
        return await export_log(store, settings.log.origin, write, progress)
    finally:
        await pool.close()
        if bar is not None:
            bar.close()


def cmd_audit_export_log(args: argparse.Namespace) -> int:
    settings = load(args)
    if args.out == "-":
        checkpoint = asyncio.run(_audit_export_log(settings, sys.stdout.write))
    else:
        try:
            with open(args.out, "w", encoding="utf-8") as out:
                checkpoint = asyncio.run(_audit_export_log(settings, out.write))
        except OSError as exc:
            return fail(f"{args.out}: {exc.strerror}")
    if checkpoint is None:
        return fail("no checkpoint published yet: nothing to export")
    if args.out != "-":
        print(f"exported {checkpoint.size} entries up to the checkpoint of size {checkpoint.size}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from signer.translog.audit import LogVerificationFailed

    if (args.export is None) != (args.manifest is None):
        return fail("--export and --manifest go together")
    try:
        if args.log_export is not None:
            print(_audit_verify_log_export(args))
            return 0
        if args.export is not None:
            print(
                asyncio.run(
                    _audit_verify_export(
                        load(args), args.vkey, *_read_export(args.export, args.manifest)
                    )
                )
            )
            return 0
        print(asyncio.run(_audit_verify(load(args), args.vkey, args.quiet)))
    except LogVerificationFailed as exc:
        what = "export" if args.export else "log export" if args.log_export else "log"
        return fail(f"{what} verification failed: {exc}")
    return 0


async def _audit_consistency(settings: Any, vkey: str | None, old: str, new: str) -> str:
    from signer.storage.log import LogStore
    from signer.translog.audit import check_consistency

    verifier = await _log_verifier(settings, vkey)
    pool = await open_pool(settings)
    try:
        a, b, path = await check_consistency(
            LogStore(pool, settings.log.origin), verifier, settings.log.origin, old, new
        )
    finally:
        await pool.close()
    lines = [f"consistent: size {a.size} -> {b.size} (RFC 9162 consistency proof)"]
    lines += [base64.b64encode(h).decode() for h in path]
    return "\n".join(lines)


def cmd_audit_consistency(args: argparse.Namespace) -> int:
    from signer.translog.audit import LogVerificationFailed

    try:
        print(asyncio.run(_audit_consistency(load(args), args.vkey, args.old, args.new)))
    except LogVerificationFailed as exc:
        return fail(f"consistency check failed: {exc}")
    return 0


# ---------------------------------------------------------------- audit: retention, GDPR


def _cutoff(text: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or time; ``SignerError`` when it is neither."""
    try:
        return utc_time(text)
    except ValueError as exc:
        raise SignerError(f"--before {text}: not an ISO 8601 date") from exc


async def _audit_purge(settings: Any, before: datetime, actor: str | None) -> Any:
    """The tombstones and the finished web-signing requests (and PDFs) ended before, with the
    purge's admin-action log entry, in one transaction."""
    from signer.storage.retention import RetentionStore
    from signer.translog import retention

    now = datetime.now(UTC)
    pool = await open_pool(settings)
    try:
        return await retention.purge(
            RetentionStore(pool),
            before,
            now=now,
            retention_days=settings.audit.retention_days,
            audit=admin_log(settings, actor, lambda: now),
        )
    finally:
        await pool.close()


def cmd_audit_purge(args: argparse.Namespace) -> int:
    """Erase the personal payload of records older than the retention (GDPR Art. 17)."""
    settings = load(args)
    done = asyncio.run(_audit_purge(settings, _cutoff(args.before), args.actor))
    print(
        f"purged {done.records} record(s), {done.approval_requests} approval request(s) with"
        f" {done.approval_decisions} decision(s), {done.admin_actions} admin action(s) and"
        f" {done.web_requests} finished web-signing request(s) with their PDFs from before"
        f" {args.before}; their log entries remain, and the purge is one more (admin action)"
    )
    return 0


async def _audit_subject(settings: Any, subject: str, issuer: str | None) -> tuple[Any, Any]:
    from signer.storage.backfill import BackfillStore
    from signer.storage.request_retention import RequestRetentionStore
    from signer.storage.retention import RetentionStore
    from signer.translog import retention
    from signer.translog.backfill import backfill
    from signer.translog.log import load_privacy_key

    key = load_privacy_key(settings)
    pool = await open_pool(settings)
    try:
        await backfill(BackfillStore(pool), key)  # older entries into the subject index first
        issuers = sorted({i.issuer for i in settings.issuers})
        report = await retention.find_subject(RetentionStore(pool), key, subject, issuer, issuers)
        web = await RequestRetentionStore(pool).subject_requests(subject, issuer)
        return report, web
    finally:
        await pool.close()


def cmd_audit_subject(args: argparse.Namespace) -> int:
    """A data-subject access request (GDPR Art. 15): the person's records and log entries."""
    import json

    report, web = asyncio.run(_audit_subject(load(args), args.subject, args.issuer))
    records = [
        {
            "serial": r.serial,
            "status": r.status,
            "created_at": r.created_at.isoformat(),
            "issuer": r.issuer,
            "client_id": r.client_id,
            "profile": r.profile,
            "subject_dn": r.subject_dn,
            "log_index": r.log_index,
        }
        for r in report.records
    ]
    approvals = _subject_approvals(report)
    approvals["web_signing_requests"] = [_plain(w) for w in web]
    if args.json:
        body = {"subject": report.subject, "records": records, "refusals": list(report.refusals)}
        print(json.dumps({**body, **approvals}, indent=2))
        return 0
    print(f"{len(records)} signing record(s) of {report.subject}")
    if records:
        print(
            table(
                [
                    [
                        r["created_at"][:19].replace("T", " "),
                        r["serial"],
                        r["status"],
                        r["profile"],
                        r["client_id"] or "-",
                        str(r["log_index"]) if r["log_index"] is not None else "-",
                        r["subject_dn"],
                    ]
                    for r in records
                ],
                ["created (UTC)", "serial", "status", "profile", "client", "log index", "subject"],
            )
        )
    print(f"{len(report.refusals)} refused request(s) in the log")
    for item in report.refusals:
        print(f"  log index {item['index']}  {item['time']}  {item['reason']}")
    _print_subject_approvals(approvals)
    return 0


def _plain(item: Any) -> dict[str, Any]:
    out = asdict(item)
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in out.items()}


def _subject_approvals(report: Any) -> dict[str, list[dict[str, Any]]]:
    """The approval requests, decisions and admin actions of a subject report, as JSON."""
    return {
        "approval_requests": [_plain(r) for r in report.approval_requests],
        "approval_decisions": [_plain(d) for d in report.approval_decisions],
        "admin_actions": [_plain(a) for a in report.admin_actions],
    }


#: The further lists of ``qes audit subject``: the report's key, the heading after the count,
#: and one line per item.
_SUBJECT_LISTS: tuple[tuple[str, str, Callable[[dict[str, Any]], str]], ...] = (
    ("approval_requests", "approval request(s) made",
     lambda r: f"  {r['created_at'][:19]}  {r['id']}  {r['status']}"
               f"  {r['digest_count']} digest(s)"),
    ("approval_decisions", "approval decision(s) made",
     lambda d: f"  log index {d['log_index']}  {d['decided_at'][:19]}  {d['decision']}"
               f" request {d['approval_request']}"),
    ("admin_actions", "admin action(s) as target or actor",
     lambda a: f"  {a['acted_at'][:19]}  {a['id']}  {a['action']} {a['scope']} (as {a['role']})"),
    ("web_signing_requests", "web-signing request(s) still kept",
     lambda w: f"  {w['created_at'][:19]}  {w['id']}  {w['status']}  client {w['client_id']}"
               f"  {w['pdfs']} PDF(s)"),
)  # fmt: skip


def _print_subject_approvals(found: dict[str, list[dict[str, Any]]]) -> None:
    for key, heading, line in _SUBJECT_LISTS:
        print(f"{len(found[key])} {heading}")
        for item in found[key]:
            print(line(item))


def _index(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("must be a non-negative integer")
    return int(text)


def register(sub: Any, with_config: WithConfig, url: str) -> None:
    """Add `qes audit ...` to the `qes` parser."""
    audit = sub.add_parser("audit", help="inspect issued certificates (auditor token)")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    _register_records(asub, url)
    _register_watch(asub, url)
    _register_retention(asub, with_config)
    _register_log(asub, with_config)
    register_anchor(asub, with_config)


def _register_records(asub: Any, url: str) -> None:
    for sp in (
        asub.add_parser("list", help="list issued certificates"),
        asub.add_parser("show", help="show one certificate record"),
    ):
        sp.add_argument("--token-file", required=True)
        sp.add_argument("--url", default=url)
    lst = asub.choices["list"]
    for name in ("subject", "issuer", "client", "status", "since", "until", "cursor"):
        lst.add_argument(f"--{name}")
    lst.add_argument("--limit", type=int, default=50)
    lst.set_defaults(func=cmd_audit_list)
    show = asub.choices["show"]
    show.add_argument("serial")
    show.add_argument("--pem", action="store_true", help="also print the certificate")
    show.set_defaults(func=cmd_audit_show)


def _register_watch(asub: Any, url: str) -> None:
    watch = asub.add_parser("watch", help="follow new log entries; print them or post a webhook")
    watch.add_argument("--token-file", required=True, help="file holding the auditor token")
    watch.add_argument("--url", default=url)
    watch.add_argument("--identity", help="token subject to follow")
    watch.add_argument("--issuer", help="token issuer (iss) of --identity")
    watch.add_argument("--client", help="relying-party client id to follow")
    watch.add_argument(
        "--from",
        dest="from_index",
        type=_index,
        default=0,
        metavar="INDEX",
        help="first log index (resume: the last printed index + 1)",
    )
    watch.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    watch.add_argument("--once", action="store_true", help="stop when caught up")
    watch.add_argument("--webhook", metavar="URL", help="POST each entry as JSON")
    watch.add_argument("--webhook-secret-file", help="HMAC-SHA256 key for the signature header")
    watch.add_argument("--webhook-attempts", type=int, default=6)
    watch.add_argument("--webhook-backoff", type=float, default=1.0, help="first retry delay, s")
    watch.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    watch.add_argument(
        "--anchor",
        metavar="FILE",
        help="the log.anchor_file: show it and whether the log extends it (exit 1 if not)",
    )
    watch.set_defaults(func=cmd_audit_watch)


def _register_retention(asub: Any, with_config: WithConfig) -> None:
    purge = with_config(
        asub.add_parser("purge", help="erase personal data of records older than the retention")
    )
    purge.add_argument("--before", required=True, metavar="DATE", help="ISO 8601 date, UTC")
    purge.add_argument("--actor", help="who purges, for the transparency log (default: you)")
    purge.set_defaults(func=cmd_audit_purge)
    subject = with_config(
        asub.add_parser("subject", help="data-subject request: a person's records and entries")
    )
    subject.add_argument("--subject", required=True, help="token subject (sub)")
    subject.add_argument("--issuer", help="token issuer (iss); default: every configured issuer")
    subject.add_argument("--json", action="store_true", help="machine-readable output")
    subject.set_defaults(func=cmd_audit_subject)


def _register_log(asub: Any, with_config: WithConfig) -> None:
    verify = with_config(
        asub.add_parser("verify", help="recompute the transparency log and check its checkpoint")
    )
    consistency = with_config(
        asub.add_parser("consistency", help="prove a later checkpoint extends an earlier one")
    )
    for sp in (verify, consistency):
        sp.add_argument("--vkey", help="checkpoint verifier key (default: the log key in the HSM)")
    verify.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    verify.add_argument("--export", metavar="FILE", help="an audit-UI export to check ...")
    verify.add_argument("--manifest", metavar="FILE", help="... against its signed manifest")
    verify.add_argument(
        "--log-export",
        metavar="FILE",
        help="check an exported log offline (no database; give --vkey for no HSM either)",
    )
    verify.set_defaults(func=cmd_audit_verify)
    export_log = with_config(
        asub.add_parser("export-log", help="write the log up to its checkpoint (JSON Lines)")
    )
    export_log.add_argument("out", metavar="FILE", help="where to write it ('-' for stdout)")
    export_log.set_defaults(func=cmd_audit_export_log)
    consistency.add_argument("old", help="checkpoint file, or size of a stored checkpoint")
    consistency.add_argument("new", help="checkpoint file, or size of a stored checkpoint")
    consistency.set_defaults(func=cmd_audit_consistency)
