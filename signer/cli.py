"""The `qes` command: init, serve, sign, verify, audit, db.

Every failure ends with one line on stderr and a non-zero exit code; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from idp_adapter.errors import ConfigError as IdpConfigError
from signer.client import ApiClient, ClientError
from signer.errors import SignerError

DEFAULT_URL = "http://127.0.0.1:8780"
HASHES = ("sha256", "sha384", "sha512")


def _fail(message: str, code: int = 1) -> int:
    print(f"qes: {message}", file=sys.stderr)
    return code


def _settings(args: argparse.Namespace) -> Any:
    from signer.config import load_settings

    path = args.config or os.environ.get("QES_CONFIG")
    return load_settings(Path(path) if path else None)


# ---------------------------------------------------------------- init / serve


async def _init(settings: Any, force: bool) -> str:
    from signer.bootstrap import init_ca, init_log
    from signer.hsm import Hsm
    from signer.storage.authority import CaCertificateStore
    from signer.storage.db import create_pool

    if settings.database.url is None:
        raise SignerError("database.url: not configured (set QES_DATABASE_URL)")
    hsm = await asyncio.to_thread(Hsm.open, settings.hsm)
    try:
        pool = await create_pool(
            settings.database.url.reveal(),
            min_size=1,
            max_size=2,
            command_timeout=settings.database.command_timeout,
        )
        try:
            result = await init_ca(
                hsm, CaCertificateStore(pool), settings, datetime.now(UTC), force=force
            )
            log_result = await init_log(hsm, settings)
        finally:
            await pool.close()
    finally:
        await asyncio.to_thread(hsm.close)
    verb = "created" if result.created else "already present"
    lines = [
        f"CA {verb}: root {result.chain.root.subject.rfc4514_string()}, issuing "
        f"{result.chain.issuing.subject.rfc4514_string()}"
    ]
    if result.tsa is not None:
        tsa_verb = "created" if result.tsa_created else "already present"
        lines.append(f"TSA {tsa_verb}: {result.tsa.subject.rfc4514_string()}")
    else:
        lines.append(f"TSA: external, {settings.tsa.url}")
    lines.append(log_result.describe())
    return "\n".join(lines)


def warn_derived_origin(settings: Any) -> None:
    """A structlog warning when ``log.origin`` was derived from ``server.public_url``.

    The origin names the log in every checkpoint and is the log key's note name (C2SP
    tlog-checkpoint): once checkpoints are published it must never change, while a public URL
    does (a new host name, a port, a proxy). Production sets ``[log] origin`` explicitly."""
    if settings.log.origin_derived:
        import structlog

        structlog.get_logger("signer.cli").warning(
            "log_origin_derived",
            origin=settings.log.origin,
            advice="set [log] origin (QES__LOG__ORIGIN) explicitly and never change it:"
            " checkpoints signed under one origin do not verify under another",
        )


def cmd_init(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(asyncio.run(_init(settings, args.force)))
    return 0


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_stop_requested: list[int] = []


def _note_stop(signum: int, _frame: object) -> None:
    _stop_requested.append(signum)


def cmd_serve(args: argparse.Namespace) -> int:
    for signum in _STOP_SIGNALS:  # from the first moment: a stop during start-up is honoured
        signal.signal(signum, _note_stop)
    settings = _settings(args)
    from signer.logging import configure

    configure(settings.server.log_format)
    from signer import serving

    ssl_context = serving.listener_tls(settings, announce=not args.single)  # one-line errors
    if not args.single:  # once per `qes serve`, not once per worker
        warn_derived_origin(settings)
    if settings.server.workers > 1 and not args.single:
        with serving.supervisor_metrics(settings):
            return _supervise(args, settings.server.workers)
    asyncio.run(_serve(settings, ssl_context))
    return 0


async def _serve(settings: Any, ssl_context: Any = None) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully: stop accepting, let in-flight
    requests finish (up to ``server.shutdown_timeout``), close the pool and the HSM. Repeated
    signals (the process group's and the supervisor's) trigger one shutdown, not several."""
    from aiohttp import web

    from signer import serving
    from signer.api.server import SignerRunner
    from signer.app import create_app

    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:  # during setup too: one stop, however many signals
        loop.add_signal_handler(signum, _stop_requested.append, signum)
    runner = SignerRunner(
        create_app(settings),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.server.shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            settings.server.host,
            settings.server.port,
            reuse_port=settings.server.workers > 1,
            ssl_context=ssl_context,
        )
        await site.start()
        stop = asyncio.Event()
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, stop.set)
        if _stop_requested:
            stop.set()
        async with serving.running(settings, ssl_context):  # TLS reload, metrics, READY=1
            await stop.wait()
    finally:
        await runner.cleanup()


