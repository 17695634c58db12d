"""`qes init` and `qes serve`: the CA keys, and the HTTP service with its workers."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signer.cli.common import WithConfig, load
from signer.cli.supervisor import STOP_SIGNALS, Supervisor
from signer.errors import SignerError


async def _init(settings: Any, force: bool, actor: str | None = None, offline: Any = None) -> str:
    """`qes init [--force]`: the one-machine key ceremony when ``offline`` (the root token's
    settings) is given (:mod:`signer.signing.bootstrap`), its transcript logged; a forced
    replacement of CA keys is logged as admin acts of ``actor`` (else this account)."""
    from signer.keys import Hsm
    from signer.settings.offline import default_transcript
    from signer.signing.bootstrap import init_log
    from signer.storage.db import create_pool

    if settings.database.url is None:
        raise SignerError("database.url: not configured (set QES_DATABASE_URL)")
    transcript = offline.transcript if offline else default_transcript(settings.data_dir)
    hsm = await asyncio.to_thread(Hsm.open, settings.hsm)
    try:
        log_result = await init_log(hsm, settings)  # first: the privacy key for the entries
    finally:
        await asyncio.to_thread(hsm.close)
    pool = await create_pool(
        settings.database.url.reveal(),
        min_size=1,
        max_size=2,
        command_timeout=settings.database.command_timeout,
    )
    try:
        lines = await _init_ca(settings, offline, transcript, pool, force=force, actor=actor)
    finally:
        await pool.close()
    return "\n".join([*lines[:-1], log_result.describe(), lines[-1]]).rstrip("\n")


async def _init_ca(
    settings: Any, offline: Any, transcript: Any, pool: Any, *, force: bool, actor: str | None
) -> list[str]:
    """The CA part of `qes init`: both sides of the ceremony, then the transcript logged."""
    from contextlib import AsyncExitStack

    from signer.cli.ceremony import online_side, pem, root_side, write_file
    from signer.signing.bootstrap import Sides, init_ca, log_replaced
    from signer.storage.policy import PolicyStore
    from signer.translog.ceremony import TranscriptFile, import_steps

    now = datetime.now(UTC)
    async with AsyncExitStack() as stack:
        side = online_side(settings, actor, transcript, pool, lambda: now)
        online = await stack.enter_async_context(side)
        root = None
        if offline is not None:
            side = root_side(offline, actor, str(transcript), lambda: now)
            root = await stack.enter_async_context(side)
        result = await init_ca(Sides(online, root), now, force=force)
    if offline is not None:  # where the offline side's `qes ca root sign|crl` find it
        write_file(offline.root_certificate, pem(result.chain.root))
    steps = TranscriptFile(transcript).read()
    added, _ = await import_steps(PolicyStore(pool), online.audit, steps)
    logged = await log_replaced(PolicyStore(pool), online.audit, result) if force else 0
    lines = _describe_init(settings, result)
    if steps:
        lines.append(f"ceremony transcript {transcript}: {len(steps)} steps, {added} newly logged")
    if result.root_due:
        lines.append(f"waiting for the offline root (key ceremony): {', '.join(result.root_due)}")
    if result.root_key_online:
        from signer.signing.ceremony import ROOT_KEY_ONLINE_ACTION

        lines.append(
            f"the online HSM holds the root key {settings.ca.root_label}: {ROOT_KEY_ONLINE_ACTION}"
        )
    lines.append(
        f"logged: {logged} ca-replace admin act(s) in the transparency log" if logged else ""
    )
    return lines


def _describe_init(settings: Any, result: Any) -> list[str]:
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
    if result.ocsp is not None:
        ocsp_verb = "created" if result.ocsp_created else "already present"
        subject = result.ocsp.root.subject.rfc4514_string()
        by = f"the root and {len(result.ocsp.issuing)} issuing CA generation(s)"
        lines.append(f"OCSP responder {ocsp_verb}: {subject}, certified by {by}")
    return lines


def warn_derived_origin(settings: Any) -> None:
    """A structlog warning when ``log.origin`` was derived from ``server.public_url``.

    The origin names the log in every checkpoint and is the log key's note name (C2SP
    tlog-checkpoint): once checkpoints are published it must never change, while a public URL
    does (a new host name, a port, a proxy). Production sets ``[log] origin`` explicitly."""
    if settings.log.origin_derived:
        import structlog

        structlog.get_logger("signer.cli.main").warning(
            "log_origin_derived",
            origin=settings.log.origin,
            advice="set [log] origin (QES__LOG__ORIGIN) explicitly and never change it:"
            " checkpoints signed under one origin do not verify under another",
        )


def cmd_init(args: argparse.Namespace) -> int:
    from signer.settings.offline import load_offline_settings

    settings = load(args)
    path = args.config or os.environ.get("QES_CONFIG")
    offline = load_offline_settings(Path(path) if path else None, required=False)
    print(asyncio.run(_init(settings, args.force, args.actor, offline)))
    return 0


_stop_requested: list[int] = []


def _note_stop(signum: int, _frame: object) -> None:
    _stop_requested.append(signum)


def cmd_serve(args: argparse.Namespace) -> int:
    for signum in STOP_SIGNALS:  # from the first moment: a stop during start-up is honoured
        signal.signal(signum, _note_stop)
    settings = load(args)
    from signer.settings.logging import configure

    configure(settings.server.log_format)
    from signer.cli import serving

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
    from signer.app import create_app
    from signer.cli import serving
    from signer.http.kit.connections import AcceptErrorLog, GuardedSite
    from signer.http.kit.server import SignerRunner

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrorLog())
    stop = asyncio.Event()
    # One event from the loop's first moment to its last. A signal is read from asyncio's
    # wake-up socket and its callback runs one loop turn later; with a second handler swapped
    # in after start-up, a signal read during the swap ran the first handler only after the
    # check for it, and the worker served on, deaf to that stop.
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    if _stop_requested:  # noted by cmd_serve's handler before the loop ran
        stop.set()
    runner = SignerRunner(
        create_app(settings),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.server.shutdown_timeout,
        keepalive_timeout=settings.server.keepalive_timeout,
    )
    await runner.setup()
    try:
        site = GuardedSite(
            runner,
            settings.server,
            host=settings.server.host,
            port=settings.server.port,
            reuse_port=settings.server.workers > 1,
            ssl_context=ssl_context,
        )
        await site.start()
        async with serving.running(settings, ssl_context):  # TLS reload, metrics, READY=1
            await stop.wait()
    finally:
        _arm_stop_deadline(settings.server.shutdown_timeout + STOP_GRACE_SECONDS)
        await runner.cleanup()


#: Beyond ``server.shutdown_timeout`` (requests in flight), the time closing the pool and the
#: HSM may take before the process ends regardless.
STOP_GRACE_SECONDS = 10.0


def _arm_stop_deadline(seconds: float) -> None:
    """End the process ``seconds`` from now if the graceful stop has not ended it by then.

    A PKCS#11 call into a hung network HSM cannot be interrupted, and the interpreter joins
    its worker threads at exit (as ``asyncio.run`` joins the default executor's): without a
    deadline such a call would keep a stopping worker alive for as long as the HSM hangs, and
    an orchestrator's stop would end in SIGKILL with nothing logged. Nothing is lost by
    ending: no signature is released before its record is committed (DESIGN.md, fail closed),
    the sweeper ends what a request left half-done, and the HSM destroys the session objects
    of a client that is gone (PKCS#11 v2.40 §5.6)."""

    def expire() -> None:
        import structlog

        structlog.get_logger(__name__).error(
            "stop_forced",
            after_seconds=seconds,
            reason="calls into the HSM or the database still running",
            threads=sorted(t.name for t in threading.enumerate() if t is not main),
            stacks=_stacks(main),
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(STOP_FORCED_EXIT)

    main = threading.current_thread()
    timer = threading.Timer(seconds, expire)
    timer.daemon = True  # never what keeps the process alive
    timer.name = "stop-deadline"
    timer.start()


def _stacks(main: threading.Thread, depth: int = 6) -> dict[str, list[str]]:
    """Where each thread but ``main`` is: its ``depth`` innermost frames, outermost first, as
    ``file:line function`` (what a stuck stop waits for, for whoever reads the log after)."""
    frames = sys._current_frames()
    found = {}
    for thread in threading.enumerate():
        frame = frames.get(thread.ident) if thread.ident is not None else None
        if thread is main or frame is None:
            continue
        stack = traceback.extract_stack(frame)[-depth:]
        found[thread.name] = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack]
    return found


#: EX_SOFTWARE (sysexits.h): the stop did not end cleanly within its deadline.
STOP_FORCED_EXIT = 70


def _supervise(args: argparse.Namespace, workers: int) -> int:
    cmd = [sys.executable, "-m", "signer", "serve", "--single"]
    if args.config:
        cmd += ["--config", args.config]
    return Supervisor(cmd, _stop_requested).run(workers)


def register(sub: Any, with_config: WithConfig, url: str) -> None:
    """Add this group's commands to the `qes` parser."""
    init = with_config(sub.add_parser("init", help="create the CA keys in the HSM"))
    init.add_argument("--force", action="store_true", help="replace existing CA keys")
    init.add_argument(
        "--actor", help="who replaces the CA keys, for the transparency log (default: you)"
    )
    init.set_defaults(func=cmd_init)
    serve = with_config(sub.add_parser("serve", help="run the HTTP service"))
    serve.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)
