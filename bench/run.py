"""HSM cycle rate versus end-to-end HTTP signatures per second, with the same number of processes.

    .venv/bin/python bench/run.py [--workers 2] [--seconds 10] [--concurrency 32]

Sets up a throwaway SoftHSM2 token, a scratch PostgreSQL database and the dev IdP (the test
helpers in tests/support), runs ``qes init`` through the CLI, then measures

(a) the raw HSM cycle through ``signer.keys``: keygen -> ``IssuingCA.issue`` with the CA token
    key -> ``sign_digest`` -> ``destroy``, one ``Hsm.run`` hop per cycle, in N processes, each
    an asyncio loop keeping twice as many cycles in flight as it has sessions;
(b) ``qes serve`` with ``server.workers = N``: POST /api/v1/signatures with one random SHA-256
    digest each, from a load generator in its own process (wrk, else aiohttp), counting 201s;

and prints both, (b)/(a), latency, errors and where the CPU went. Everything it starts is
stopped on exit (also on Ctrl-C or failure), and a separate process then lists the token: no
object other than the CA keys may be left.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.metadata
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `signer` and `tests.support` importable
    sys.path.insert(0, str(ROOT))

from tests.support.idp import DEMO_SECRETS, start_idp  # noqa: E402
from tests.support.pg import admin_url, scratch_database  # noqa: E402
from tests.support.service import (  # noqa: E402
    DEV_CONFIG,
    LONG_LIVED_LABELS,
    SignerProcess,
    free_port,
    service_env,
)
from tests.support.softhsm import SoftHsmToken  # noqa: E402

LUA_SCRIPT = Path(__file__).resolve().parent / "post_digest.lua"
API_PATH = "/api/v1/signatures"


def operation(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with a fresh ``Idempotency-Key``: each request is its own signing operation
    (a token's ``jti`` starts one operation, or one per key the client sends: README, tokens)."""
    return {**headers, "Idempotency-Key": uuid.uuid4().hex}


TARGET_RATIO = 0.35
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which."""


# ------------------------------------------------------------------ (a) raw HSM cycle


def child_main(work: Any, args: tuple[Any, ...], ready: Any, start: Any, out: Any) -> None:
    """Body of a measuring child process: ``out.put(await work(*args, ready, start))`` in a
    fresh event loop, or the error with its causes (and a ready signal, so that the parent
    never waits for a child that died)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    try:
        out.put(asyncio.run(work(*args, ready, start)))
    except BaseException as exc:
        causes = [exc]
        while causes[-1].__cause__ is not None and len(causes) < 5:
            causes.append(causes[-1].__cause__)
        text = " <- ".join(f"{type(e).__name__}: {e}" for e in causes)
        out.put({"pid": os.getpid(), "error": text})
        ready.put(os.getpid())  # never leave the parent waiting


def hsm_worker(env: dict[str, str], seconds: float, ready: Any, start: Any, out: Any) -> None:
    """Child process of (a): open the HSM, warm up, wait for ``start``, run cycles, report."""
    os.environ.update(env)  # SOFTHSM2_CONF must be set before the PKCS#11 module loads
    child_main(_hsm_cycles, (env, seconds), ready, start, out)


