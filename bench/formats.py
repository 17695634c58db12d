"""What CAdES B-T costs end to end, and what many digests per request save.

    .venv/bin/python bench/formats.py [--workers 2] [--seconds 8] [--rounds 3]

Same throwaway setup as ``bench/run.py`` (SoftHSM2 token, scratch PostgreSQL, dev IdP,
``qes init``, ``qes serve`` with N workers). Then, in one run:

1. signatures per second end to end, one digest per request, ``"format": "cades"`` (each
   signature time-stamped by the built-in TSA in the same HSM hop) against ``"format": "raw"``,
   same load generator, rounds alternating; prints both and cades/raw;
2. time per signature: one request of 100 digests against 100 sequential requests of one digest
   (one client, no concurrency), for raw and for cades; prints both and their ratio.

Medians over ``--rounds``. The token is listed afterwards from a separate process: nothing but
the long-lived keys may be left (exit code 2 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing as mp
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import (
    API_PATH,
    LONG_LIVED_LABELS,
    BenchError,
    machine_busy,
    operation,
    start_service,
    step,
    stop_signer,
    table,
)

BATCH = 100


def _body(fmt: str, digests: int) -> bytes:
    hashes = ",".join(
        f'"{base64.b64encode(secrets.token_bytes(32)).decode()}"' for _ in range(digests)
    )
    return f'{{"hash_algorithm":"sha256","format":"{fmt}","hashes":[{hashes}]}}'.encode()


async def _throughput(url: str, token: str, fmt: str, seconds: float, concurrency: int) -> dict:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    created, failed = 0, 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal created, failed
            while time.perf_counter() < deadline:
                async with http.post(
                    url + API_PATH, data=_body(fmt, 1), headers=operation(headers)
                ) as r:
                    await r.read()
                    if r.status == 201:
                        created += 1
                    else:
                        failed += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"rate": created / elapsed, "failed": failed}


async def _per_signature(url: str, token: str, fmt: str) -> dict:
    """Seconds per signature: 1 request x BATCH digests, and BATCH requests x 1 digest."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:

        async def post(digests: int) -> None:
            async with http.post(
                url + API_PATH, data=_body(fmt, digests), headers=operation(headers)
            ) as r:
                await r.read()
                if r.status != 201:
                    raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:200]}")

        await post(1)  # warm connection and caches
        t0 = time.perf_counter()
        await post(BATCH)
        batched = (time.perf_counter() - t0) / BATCH
        t0 = time.perf_counter()
        for _ in range(BATCH):
            await post(1)
        single = (time.perf_counter() - t0) / BATCH
    return {"batched": batched, "single": single}


def _child(fn: Any, args: tuple[Any, ...], out: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        out.put(asyncio.run(fn(*args)))
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


def in_child(fn: Any, *args: Any, timeout: float) -> dict:
    """``await fn(*args)`` in a process of its own, as the load generators of bench/run.py
    (their CPU apart from ours); its result must be a dict, ``{"error": ...}`` on failure."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, out), daemon=True)
    proc.start()
    try:
        result: dict = out.get(timeout=timeout)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
    if "error" in result:
        raise BenchError(f"{fn.__name__} load generator: {result['error']}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if not 1 <= args.workers <= 64 or args.seconds < 1 or args.rounds < 1:
        p.error("need 1 <= --workers <= 64, --seconds >= 1, --rounds >= 1")
    background = machine_busy(1.0)
    tmp = Path(tempfile.mkdtemp(prefix="qes-bench-formats-"))
    rates: dict[str, list[float]] = {"raw": [], "cades": []}
    per_sig: dict[str, list[dict]] = {"raw": [], "cades": []}
    failed = 0
    try:
        with contextlib.ExitStack() as stack:
            bench = start_service(stack, tmp, args.workers)
            token, signer, batch_token = bench.token, bench.signer, bench.batch_token
            for n in range(args.rounds):
                for fmt in ("raw", "cades"):
                    with step(f"round {n + 1}: {fmt}, {args.concurrency} connections"):
                        r = in_child(
                            _throughput,
                            signer.url,
                            batch_token,
                            fmt,
                            args.seconds,
                            args.concurrency,
                            timeout=args.seconds + 120,
                        )
                        rates[fmt].append(r["rate"])
                        failed += r["failed"]
                        print(f"   {r['rate']:.0f} signatures/s", flush=True)
                for fmt in ("raw", "cades"):
                    with step(f"round {n + 1}: {fmt}, 1 x {BATCH} vs {BATCH} x 1 digest"):
                        per_sig[fmt].append(
                            in_child(_per_signature, signer.url, batch_token, fmt, timeout=300)
                        )
            stop_signer(signer)
        leftover = sum(1 for o in token.list_objects() if o.label not in LONG_LIVED_LABELS)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    raw, cades = med(rates["raw"]), med(rates["cades"])
    rows = [
        ("machine busy before start", f"{background:.2f} cores"),
        ("raw, 1 digest/request", f"{raw:.0f} signatures/s  (rounds: "
         + ", ".join(f"{v:.0f}" for v in rates["raw"]) + ")"),
        ("CAdES B-T, 1 digest/request", f"{cades:.0f} signatures/s  (rounds: "
         + ", ".join(f"{v:.0f}" for v in rates["cades"]) + ")"),
        ("CAdES B-T / raw", f"{cades / raw:.2f}"),
    ]  # fmt: skip
    for fmt in ("raw", "cades"):
        batched = med([r["batched"] for r in per_sig[fmt]])
        single = med([r["single"] for r in per_sig[fmt]])
        rows += [
            (f"{fmt}: 1 request x {BATCH} digests", f"{batched * 1e3:.2f} ms per signature"),
            (f"{fmt}: {BATCH} requests x 1 digest", f"{single * 1e3:.2f} ms per signature"),
            (f"{fmt}: batched / single", f"{batched / single:.2f}"),
        ]
    rows += [("non-201 answers", str(failed)), ("objects left in the token", str(leftover))]
    print()
    print(f"qes-signer formats bench: {args.workers} workers, {args.seconds:g} s per round")
    print(table(rows))
    return 0 if leftover == 0 and failed == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
