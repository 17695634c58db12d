"""What running in production costs (issue 13): batch signing end to end with metrics and the
access log on against both off, and over TLS 1.3 against plain HTTP, all in one run.

One throwaway SoftHSM2 token, scratch database and dev IdP (the ``tests/support`` helpers, as
bench/run.py), ``qes init``, then for each round and each configuration a fresh ``qes serve``
with ``server.workers = N`` under POST /api/v1/signatures load (one random SHA-256 digest per
request, wrk, or the aiohttp fallback for plain HTTP). Configurations, their order alternating
between rounds so drift of the machine hits each alike:

    plain      metrics off, access log off, http
    observed   [metrics] enabled (two workers: multiprocess mode) and server.access_log = true
    tls        [server.tls] with a P-256 certificate, TLS 1.3, metrics and access log off

Prints 201s per second (median of the rounds), p50/p99, and observed/plain and tls/plain
(target for observed: at most 5 % slower). Exit 2 when the token holds more than its long-lived
keys afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

from run import (  # bench/run.py: also puts the repository root on sys.path
    BenchError,
    LoadResult,
    ensure_wrk,
    machine_busy,
    machine_facts,
    qes_init,
    run_aiohttp,
    run_wrk,
    step,
    stop_signer,
    table,
)

from tests.support.idp import DEMO_SECRETS, start_idp
from tests.support.pg import admin_url, scratch_database
from tests.support.prod import make_tls_files
from tests.support.service import (
    LONG_LIVED_LABELS,
    SignerProcess,
    free_port,
    service_env,
)
from tests.support.softhsm import SoftHsmToken

CONFIGS = ("plain", "observed", "tls")
TARGET_SLOWDOWN = 0.05


def config_env(name: str, port: int, tls_dir: Path) -> dict[str, str]:
    if name == "observed":
        return {
            "QES__METRICS__ENABLED": "true",
            "QES__METRICS__PORT": str(free_port()),
            "QES__SERVER__ACCESS_LOG": "true",
        }
    if name == "tls":
        return {
            "QES__SERVER__PUBLIC_URL": f"https://127.0.0.1:{port}",
            "QES__SERVER__TLS__CERTIFICATE_FILE": f'"{tls_dir / "tls.crt"}"',
            "QES__SERVER__TLS__KEY_FILE": f'"{tls_dir / "tls.key"}"',
        }
    return {}


def measure(
    name: str, base_env: dict[str, str], work: Path, token: str, args: argparse.Namespace
) -> LoadResult:
    port = free_port()
    files, _ = make_tls_files(work / "pki")
    env = {
        **base_env,
        "QES__SERVER__PORT": str(port),
        "QES__SERVER__PUBLIC_URL": f"http://127.0.0.1:{port}",
        **config_env(name, port, files.cert.parent),
    }
    client_tls = files.client_context() if name == "tls" else None
    signer = SignerProcess(env, port, work / f"{name}.log", tls=client_tls)
    signer.start(timeout=60)
    try:
        if args.wrk is not None:
            return run_wrk(args.wrk, signer.url, token, args.seconds, args.concurrency)
        if name == "tls":
            raise BenchError("the TLS figure needs wrk (apt-get install wrk)")
        return run_aiohttp(signer.url, token, args.seconds, args.concurrency)
    finally:
        stop_signer(signer, 10.0)


def report(results: dict[str, list[LoadResult]], args: argparse.Namespace) -> str:
    med = {n: statistics.median(r.rate for r in rs) for n, rs in results.items()}
    rows = [("processes (N)", str(args.workers)), ("load generator", results["plain"][0].tool)]
    for name in CONFIGS:
        rs = results[name]
        middle = sorted(rs, key=lambda r: r.rate)[len(rs) // 2]
        rounds = ", ".join(f"{r.rate:.0f}" for r in rs)
        rows.append((f"{name} signatures/s", f"{med[name]:.0f}  (rounds: {rounds})"))
        rows.append((f"{name} p50 / p99", f"{middle.p50_ms:.1f} ms / {middle.p99_ms:.1f} ms"))
        rows.append((f"{name} errors", middle.error_text()))
    slowdown = 1 - med["observed"] / med["plain"]
    verdict = "meets" if slowdown <= TARGET_SLOWDOWN else "MISSES"
    rows.append(("observed / plain", f"{med['observed'] / med['plain']:.3f}  "
                 f"({_slower(slowdown)}; {verdict} the target of at most 5 % slower)"))  # fmt: skip
    rows.append(("tls / plain", f"{med['tls'] / med['plain']:.3f}  "
                 f"({_slower(1 - med['tls'] / med['plain'])})"))  # fmt: skip
    return table([*rows, *machine_facts()])


def _slower(fraction: float) -> str:
    return f"{abs(fraction) * 100:.1f} % {'slower' if fraction >= 0 else 'faster'}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    args.wrk = ensure_wrk()
    background = machine_busy(1.0)
    if background > 0.2:
        print(f"warning: {background:.2f} cores already busy before the run", flush=True)
    work = Path(tempfile.mkdtemp(prefix="qes-bench-prod-"))
    results: dict[str, list[LoadResult]] = {n: [] for n in CONFIGS}
    try:
        with contextlib.ExitStack() as stack:
            with step("throwaway SoftHSM2 token, scratch database, dev IdP, qes init"):
                hsm = SoftHsmToken.create(work / "softhsm", label="qes-bench").with_offline_root()
                hsm.activate()
                database_url = stack.enter_context(
                    scratch_database(stack.enter_context(admin_url()))
                )
                idp = stack.enter_context(start_idp(work / "idp"))
                base_env = service_env(
                    token=hsm, database_url=database_url, idp=idp, port=0,
                    data_dir=work / "data", SOFTHSM2_CONF=str(hsm.conf),
                    QES__SERVER__WORKERS=str(args.workers),
                )  # fmt: skip
                qes_init(base_env, work / "init.log", hsm)
                token = asyncio.run(idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"]))
            for round_no in range(args.rounds):
                order = CONFIGS if round_no % 2 == 0 else tuple(reversed(CONFIGS))
                for name in order:
                    with step(f"round {round_no + 1}: {name}"):
                        results[name].append(measure(name, base_env, work, token, args))
        leftover = [o for o in hsm.list_objects() if o.label not in LONG_LIVED_LABELS]
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(f"\nqes-signer production bench: {args.workers} processes, {args.seconds:g} s each,"
          f" {args.concurrency} connections, {args.rounds} rounds")  # fmt: skip
    print(report(results, args))
    print(f"leftover non-CA objects: {len(leftover)}")
    return 0 if not leftover else 2


if __name__ == "__main__":
    sys.exit(main())