async def _hsm_cycles(env: dict[str, str], seconds: float, ready: Any, start: Any) -> dict:
    from ca.authority import IssuingCA
    from ca.profiles import LegalPerson, Level
    from signer.app import load_chain, utc_now
    from signer.keys import Hsm, HsmSession
    from signer.settings.config import load_settings
    from signer.storage.authority import CaCertificateStore
    from signer.storage.db import create_pool

    settings = load_settings(DEV_CONFIG, env=env)
    assert settings.database.url is not None
    pool = await create_pool(
        settings.database.url.reveal(), min_size=1, max_size=1, command_timeout=10
    )
    try:
        chain = await load_chain(CaCertificateStore(pool), settings)
    finally:
        await pool.close()
    ca = IssuingCA(chain, settings.ca.policy, utc_now)
    label = settings.ca.issuing_label
    subject = LegalPerson(
        country="DE",
        organization="Demo Manufacturing GmbH",
        organization_identifier="NTRDE-HRB12345",
        common_name="Demo Manufacturing GmbH",
    )

    def cycle(s: HsmSession) -> None:
        key = s.generate_ephemeral()
        try:
            ca.issue(s.token_key(label), key.private.public_key(), subject, Level.QES)
            key.private.sign_digest(secrets.token_bytes(32))
        finally:
            receipt = s.destroy(key)
        if not receipt.confirmed_absent:
            raise BenchError("ephemeral key still resolves after destroy")

    hsm = await asyncio.to_thread(Hsm.open, settings.hsm)
    try:
        in_flight = 2 * settings.hsm.sessions  # keeps every session busy, the queue non-empty

        async def run_for(duration: float) -> tuple[int, float]:
            t0 = time.perf_counter()
            deadline = t0 + duration
            done = 0

            async def loop() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    await hsm.run(cycle)
                    done += 1

            await asyncio.gather(*(loop() for _ in range(in_flight)))
            return done, time.perf_counter() - t0

        await run_for(1.0)  # warm-up: token-key lookup per session, imports, caches
        ready.put(os.getpid())
        if not await asyncio.to_thread(start.wait, 120):
            raise BenchError("start signal never came")
        cycles, elapsed = await run_for(seconds)
        leftovers = await hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
        live = hsm.live_ephemeral_keys()
    finally:
        await asyncio.to_thread(hsm.close)
    return {
        "pid": os.getpid(),
        "cycles": cycles,
        "elapsed": elapsed,
        "sessions": settings.hsm.sessions,
        "in_flight": in_flight,
        "session_leftovers": len(leftovers) + live,
    }


def run_processes(
    target: Any,
    args: tuple[Any, ...],
    workers: int,
    seconds: float,
    label: str,
    groups: Any = None,
) -> tuple[list[dict[str, Any]], CpuMeter]:
    """``workers`` spawned processes of ``target(*args, ready, start, out)`` (see
    :func:`child_main`): all warm up and say ready, then start together; returns their
    results and the CPU used meanwhile by them (``label``) and by the process groups that
    ``groups()`` names once they are ready (e.g. the database backends they opened)."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: the module is initialised per process
    ready, out, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=target, args=(*args, ready, start, out), daemon=True)
        for _ in range(workers)
    ]
    try:
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=120)
        pids = [p.pid for p in procs if p.pid is not None]
        meter = CpuMeter({label: pids, **(groups() if groups else {})})
        meter.start()
        start.set()
        results = [out.get(timeout=seconds + 120) for _ in procs]
        meter.stop()
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(10)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise BenchError(f"{label}: a process failed: {errors[0]}")
    return results, meter


def measure_hsm(env: dict[str, str], workers: int, seconds: float) -> dict[str, Any]:
    results, meter = run_processes(hsm_worker, (env, seconds), workers, seconds, "(a) workers")
    return {
        "rate": sum(r["cycles"] / r["elapsed"] for r in results),
        "per_process": [round(r["cycles"] / r["elapsed"]) for r in results],
        "cycles": sum(r["cycles"] for r in results),
        "sessions": results[0]["sessions"],
        "in_flight": results[0]["in_flight"],
        "session_leftovers": sum(r["session_leftovers"] for r in results),
        "cpu": meter,
    }


# ------------------------------------------------------------------ (b) load generators


@dataclass
class LoadResult:
    tool: str
    created: int
    duration: float
    p50_ms: float
    p99_ms: float
    other_status: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.created / self.duration if self.duration else 0.0

    def error_text(self) -> str:
        parts = [f"{k}: {v}" for k, v in sorted(self.other_status.items())]
        parts += [f"{k}: {v}" for k, v in sorted(self.errors.items()) if v]
        return ", ".join(parts) or "none"


def ensure_wrk() -> str | None:
    """Path of wrk; installs the Debian package when missing and running as root."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    print("wrk missing: apt-get install -y wrk", flush=True)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, capture_output=True, timeout=300, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300, check=False)
        subprocess.run(install, capture_output=True, timeout=300, check=False)
    return shutil.which("wrk")


def run_wrk(
    wrk: str, url: str, token: str, seconds: float, concurrency: int, on_start: Any = None
) -> LoadResult:
    cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    cmd += ["-s", str(LUA_SCRIPT), url + API_PATH]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "QES_BENCH_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        if on_start is not None:
            on_start(proc.pid)
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    match = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise BenchError(f"wrk failed (exit {proc.returncode}): {out[-1500:]}")
    r = json.loads(match[1])
    errors = Counter({k: r[k] for k in ("connect", "read", "write", "timeout")})
    other = Counter({"non-201": r["other_status"]}) if r["other_status"] else Counter()
    return LoadResult(
        "wrk",
        r["created"],
        r["duration_us"] / 1e6,
        r["p50_us"] / 1e3,
        r["p99_us"] / 1e3,
        other,
        errors,
    )