def _supervise(args: argparse.Namespace, workers: int) -> int:
    """One process per core sharing the port (SO_REUSEPORT); each opens its own HSM and pool."""
    cmd = [sys.executable, "-m", "signer", "serve", "--single"]
    if args.config:
        cmd += ["--config", args.config]
    children = [subprocess.Popen(cmd) for _ in range(workers)]

    def forward(signum: int, _frame: object) -> None:
        _stop_requested.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, forward)
    for early in list(_stop_requested):  # arrived while the children were being started
        forward(early, None)
    codes = _reap(len(children))
    # A worker ended by the stop signal we forwarded (before its handler was up) stopped cleanly.
    return max((0 if -c in _stop_requested else c for c in codes), key=abs)


def _reap(count: int) -> list[int]:
    """Exit codes of ``count`` children, in the order they end; each one's live metrics go as
    it ends (a crashed worker's gauges must not stay in the sums of the others)."""
    from signer import metrics

    codes: list[int] = []
    while len(codes) < count:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        codes.append(os.waitstatus_to_exitcode(status))
        if metrics.multiprocess():
            metrics.worker_exited(pid)
    return codes


# ---------------------------------------------------------------- sign


def _digest(path: Path, algorithm: str) -> bytes:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def _progress(items: Sequence[Path], enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, unit="file", desc=desc, file=sys.stderr)


def _is_pdf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(1024).lstrip().startswith(b"%PDF-")


