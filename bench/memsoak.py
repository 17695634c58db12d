"""Memory under steady load: RSS per worker, Python heap against native memory, HSM objects.

    .venv/bin/python bench/memsoak.py [--workers 2] [--minutes 5] [--load 0.7] [--rate R]

Starts the service as ``bench/run.py`` does (throwaway SoftHSM2 token, scratch database, dev
IdP, ``qes init``, ``qes serve`` with N workers), every worker instrumented through a
``sitecustomize`` put on its ``PYTHONPATH`` (nothing in the service changes): a thread that
every ``--sample`` seconds appends RSS, the Python heap as ``tracemalloc`` traces it, malloc's
own figures (``mallinfo2``) and the top ``tracemalloc`` growth since the first minute to a file.
Tracing starts one sample period after the worker starts (tracing imports slows start-up about
4-fold), so the "Python heap" is what was allocated since then and still lives: its slope is
the Python share of any growth, the native rest (RSS minus that heap) the other share.

It first measures capacity (closed loop, ``--concurrency`` connections, ``--probe`` seconds),
then drives POST /api/v1/signatures open-loop at ``--load`` of it (or ``--rate`` requests/s)
for ``--minutes``, then idles ``--idle`` seconds, and prints per minute: RSS per worker, the
Python heap and the native rest (RSS minus the heap), requests and errors; then the RSS slope
(MB/min, least squares over the samples after ``--settle`` minutes) and the drift (last sample
against the first after settling), and the token objects listed from a separate process at the
start and the end (only the long-lived keys may be there). ``--set KEY=VALUE`` passes settings
(e.g. ``QES__HSM__REINITIALISE_AFTER=0`` for the behaviour before the fix), ``--no-tracemalloc``
measures without tracing (tracing costs CPU and memory of its own: its tables and the
snapshot taken every sample; the slope of its own memory is printed; bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # bench/run.py: service start-up and load helpers

from tests.support.service import LONG_LIVED_LABELS

SITECUSTOMIZE = textwrap.dedent(
    '''
    """memsoak probe: samples this process's memory into $QES_MEMSOAK_DIR/<pid>.jsonl."""
    import ctypes, json, os, sys, threading, time, tracemalloc

    _DIR = os.environ.get("QES_MEMSOAK_DIR")
    _EVERY = float(os.environ.get("QES_MEMSOAK_EVERY", "10"))
    _TRACE = os.environ.get("QES_MEMSOAK_TRACE") == "1"

    class _Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    def _rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _sample(libc, base, out):
        info = libc.mallinfo2()
        row = {"pid": os.getpid(), "t": time.time(), "rss": _rss(),
               "malloc_in_use": info.uordblks + info.hblkhd,
               "malloc_free": info.fordblks, "threads": threading.active_count(),
               "py_blocks": sys.getallocatedblocks()}
        if tracemalloc.is_tracing():
            row["py_heap"] = tracemalloc.get_traced_memory()[0]
            row["tracer"] = tracemalloc.get_tracemalloc_memory()  # tracing's own, native
            snap = tracemalloc.take_snapshot()
            if base[0] is None and time.time() - base[1] > 60:
                base[0] = snap
            elif base[0] is not None:
                row["top"] = [str(s) for s in snap.compare_to(base[0], "lineno")[:5]]
        out.write(json.dumps(row) + "\\n")
        out.flush()

    def _loop():
        time.sleep(_EVERY)  # tracing from the first import would slow start-up 4-fold
        if _TRACE:
            tracemalloc.start(1)
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        base = [None, time.time()]
        with open(os.path.join(_DIR, "%d.jsonl" % os.getpid()), "a") as out:
            while True:
                _sample(libc, base, out)
                time.sleep(_EVERY)

    def _start():
        threading.Thread(target=_loop, name="memsoak", daemon=True).start()

    if _DIR and "serve" in sys.argv:
        _start()
    '''
)


# ------------------------------------------------------------------ paced load (own process)


def paced_loadgen(url: str, token: str, rate: float, seconds: float, cap: int, out: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        out.put(asyncio.run(_paced(url, token, rate, seconds, cap)))
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


async def _paced(url: str, token: str, rate: float, seconds: float, cap: int) -> dict:
    """Open loop: request i starts at t0 + i/rate, unless ``cap`` are in flight (then skipped).
    Counts per minute: 201s, other statuses, client errors and skipped starts."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    minutes: dict[int, Counter[str]] = {}
    latencies: list[float] = []
    in_flight = 0
    connector = aiohttp.TCPConnector(limit=cap)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as http:
        t0 = time.perf_counter()

        async def one(minute: Counter[str]) -> None:
            nonlocal in_flight
            digest = base64.b64encode(secrets.token_bytes(32))
            body = b'{"hash_algorithm":"sha256","hashes":["' + digest + b'"]}'
            started = time.perf_counter()
            try:
                async with http.post(
                    url + bench.API_PATH, data=body, headers=bench.operation(headers)
                ) as resp:
                    await resp.read()
                    minute["201" if resp.status == 201 else f"HTTP {resp.status}"] += 1
                    if resp.status == 201:
                        latencies.append(time.perf_counter() - started)
            except (aiohttp.ClientError, TimeoutError) as exc:
                minute[type(exc).__name__] += 1
            finally:
                in_flight -= 1

        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while (due := t0 + i / rate) < t0 + seconds:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            minute = minutes.setdefault(int((due - t0) // 60), Counter())
            i += 1
            if in_flight >= cap:
                minute["skipped"] += 1
                continue
            in_flight += 1
            task = asyncio.create_task(one(minute))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "minutes": {str(k): dict(v) for k, v in minutes.items()},
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
    }


def run_paced(url: str, token: str, rate: float, seconds: float, cap: int) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(
        target=paced_loadgen, args=(url, token, rate, seconds, cap, out), daemon=True
    )
    proc.start()
    try:
        result: dict = out.get(timeout=seconds + 120)
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
    if "error" in result:
        raise bench.BenchError(f"load generator failed: {result['error']}")
    return result


# ------------------------------------------------------------------ samples and figures


def read_samples(directory: Path, pids: list[int]) -> dict[int, list[dict]]:
    samples: dict[int, list[dict]] = {}
    for pid in pids:
        path = directory / f"{pid}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        samples[pid] = [json.loads(line) for line in lines if line.strip()]
    return samples


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, bytes) points, in MB per minute."""
    if len(points) < 2:
        return 0.0
    fit = statistics.linear_regression([p[0] for p in points], [p[1] for p in points])
    return fit.slope * 60 / 1e6


def nearest(rows: list[dict], t: float) -> dict | None:
    before = [r for r in rows if r["t"] <= t]
    return before[-1] if before else None


def mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def minute_table(
    samples: dict[int, list[dict]], t0: float, minutes: int, load: dict, idle_end: float
) -> str:
    lines = ["minute  " + "  ".join(f"w{i} RSS/heap/native MB" for i in range(len(samples)))]
    lines[0] += "   201s   errors"
    marks = [t0 + 60 * m for m in range(minutes + 1)] + [idle_end]
    for m, t in enumerate(marks):
        cells = []
        for rows in samples.values():
            r = nearest(rows, t)
            if r is None:
                cells.append("          -          ")
                continue
            heap = r.get("py_heap")
            native = r["rss"] - heap if heap is not None else None
            heap_text = mb(heap) if heap is not None else "-"
            native_text = mb(native) if native is not None else "-"
            cells.append(f"{mb(r['rss']):>6}/{heap_text:>5}/{native_text:>6}        ")
        counts = Counter(load["minutes"].get(str(m - 1), {})) if 0 < m <= minutes else Counter()
        ok = counts.pop("201", 0)
        label = f"{m:>6}" if m <= minutes else "  idle"
        errors = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "0"
        lines.append(f"{label}  " + "  ".join(cells) + f"  {ok:>5}   {errors}")
    return "\n".join(lines)


def summary(
    samples: dict[int, list[dict]], start: float, settle: float, end: float, ok_rate: float
) -> str:
    lines = []
    totals: list[float] = []
    for i, rows in enumerate(samples.values()):
        window = [r for r in rows if start + settle <= r["t"] <= end]
        if len(window) < 2:
            lines.append(f"w{i}: too few samples after settling")
            continue
        rss = slope_mb_per_min([(r["t"], r["rss"]) for r in window])
        drift = (window[-1]["rss"] - window[0]["rss"]) / window[0]["rss"] * 100
        text = f"w{i}: RSS {mb(window[0]['rss'])} -> {mb(window[-1]['rss'])} MB"
        text += f", slope {rss:+.2f} MB/min, drift {drift:+.1f} %"
        if "py_heap" in window[0]:
            heap = slope_mb_per_min([(r["t"], r["py_heap"]) for r in window])
            native = slope_mb_per_min([(r["t"], r["rss"] - r["py_heap"]) for r in window])
            text += f"; Python heap {heap:+.2f} MB/min, native {native:+.2f} MB/min"
            tracer = slope_mb_per_min([(r["t"], r.get("tracer", 0)) for r in window])
            text += f" (of which tracemalloc's own {tracer:+.2f})"
        malloc = slope_mb_per_min([(r["t"], r["malloc_in_use"]) for r in window])
        text += f"; malloc in use {malloc:+.2f} MB/min"
        lines.append(text)
        totals.append(rss)
        if window[-1].get("top"):
            lines += ["    tracemalloc growth since minute 1:"]
            lines += [f"      {t}" for t in window[-1]["top"][:3]]
    if totals:
        per_request = sum(totals) * 1e6 / (ok_rate * 60) if ok_rate else 0.0
        lines.append(
            f"all workers: RSS slope {sum(totals):+.2f} MB/min at {ok_rate:.0f} signatures/s"
            f" = {per_request:+.0f} bytes per signature"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ orchestration


def capacity(url: str, token: str, seconds: float, concurrency: int) -> float:
    result = bench.run_aiohttp(url, token, seconds, concurrency)
    return result.rate


def worker_pids(signer: Any, workers: int) -> list[int]:
    return bench.wait_all_workers(signer, workers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--minutes", type=int, default=5, help="minutes of load")
    p.add_argument("--load", type=float, default=0.7, help="share of measured capacity")
    p.add_argument("--rate", type=float, help="requests/s instead of --load x capacity")
    p.add_argument("--probe", type=float, default=15.0, help="seconds of capacity probe")
    p.add_argument("--concurrency", type=int, default=32, help="connections of the probe")
    p.add_argument("--settle", type=float, default=2.0, help="minutes left out of the slope")
    p.add_argument("--idle", type=float, default=60.0, help="seconds idle after the load")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--no-tracemalloc", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, no secrets)")
    args = p.parse_args(argv)
    extra = dict(kv.split("=", 1) for kv in args.set if "=" in kv)
    if len(extra) != len(args.set) or args.minutes < 1 or not 0 < args.load <= 1:
        p.error("--set takes KEY=VALUE; need --minutes >= 1 and 0 < --load <= 1")
    signal.signal(signal.SIGTERM, bench._terminate)
    tmp = Path(tempfile.mkdtemp(prefix="qes-memsoak-"))
    probe_dir = tmp / "probe"
    probe_dir.mkdir()
    (probe_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    samples_dir = tmp / "samples"
    samples_dir.mkdir()
    pythonpath = os.pathsep.join(filter(None, [str(probe_dir), os.environ.get("PYTHONPATH")]))
    extra |= {
        "PYTHONPATH": pythonpath,
        "QES_MEMSOAK_DIR": str(samples_dir),
        "QES_MEMSOAK_EVERY": str(args.sample),
        "QES_MEMSOAK_TRACE": "0" if args.no_tracemalloc else "1",
    }
    background = bench.machine_busy(1.0)
    uptime_before = Path("/proc/loadavg").read_text().split()[:3]
    try:
        with contextlib.ExitStack() as stack:
            # one token for the whole run: it must outlive the probe, the load and the idle
            ttl = int(args.probe + args.minutes * 60 + args.idle + 600)
            svc = bench.start_service(stack, tmp, args.workers, extra, token_ttl=ttl)
            pids = worker_pids(svc.signer, args.workers)
            bench.check_one_signature(svc.signer.url, svc.batch_token)
            objects_start = svc.token.list_objects()
            with bench.step(f"capacity probe, {args.probe:g} s closed loop"):
                cap = capacity(svc.signer.url, svc.batch_token, args.probe, args.concurrency)
            rate = args.rate or cap * args.load
            start = time.time()
            with bench.step(f"{args.minutes} min at {rate:.0f} requests/s"):
                load = run_paced(
                    svc.signer.url, svc.batch_token, rate, args.minutes * 60, 4 * args.concurrency
                )
            end = time.time()
            with bench.step(f"{args.idle:g} s idle"):
                time.sleep(args.idle)
            idle_end = time.time()
            time.sleep(min(args.sample, 10) + 1)
            samples = read_samples(samples_dir, pids)
            shutdown = bench.stop_signer(svc.signer)
            objects_end = svc.token.list_objects()
    except KeyboardInterrupt:
        print("interrupted: everything started has been stopped", file=sys.stderr)
        return 130
    except (bench.BenchError, subprocess.SubprocessError) as exc:
        print(f"memsoak: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.clean_up(tmp, keep=args.keep)
    uptime_after = Path("/proc/loadavg").read_text().split()[:3]
    extra_set = [k for k in args.set]
    print()
    print(
        f"qes-signer memsoak: {args.workers} workers, capacity {cap:.0f}/s, load {rate:.0f}/s"
        f" for {args.minutes} min (p50 {load['p50_ms']:.0f} ms, p99 {load['p99_ms']:.0f} ms),"
        f" tracemalloc {'off' if args.no_tracemalloc else 'on'}"
        + (f", settings {' '.join(extra_set)}" if extra_set else "")
    )
    print(
        f"machine: load average {' '.join(uptime_before)} before, {' '.join(uptime_after)}"
        f" after; {background:.2f} cores busy before start"
    )
    print(minute_table(samples, start, args.minutes, load, idle_end))
    ok = sum(m.get("201", 0) for m in load["minutes"].values())
    print(summary(samples, start, args.settle * 60, end, ok / (end - start)))
    idle_rows = [nearest(rows, idle_end) for rows in samples.values()]
    load_rows = [nearest(rows, end) for rows in samples.values()]
    if all(idle_rows) and all(load_rows):
        change = sum(r["rss"] for r in idle_rows if r) - sum(r["rss"] for r in load_rows if r)
        print(f"after {args.idle:g} s idle: RSS of all workers {change / 1e6:+.1f} MB")
    left_start = [o for o in objects_start if o.label not in LONG_LIVED_LABELS]
    left_end = [o for o in objects_end if o.label not in LONG_LIVED_LABELS]
    print(
        f"token objects: {len(objects_start)} at start ({len(left_start)} not long-lived),"
        f" {len(objects_end)} at end ({len(left_end)} not long-lived); signer {shutdown}"
    )
    return 0 if not left_end else 2


if __name__ == "__main__":
    sys.exit(main())