def aiohttp_loadgen(url: str, token: str, seconds: float, concurrency: int, out: Any) -> None:
    """Child process: the fallback load generator (one event loop, ``concurrency`` tasks)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        out.put(asyncio.run(_aiohttp_load(url, token, seconds, concurrency)))
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})


async def _aiohttp_load(url: str, token: str, seconds: float, concurrency: int) -> dict:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def client() -> None:
            while (started := time.perf_counter()) < deadline:
                digest = base64.b64encode(secrets.token_bytes(32))
                body = b'{"hash_algorithm":"sha256","hashes":["' + digest + b'"]}'
                try:
                    async with http.post(
                        url + API_PATH, data=body, headers=operation(headers)
                    ) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1
                    continue
                if status == 201:
                    latencies.append(time.perf_counter() - started)
                else:
                    statuses[str(status)] += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "created": len(latencies),
        "duration": elapsed,
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "statuses": dict(statuses),
        "errors": dict(errors),
    }


def run_aiohttp(
    url: str, token: str, seconds: float, concurrency: int, on_start: Any = None
) -> LoadResult:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(
        target=aiohttp_loadgen, args=(url, token, seconds, concurrency, out), daemon=True
    )
    proc.start()
    try:
        if on_start is not None:
            on_start(proc.pid)
        r = out.get(timeout=seconds + 60)
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
    if "error" in r:
        raise BenchError(f"aiohttp load generator failed: {r['error']}")
    return LoadResult(
        "aiohttp (fallback)",
        r["created"],
        r["duration"],
        r["p50_ms"],
        r["p99_ms"],
        Counter(r["statuses"]),
        Counter(r["errors"]),
    )


# ------------------------------------------------------------------ CPU accounting (/proc)


def _ticks(pid: int) -> int:
    """CPU ticks of a process (all its threads); a negative pid means its main thread only."""
    path = f"/proc/{pid}/stat" if pid > 0 else f"/proc/{-pid}/task/{-pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
    return pids


def machine_busy(seconds: float) -> float:
    """Cores busy over the next ``seconds`` (other users of this machine skew every figure)."""
    b0, t0 = system_ticks()
    time.sleep(seconds)
    b1, t1 = system_ticks()
    return (b1 - b0) / max(1, t1 - t0) * (os.cpu_count() or 1)


def system_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU seconds used by named groups of processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.before: dict[int, int] = {}
        self.used: dict[str, float] = {}
        self.sys_before = (0, 0)
        self.busy_cores = 0.0

    def start(self) -> None:
        self.before = {p: _ticks(p) for pids in self.groups.values() for p in pids}
        self.sys_before = system_ticks()
        self.rusage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        after = {p: _ticks(p) for pids in self.groups.values() for p in pids}
        elapsed = time.perf_counter() - self.t0
        for name, pids in self.groups.items():
            ticks = sum(after[p] - self.before[p] for p in pids if after[p])
            self.used[name] = ticks / CLK_TCK / elapsed
        busy, total = system_ticks()
        share = (busy - self.sys_before[0]) / max(1, total - self.sys_before[1])
        self.busy_cores = share * (os.cpu_count() or 1)
        self.elapsed = elapsed

    def text(self) -> str:
        used = ", ".join(f"{k} {v:.2f}" for k, v in self.used.items())
        counted = sum(v for k, v in self.used.items() if not k.startswith("of which"))
        other = max(0.0, self.busy_cores - counted)
        return f"{used}, anything else {other:.2f}; machine {self.busy_cores:.2f} busy"

    def add_reaped(self, name: str) -> None:
        """Account children reaped since :meth:`start` (the finished load generator)."""
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        b = self.rusage_before
        self.used[name] = (r.ru_utime + r.ru_stime - b.ru_utime - b.ru_stime) / self.elapsed


# ------------------------------------------------------------------ (b) end to end


def wait_all_workers(signer: SignerProcess, workers: int, timeout: float = 60) -> list[int]:
    """The supervisor's worker pids, once each has logged "started" and /readyz answers."""
    assert signer.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = children(signer.proc.pid) if workers > 1 else [signer.proc.pid]
        started = signer.log.read_text(errors="replace").count('"started"')
        if len(pids) == workers and started >= workers and signer.ready():
            return pids
        time.sleep(0.2)
    raise BenchError(f"{workers} signer workers not ready: {signer.log.read_text()[-2000:]}")