def _free_field(pdf: bytes) -> str:
    """``SignatureN`` with the smallest N not yet a field of ``pdf``."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.fields import enumerate_sig_fields

    try:
        taken = {name for name, _, _ in enumerate_sig_fields(PdfFileReader(io.BytesIO(pdf)))}
    except Exception:  # unreadable: prepare() names the problem
        taken = set()
    return next(f"Signature{n}" for n in range(1, len(taken) + 2) if f"Signature{n}" not in taken)


@dataclass(frozen=True)
class _Job:
    """One file to sign: its digest, and for PAdES the prepared document to embed into."""

    path: Path
    digest: bytes
    prepared: Any = None


def _prepare(path: Path, args: argparse.Namespace) -> _Job:
    from signer.formats import PdfError
    from signer.formats.pdf import prepare

    if args.format != "pades":
        return _Job(path, _digest(path, args.hash))
    pdf = path.read_bytes()
    try:
        prepared = prepare(pdf, _free_field(pdf), datetime.now(UTC), hash_algorithm=args.hash)
    except PdfError as exc:
        raise ClientError(f"{path}: {exc}") from exc
    return _Job(path, prepared.digest, prepared)


def _write(job: _Job, signature: bytes, fmt: str, chain: str) -> Path:
    from signer.formats.pdf import embed

    path = job.path
    if fmt == "pades":
        out = path.with_name(f"{path.stem}.signed{path.suffix}")
        out.write_bytes(embed(job.prepared, signature))
        return out
    out = path.with_name(path.name + (".p7s" if fmt == "cades" else ".sig"))
    out.write_bytes(signature)
    if fmt == "raw":
        path.with_name(path.name + ".chain.pem").write_text(chain)
    return out


def cmd_sign(args: argparse.Namespace) -> int:
    files = [Path(f) for f in args.files]
    for f in files:
        if not f.is_file():
            return _fail(f"{f}: not a readable file")
        if args.format == "pades" and not _is_pdf(f):
            return _fail(f"{f}: not a PDF; use --format cades for other files")
    token = _read_token(args.token_file)
    client = ApiClient(args.url, token)
    show = len(files) > 1 and not args.quiet
    jobs = [_prepare(f, args) for f in _progress(files, show, "preparing")]
    written: list[Path] = []
    bar = _bar(len(jobs), show, "signing")
    for start in range(0, len(jobs), args.batch_size):
        chunk = jobs[start : start + args.batch_size]
        body: dict[str, Any] = {
            "hash_algorithm": args.hash,
            "hashes": [base64.b64encode(j.digest).decode() for j in chunk],
            "format": args.format,
        }
        if args.profile:
            body["profile"] = args.profile
        result = client.call("POST", "/api/v1/signatures", body)
        if "status_url" in result:  # held for m-of-n approval (signer.approvals)
            from signer import cli_approvals

            result = cli_approvals.wait(client, result, args.wait_approval)
            if result["status"] != "completed":
                reason = result.get("error") or result["status"]
                if result["status"] == "pending":
                    raise ClientError(cli_approvals.held_message(result))
                raise ClientError(f"approval request {result['id']} ended: {reason}")
        for job, sig in zip(chunk, result["signatures"], strict=True):
            written.append(_write(job, base64.b64decode(sig), args.format, result["chain"]))
            if bar is not None:
                bar.update(1)
        if not args.quiet:
            _print_progress_safe(
                bar,
                f"signed {len(result['signatures'])} file(s) with certificate "
                f"{result['serial']} ({result['profile']}), valid until {result['not_after']}",
            )
    if bar is not None:
        bar.close()
    if not args.quiet and files:
        print(_verify_hint(files[0], written[0], args))
    return 0 if len(written) == len(files) else 1


def _bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc=desc, file=sys.stderr)


def _print_progress_safe(bar: Any, line: str) -> None:
    if bar is None:
        print(line)
    else:
        bar.write(line, file=sys.stdout)


def _verify_hint(document: Path, written: Path, args: argparse.Namespace) -> str:
    if args.format == "raw":
        return (
            f"verify: openssl x509 -in {document}.chain.pem -pubkey -noout > {document}.pub && "
            f"openssl dgst -{args.hash} -verify {document}.pub -signature {written} {document}"
        )
    bundle = (
        f"curl -s -H 'Accept: application/pem-certificate-chain' {args.url}/api/v1/trust-bundle"
    )
    target = f"{written}" if args.format == "pades" else f"{document} {written}"
    return f"verify: {bundle} > trust.pem && qes verify {target} --trust trust.pem"


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ClientError(f"cannot read token file {path}: {exc.strerror}") from exc
    if not token:
        raise ClientError(f"token file {path} is empty")
    return token


# ---------------------------------------------------------------- verify


def cmd_verify(args: argparse.Namespace) -> int:
    """Offline validation (signer.verify): exit 0 valid, 1 invalid (failing checks named),
    2 when the inputs cannot be read as a document, a signature and a trust bundle."""
    import json

    from signer import verify

    for name in ("pyhanko", "pyhanko_certvalidator"):  # every finding is in the report
        logging.getLogger(name).setLevel(logging.CRITICAL)
    reports: tuple[verify.SignatureReport, ...]
    try:
        trust = verify.load_trust_bundle(Path(args.trust).read_bytes())
        now = _utc(args.at)
        document = Path(args.file).read_bytes()
        if args.signature is not None:
            label = f"{Path(args.file).name} / {Path(args.signature).name}"
            signature = Path(args.signature).read_bytes()
            reports = (verify.verify_cades(document, signature, trust, now=now, label=label),)
        elif document.startswith(b"%PDF-"):
            reports = verify.verify_pades(document, trust, now=now, label=Path(args.file).name)
        else:
            return _fail(f"{args.file}: not a PDF; give the detached SIGNATURE file too", 2)
    except OSError as exc:
        return _fail(f"{exc.filename}: {exc.strerror or exc}", 2)
    except verify.VerifyError as exc:
        return _fail(str(exc), 2)
    except ValueError:
        return _fail(f"--at {args.at}: not an ISO 8601 time", 2)
    if args.json:
        print(json.dumps([r.as_json() for r in reports], indent=2))
    else:
        print("\n".join(verify.render_text(r) for r in reports))
    return 0 if all(r.valid for r in reports) else 1


def _utc(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------- audit


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]

    def line(row: list[str]) -> str:
        return "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def cmd_audit_list(args: argparse.Namespace) -> int:
    client = ApiClient(args.url, _read_token(args.token_file))
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
        _table(
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
    client = ApiClient(args.url, _read_token(args.token_file))
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
        ("key destroyed", "yes (confirmed)" if rec["key_destroyed"] else "NOT CONFIRMED"),
        ("failure", rec["failure"] or "-"),
        ("request id", rec["request_id"]),
    ]
    width = max(len(k) for k, _ in fields)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in fields))
    if args.pem:
        print(rec["certificate"], end="")
    return 0


def cmd_audit_watch(args: argparse.Namespace) -> int:
    """Follow the log (signer.watch): a line per matching entry, optionally a signed webhook."""
    from signer.watch import Watch, WatchStopped, Webhook, entry_line

    if not args.interval > 0:
        return _fail("--interval must be a positive number of seconds")
    webhook = None
    if args.webhook:
        if not args.webhook_secret_file:
            return _fail("--webhook needs --webhook-secret-file (deliveries are HMAC-signed)")
        secret = _read_token(args.webhook_secret_file).encode()
        webhook = Webhook(args.webhook, secret, args.webhook_attempts, args.webhook_backoff)
    _read_token(args.token_file)  # fail now, not at the first poll
    watch = Watch(
        client=lambda: ApiClient(args.url, _read_token(args.token_file)),
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
                _print_progress_safe(bar, entry_line(item))
            sys.stdout.flush()
            if bar is not None:
                bar.n = min(position, size) - args.from_index
                bar.refresh()
                if position >= size:
                    bar.close()
                    bar = None
    except WatchStopped as exc:
        return _fail(str(exc))
    finally:
        if bar is not None:
            bar.close()
    return 0


# ---------------------------------------------------------------- audit: transparency log


async def _log_verifier(settings: Any, vkey: str | None) -> Any:
    """The checkpoint verifier: ``--vkey`` when given, else the log key's public half (HSM)."""
    from ca.checkpoint import NoteError, NoteVerifier
    from signer.hsm import Hsm
    from signer.translog import log_verifier

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


async def _pool(settings: Any) -> Any:
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


async def _connect(settings: Any) -> Any:
    import asyncpg

    if settings.database.url is None:
        raise SignerError("database.url: not configured (set QES_DATABASE_URL)")
    try:
        return await asyncpg.connect(settings.database.url.reveal(), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise SignerError(f"cannot connect to PostgreSQL: {exc}") from exc


async def _audit_verify(settings: Any, vkey: str | None, quiet: bool) -> str:
    from signer.audit import verify_log
    from signer.translog import load_privacy_key

    key = load_privacy_key(settings)
    verifier = await _log_verifier(settings, vkey)
    conn = await _connect(settings)
    try:
        total = await conn.fetchval("SELECT size FROM log_state WHERE id = 1")
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
    from signer.audit import verify_export
    from signer.storage.log import LogStore

    verifier = await _log_verifier(settings, vkey)
    pool = await _pool(settings)
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
    from signer.audit import verify_log_export

    settings = None if args.vkey else _settings(args)
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
    from signer.audit import EXPORT_WINDOW, export_log
    from signer.storage.log import LogStore

    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None and sys.stderr.isatty() and total > EXPORT_WINDOW:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="entry", desc="exporting", file=sys.stderr)
        if bar is not None:
            bar.update(done - bar.n)

    pool = await _pool(settings)
    try:
        store = LogStore(pool, settings.log.origin)
        return await export_log(store, settings.log.origin, write, progress)
    finally:
        await pool.close()
        if bar is not None:
            bar.close()