def stop_signer(signer: SignerProcess, grace: float = 30.0) -> str:
    """SIGTERM the signer's process group; SIGKILL it after ``grace`` seconds. Says how it went."""
    proc = signer.proc
    if proc is None or proc.poll() is not None:
        return "not running"
    t0 = time.perf_counter()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        dump_stacks([proc.pid, *children(proc.pid)], signer.log.with_name("signer-hang.txt"))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        return f"did not exit within {grace:g} s of SIGTERM: SIGKILLed"
    with contextlib.suppress(ProcessLookupError):  # workers the supervisor left behind
        os.killpg(proc.pid, signal.SIGKILL)
    return f"exited {time.perf_counter() - t0:.1f} s after SIGTERM (code {proc.returncode})"


def dump_stacks(pids: list[int], out: Path) -> None:
    """py-spy dump of processes that do not stop (kept with --keep), when py-spy is there."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return
    with out.open("w") as f:
        for pid in pids:
            f.write(f"== pid {pid}\n")
            f.flush()
            subprocess.run([spy, "dump", "-p", str(pid)], stdout=f, stderr=f, timeout=30)


def check_one_signature(url: str, token: str) -> None:
    """One request by hand: 201, and the signature verifies under the returned certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    digest = secrets.token_bytes(32)
    body = json.dumps({"hash_algorithm": "sha256", "hashes": [base64.b64encode(digest).decode()]})
    req = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
        url + API_PATH,
        data=body.encode(),
        headers=operation({"Authorization": f"Bearer {token}", "Content-Type": "application/json"}),
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            status, result = resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        raise BenchError(f"sanity request: HTTP {exc.code} {exc.read()[:500]!r}") from exc
    if status != 201:
        raise BenchError(f"sanity request: HTTP {status}")
    cert = x509.load_pem_x509_certificate(result["certificate"].encode())
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signature = base64.b64decode(result["signatures"][0])
    public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def measure_rounds(
    signer: SignerProcess,
    token: str,
    env: dict[str, str],
    args: argparse.Namespace,
    idp_pid: int,
    profile_dir: Path | None,
) -> list[Round]:
    """Alternate (a) and (b) ``args.rounds`` times with the signer running (idle during (a)),
    so that a slow or busy stretch of the machine hits both sides of a ratio, not one."""
    workers = args.workers
    worker_pids = wait_all_workers(signer, workers)
    check_one_signature(signer.url, token)
    wrk = None if args.loadgen == "aiohttp" else ensure_wrk()
    if wrk is None and args.loadgen == "wrk":
        raise BenchError("--loadgen wrk: wrk is not installed and cannot be installed")

    def load(seconds: float, on_start: Any = None) -> LoadResult:
        if wrk is not None:
            return run_wrk(wrk, signer.url, token, seconds, args.concurrency, on_start)
        return run_aiohttp(signer.url, token, seconds, args.concurrency, on_start)

    load(min(3.0, args.seconds))  # warm-up: JWKS fetch, pools, caches in every worker
    rounds = []
    for n in range(args.rounds):
        with step(f"round {n + 1}/{args.rounds}: (a) raw HSM cycle, {workers} processes"):
            hsm = measure_hsm(env, workers, args.seconds)
        with step(f"round {n + 1}/{args.rounds}: (b) {workers} signer workers under load"):
            http, meter = _measured_load(load, worker_pids, idp_pid, args, profile_dir, n == 0)
        rounds.append(Round(hsm, http, meter))
    return rounds


def _measured_load(
    load: Any,
    worker_pids: list[int],
    idp_pid: int,
    args: argparse.Namespace,
    profile_dir: Path | None,
    profile: bool,
) -> tuple[LoadResult, CpuMeter]:
    meter = CpuMeter(
        {
            "signer workers": worker_pids,
            "of which event-loop threads": [-p for p in worker_pids],
            "postgres": pids_named("postgres"),
            "dev IdP": [idp_pid],
        }
    )
    spies: list[subprocess.Popen[bytes]] = []

    def on_start(_pid: int) -> None:
        meter.start()
        if profile_dir is not None and profile:
            spies.extend(start_py_spy(worker_pids, args.seconds, profile_dir))

    try:
        result = load(args.seconds, on_start)
        meter.stop()
        meter.add_reaped("load generator")
    finally:
        for spy in spies:
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
    return result, meter


def start_py_spy(pids: list[int], seconds: float, out_dir: Path) -> list[subprocess.Popen[bytes]]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in pids:
        cmd = [spy, "record", "-p", str(pid), "-d", str(max(1, int(seconds) - 1)), "-r", "200"]
        cmd += ["--nonblocking", "-f", "raw", "-o", str(out_dir / f"worker-{pid}.txt")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


# ------------------------------------------------------------------ report


def machine_facts() -> list[tuple[str, str]]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    softhsm = subprocess.run(
        ["softhsm2-util", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return [
        ("nproc", f"{len(os.sched_getaffinity(0))} (cpu_count {os.cpu_count()})"),
        ("CPU model", model),
        ("Python", platform.python_version()),
        ("SoftHSM2", softhsm or "?"),
        ("python-pkcs11", importlib.metadata.version("python-pkcs11")),
    ]


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


@dataclass
class Round:
    hsm: dict[str, Any]
    http: LoadResult
    meter: CpuMeter

    @property
    def ratio(self) -> float:
        return self.http.rate / self.hsm["rate"] if self.hsm["rate"] else 0.0


def report(
    args: argparse.Namespace,
    rounds: list[Round],
    leftover: int,
    shutdown: str,
    background: float,
) -> str:
    """The round with the median ratio in detail, and every round's figures."""
    median = sorted(rounds, key=lambda r: r.ratio)[len(rounds) // 2]
    hsm, http, meter, ratio = median.hsm, median.http, median.meter, median.ratio
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    per_round = ", ".join(f"{r.hsm['rate']:.0f}/{r.http.rate:.0f}={r.ratio:.3f}" for r in rounds)
    rows = [
        ("processes (N)", str(args.workers)),
        ("rounds (a)/(b)=ratio", per_round),
        (
            "(a) HSM cycles/s",
            f"{hsm['rate']:.0f}  (per process {hsm['per_process']}; {hsm['sessions']} sessions,"
            f" {hsm['in_flight']} in flight each)",
        ),
        (
            "(b) signatures/s",
            f"{http.rate:.0f}  ({http.created} x 201 in {http.duration:.1f} s,"
            f" {args.concurrency} connections)",
        ),
        (
            "(b)/(a)",
            f"{ratio:.3f}  ({verdict} target {TARGET_RATIO}; median of {len(rounds)} rounds,"
            " detailed below)",
        ),
        ("(b) latency p50 / p99", f"{http.p50_ms:.1f} ms / {http.p99_ms:.1f} ms"),
        ("(b) errors", http.error_text()),
        ("load generator", http.tool),
        ("(a) CPU, cores", hsm["cpu"].text()),
        ("(b) CPU, cores", meter.text()),
        ("busy before start", f"{background:.2f} cores (other users of the machine)"),
        ("signer shutdown", shutdown),
        ("leftover non-CA objects", f"{leftover} (token listed from a separate process)"),
        *machine_facts(),
    ]
    return table(rows)


# ------------------------------------------------------------------ orchestration


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _alarm(_signum: int, _frame: object) -> None:
    raise BenchError("time limit of the whole run reached")


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    print(f"-- {name} ...", flush=True)
    yield
    print(f"   done in {time.perf_counter() - t0:.1f} s", flush=True)


def with_options(url: str, options: list[str]) -> str:
    """asyncpg passes unknown DSN query parameters to the server as settings."""
    return url + ("?" + "&".join(options) if options else "")


def qes_init(env: dict[str, str], log: Path, token: SoftHsmToken) -> None:
    """`qes init`: the key ceremony on one machine, so it alone gets the offline root token's
    PIN (``token`` made :meth:`~SoftHsmToken.with_offline_root`), never `qes serve`."""
    done = subprocess.run(
        [sys.executable, "-m", "signer", "init", "--config", str(DEV_CONFIG)],
        env={**os.environ, **env, **token.root_env()},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise BenchError(f"qes init failed: {done.stderr.strip()[-500:]}")


@dataclass
class BenchService:
    """What :func:`start_service` started (stopped by the caller's ExitStack)."""

    token: SoftHsmToken
    env: dict[str, str]
    idp: Any
    signer: SignerProcess
    batch_token: str


def start_service(
    stack: contextlib.ExitStack,
    tmp: Path,
    workers: int,
    extra: dict[str, str] | None = None,
    db_options: list[str] | None = None,
    token_ttl: int = 600,
) -> BenchService:
    """Throwaway SoftHSM2 token, scratch database and dev IdP, ``qes init``, then ``qes serve``
    with ``workers`` processes; everything is registered on ``stack`` to be stopped. The IdP's
    access tokens live ``token_ttl`` seconds: a run longer than that needs more."""
    with step("throwaway SoftHSM2 token, scratch database, dev IdP"):
        token = SoftHsmToken.create(tmp / "softhsm", label="qes-bench").with_offline_root()
        token.activate()  # this process never loads the module; children inherit
        database_url = stack.enter_context(scratch_database(stack.enter_context(admin_url())))
        idp = stack.enter_context(start_idp(tmp / "idp", access_token_ttl=token_ttl))
        port = free_port()
        env = service_env(
            token=token,
            database_url=with_options(database_url, db_options or []),
            idp=idp,
            port=port,
            data_dir=tmp / "data",
            SOFTHSM2_CONF=str(token.conf),
            QES__SERVER__WORKERS=str(workers),
            **(extra or {}),
        )
    with step("qes init"):
        qes_init(env, tmp / "init.log", token)
    with step(f"qes serve, {workers} workers"):
        batch_token = asyncio.run(idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"]))
        signer = SignerProcess(env, port, tmp / "signer.log")
        stack.callback(stop_signer, signer, 5.0)
        signer.start(timeout=60)
    return BenchService(token, env, idp, signer, batch_token)


def clean_up(tmp: Path, *, keep: bool) -> None:
    """Remove the run's temp dir; with ``keep``, remove only its secrets (token, IdP keys)."""
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    for secret_file in (tmp / "softhsm").rglob("*"):
        if secret_file.is_file():
            secret_file.unlink()
    for config in (tmp / "idp").glob("*.private.json"):
        config.unlink()
    print(f"kept logs in {tmp}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2, help="processes for (a) and (b)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured time of each part")
    p.add_argument("--concurrency", type=int, default=32, help="HTTP connections in (b)")
    p.add_argument("--rounds", type=int, default=3, help="(a)/(b) pairs; the median counts")
    p.add_argument("--loadgen", choices=("auto", "wrk", "aiohttp"), default="auto")
    p.add_argument("--profile", type=Path, help="py-spy every (b) worker into this directory")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, no secrets)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for (a) and (b), e.g. QES__HSM__SESSIONS=16 (experiments)",
    )
    p.add_argument(
        "--db-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="PostgreSQL setting for the signer's connections, e.g. synchronous_commit=off",
    )
    args = p.parse_args(argv)
    extra = dict(kv.split("=", 1) for kv in args.set if "=" in kv)
    if len(extra) != len(args.set) or any("=" not in kv for kv in args.db_option):
        p.error("--set and --db-option take KEY=VALUE")
    if not 1 <= args.workers <= 64 or args.seconds < 1 or args.concurrency < 1 or args.rounds < 1:
        p.error("need 1 <= --workers <= 64, --seconds >= 1, --concurrency >= 1, --rounds >= 1")

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(3 * args.rounds * args.seconds) + 300)
    background = machine_busy(1.0)
    if background > 0.2:
        print(f"warning: {background:.2f} cores already busy before the run", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="qes-bench-"))
    token: SoftHsmToken | None = None
    leftover = -1
    try:
        with contextlib.ExitStack() as stack:
            bench = start_service(stack, tmp, args.workers, extra, args.db_option)
            token, env, idp, signer, batch_token = (
                bench.token,
                bench.env,
                bench.idp,
                bench.signer,
                bench.batch_token,
            )
            rounds = measure_rounds(signer, batch_token, env, args, idp.process.pid, args.profile)
            shutdown = stop_signer(signer)
        with step("token objects, listed from a separate process"):
            objects = token.list_objects()
            leftover = sum(1 for o in objects if o.label not in LONG_LIVED_LABELS)
            leftover += sum(r.hsm["session_leftovers"] for r in rounds)
    except KeyboardInterrupt:
        print("interrupted: everything started has been stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        clean_up(tmp, keep=args.keep)
    print()
    print(
        f"qes-signer bench: {args.workers} processes, {args.seconds:g} s each,"
        f" {args.concurrency} connections"
    )
    changed = [k for k in (*args.set, *args.db_option) if not k.startswith("PYTHONPATH=")]
    if changed:
        print(f"experiment settings: {' '.join(changed)}")
    print(report(args, rounds, leftover, shutdown, background))
    if args.profile is not None:
        print(f"\npy-spy raw stacks of the (b) workers: {args.profile}")
    return 0 if leftover == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