def cmd_audit_export_log(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.out == "-":
        checkpoint = asyncio.run(_audit_export_log(settings, sys.stdout.write))
    else:
        try:
            with open(args.out, "w", encoding="utf-8") as out:
                checkpoint = asyncio.run(_audit_export_log(settings, out.write))
        except OSError as exc:
            return _fail(f"{args.out}: {exc.strerror}")
    if checkpoint is None:
        return _fail("no checkpoint published yet: nothing to export")
    if args.out != "-":
        print(f"exported {checkpoint.size} entries up to the checkpoint of size {checkpoint.size}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from signer.audit import LogVerificationFailed

    if (args.export is None) != (args.manifest is None):
        return _fail("--export and --manifest go together")
    try:
        if args.log_export is not None:
            print(_audit_verify_log_export(args))
            return 0
        if args.export is not None:
            print(
                asyncio.run(
                    _audit_verify_export(
                        _settings(args), args.vkey, *_read_export(args.export, args.manifest)
                    )
                )
            )
            return 0
        print(asyncio.run(_audit_verify(_settings(args), args.vkey, args.quiet)))
    except LogVerificationFailed as exc:
        what = "export" if args.export else "log export" if args.log_export else "log"
        return _fail(f"{what} verification failed: {exc}")
    return 0


async def _audit_consistency(settings: Any, vkey: str | None, old: str, new: str) -> str:
    from signer.audit import check_consistency
    from signer.storage.log import LogStore

    verifier = await _log_verifier(settings, vkey)
    pool = await _pool(settings)
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
    from signer.audit import LogVerificationFailed

    try:
        print(asyncio.run(_audit_consistency(_settings(args), args.vkey, args.old, args.new)))
    except LogVerificationFailed as exc:
        return _fail(f"consistency check failed: {exc}")
    return 0


# ---------------------------------------------------------------- audit: retention, GDPR


def _cutoff(text: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or time; ``SignerError`` when it is neither."""
    try:
        return _utc(text)
    except ValueError as exc:
        raise SignerError(f"--before {text}: not an ISO 8601 date") from exc


async def _audit_purge(settings: Any, before: datetime) -> Any:
    from signer import retention
    from signer.storage.retention import RetentionStore

    pool = await _pool(settings)
    try:
        return await retention.purge(
            RetentionStore(pool),
            before,
            now=datetime.now(UTC),
            retention_days=settings.audit.retention_days,
        )
    finally:
        await pool.close()


def cmd_audit_purge(args: argparse.Namespace) -> int:
    """Erase the personal payload of records older than the retention (GDPR Art. 17)."""
    settings = _settings(args)
    done = asyncio.run(_audit_purge(settings, _cutoff(args.before)))
    print(
        f"purged {done.records} record(s), {done.approval_requests} approval request(s) with"
        f" {done.approval_decisions} decision(s) and {done.admin_actions} admin action(s) from"
        f" before {args.before}; their log entries remain"
    )
    return 0


async def _audit_subject(settings: Any, subject: str, issuer: str | None) -> Any:
    from signer import retention
    from signer.backfill import backfill
    from signer.storage.backfill import BackfillStore
    from signer.storage.retention import RetentionStore
    from signer.translog import load_privacy_key

    key = load_privacy_key(settings)
    pool = await _pool(settings)
    try:
        await backfill(BackfillStore(pool), key)  # older entries into the subject index first
        issuers = sorted({i.issuer for i in settings.issuers})
        return await retention.find_subject(RetentionStore(pool), key, subject, issuer, issuers)
    finally:
        await pool.close()


def cmd_audit_subject(args: argparse.Namespace) -> int:
    """A data-subject access request (GDPR Art. 15): the person's records and log entries."""
    import json

    report = asyncio.run(_audit_subject(_settings(args), args.subject, args.issuer))
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
    if args.json:
        body = {"subject": report.subject, "records": records, "refusals": list(report.refusals)}
        print(json.dumps({**body, **approvals}, indent=2))
        return 0
    print(f"{len(records)} signing record(s) of {report.subject}")
    if records:
        print(
            _table(
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


def _subject_approvals(report: Any) -> dict[str, list[dict[str, Any]]]:
    """The approval requests, decisions and admin actions of a subject report, as JSON."""

    def plain(item: Any) -> dict[str, Any]:
        out = asdict(item)
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in out.items()}

    return {
        "approval_requests": [plain(r) for r in report.approval_requests],
        "approval_decisions": [plain(d) for d in report.approval_decisions],
        "admin_actions": [plain(a) for a in report.admin_actions],
    }


def _print_subject_approvals(found: dict[str, list[dict[str, Any]]]) -> None:
    print(f"{len(found['approval_requests'])} approval request(s) made")
    for r in found["approval_requests"]:
        print(f"  {r['created_at'][:19]}  {r['id']}  {r['status']}  {r['digest_count']} digest(s)")
    print(f"{len(found['approval_decisions'])} approval decision(s) made")
    for d in found["approval_decisions"]:
        print(f"  log index {d['log_index']}  {d['decided_at'][:19]}  {d['decision']}"
              f" request {d['approval_request']}")  # fmt: skip
    print(f"{len(found['admin_actions'])} admin action(s) as target or actor")
    for a in found["admin_actions"]:
        print(f"  {a['acted_at'][:19]}  {a['id']}  {a['action']} {a['scope']} (as {a['role']})")


# ---------------------------------------------------------------- client (relying parties)


async def _client(settings: Any, args: argparse.Namespace) -> str:
    """The relying-party registry, straight in the database (an operator's command)."""
    from signer.storage.signing_requests import RpClientStore
    from signer.webflow.registry import RpRegistry

    pool = await _pool(settings)
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
        return _table(rows, ["CLIENT ID", "NAME", "STATUS", "REDIRECT URIS"])
    finally:
        await pool.close()


def cmd_client(args: argparse.Namespace) -> int:
    print(asyncio.run(_client(_settings(args), args)))
    return 0


# ---------------------------------------------------------------- db


def cmd_db(args: argparse.Namespace) -> int:
    from signer.localdb import LocalPostgres

    db = LocalPostgres(Path(args.data_dir))
    if args.action == "start":
        print(db.start())
    elif args.action == "stop":
        db.stop()
    else:
        print(db.url())
    return 0


# ---------------------------------------------------------------- parser


def _index(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("must be a non-negative integer")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qes", description="qes-signer: remote signing service")
    sub = p.add_subparsers(dest="command", required=True)
    url = os.environ.get("QES_URL", DEFAULT_URL)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", help="TOML config file (default: $QES_CONFIG)")
        return sp

    init = with_config(sub.add_parser("init", help="create the CA keys in the HSM"))
    init.add_argument("--force", action="store_true", help="replace existing CA keys")
    init.set_defaults(func=cmd_init)
    serve = with_config(sub.add_parser("serve", help="run the HTTP service"))
    serve.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    sign = sub.add_parser("sign", help="sign files; documents never leave this machine")
    sign.add_argument("files", nargs="+", metavar="FILE")
    sign.add_argument("--token-file", required=True, help="file holding the bearer token")
    sign.add_argument(
        "--wait-approval",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when the policy holds the request for approval, wait this long for it",
    )
    sign.add_argument("--url", default=url, help=f"signer base URL (default {url})")
    sign.add_argument("--hash", choices=HASHES, default="sha256")
    sign.add_argument("--profile", choices=("qes", "qualified", "advanced"))
    sign.add_argument(
        "--format",
        choices=("raw", "cades", "pades"),
        default="raw",
        help="raw: NAME.sig + NAME.chain.pem; cades: NAME.p7s (CAdES B-T); "
        "pades: PDFs only, NAME.signed.pdf (PAdES B-T; only the digest is sent)",
    )
    sign.add_argument("--batch-size", type=int, default=1000)
    sign.add_argument("--quiet", "-q", action="store_true")
    sign.set_defaults(func=cmd_sign)

    ver = sub.add_parser("verify", help="validate a CAdES or PAdES signature offline")
    ver.add_argument("file", metavar="FILE", help="the PDF, or the document signed by SIGNATURE")
    ver.add_argument("signature", metavar="SIGNATURE", nargs="?", help="detached CAdES (.p7s)")
    ver.add_argument("--trust", required=True, metavar="BUNDLE", help="PEM trust bundle")
    ver.add_argument("--at", metavar="TIME", help="validation time, ISO 8601 UTC (default now)")
    ver.add_argument("--json", action="store_true", help="machine-readable output")
    ver.set_defaults(func=cmd_verify)

    audit = sub.add_parser("audit", help="inspect issued certificates (auditor token)")
    asub = audit.add_subparsers(dest="audit_command", required=True)
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
    watch.set_defaults(func=cmd_audit_watch)

    purge = with_config(
        asub.add_parser("purge", help="erase personal data of records older than the retention")
    )
    purge.add_argument("--before", required=True, metavar="DATE", help="ISO 8601 date, UTC")
    purge.set_defaults(func=cmd_audit_purge)
    subject = with_config(
        asub.add_parser("subject", help="data-subject request: a person's records and entries")
    )
    subject.add_argument("--subject", required=True, help="token subject (sub)")
    subject.add_argument("--issuer", help="token issuer (iss); default: every configured issuer")
    subject.add_argument("--json", action="store_true", help="machine-readable output")
    subject.set_defaults(func=cmd_audit_subject)

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

    client = sub.add_parser("client", help="register web apps that send people to sign")
    csub = client.add_subparsers(dest="client_command", required=True)
    add = with_config(csub.add_parser("add", help="register a web app; prints its secret once"))
    add.add_argument("name", help="shown to signers on the consent page")
    add.add_argument("--redirect-uri", action="append", required=True, metavar="URI")
    with_config(csub.add_parser("list", help="list registered web apps"))
    for name, text in (("rotate", "issue a new secret"), ("revoke", "revoke a web app")):
        with_config(csub.add_parser(name, help=text)).add_argument("client_id")
    client.set_defaults(func=cmd_client)

    db = sub.add_parser("db", help="a private PostgreSQL in the data directory")
    db.add_argument("action", choices=("start", "stop", "url"))
    db.add_argument("--data-dir", default=".qes/postgres")
    db.set_defaults(func=cmd_db)

    from signer.cli_policy import register as register_policy

    register_policy(sub, with_config)
    from signer.cli_approvals import register as register_approvals

    register_approvals(sub, url)
    from signer.cli_migrate import register as register_migrate

    register_migrate(sub, with_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from signer.logging import quiet_third_party_warnings

    quiet_third_party_warnings()
    args = parser().parse_args(argv)
    if args.command != "serve":
        from signer.logging import configure

        configure("console", level=logging.WARNING)  # stdout is for the command's result
    try:
        return int(args.func(args))
    except (ClientError, SignerError, IdpConfigError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # a bug or an unexpected library error: still one line
        name = type(exc).__module__.split(".")[0]
        if name in ("pkcs11", "asyncpg", "aiohttp"):
            return _fail(f"{type(exc).__name__}: {exc}")
        raise
