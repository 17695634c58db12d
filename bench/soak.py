"""Soak and chaos: signing at a share of capacity while the HSM, PostgreSQL and a replica fail.

    .venv/bin/python bench/soak.py [--minutes 30] [--share 0.5] [--fault-every 60]

Sets up a throwaway SoftHSM2 token behind ``p11-kit server`` (the HSM in another process), a
private PostgreSQL cluster, the dev IdP and two ``qes serve`` replicas (the test helpers in
tests/support), measures capacity for a few seconds (closed loop, both replicas), then sends
signing requests at ``--share`` of it (open loop, round robin over the replicas; a request
whose replica does not answer is retried once on the other). Every ``--fault-every`` seconds
the next fault of the schedule happens: the HSM process is killed (and started again 3 s
later), the HSM hangs (SIGSTOP, SIGCONT 3 s later), PostgreSQL restarts (immediate stop, start
2 s later), a replica is SIGKILLed (and started again). It prints errors by kind, requests
retried, records lost (201s without a completed record: must be 0), keys left in the token
(must be 0), the RSS of every replica's processes at start and end, p50/p99 by minute, and
the time from each fault's repair to each replica's next signature. Exit code 2 when a record
was lost, a key left, or a replica never signed again after a fault; 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `signer` and `tests.support` importable
    sys.path.insert(0, str(ROOT))

from signer.settings.logging import quiet_third_party_warnings  # noqa: E402

quiet_third_party_warnings()  # before the imports below pull in pyHanko (its DSA warning)

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from signer.cli.localdb import LocalPostgres  # noqa: E402
from tests.support.idp import DEMO_SECRETS, start_idp  # noqa: E402
from tests.support.p11kit import P11KitServer  # noqa: E402
from tests.support.pg import private_cluster_dir  # noqa: E402
from tests.support.service import (  # noqa: E402
    DEV_CONFIG,
    LONG_LIVED_LABELS,
    SignerProcess,
    free_port,
    service_env,
)
from tests.support.softhsm import SoftHsmToken  # noqa: E402

FAULTS = ("hsm-kill", "hsm-hang", "postgres-restart", "replica-kill")
OUTAGE = {"hsm-kill": 3.0, "hsm-hang": 3.0, "postgres-restart": 2.0, "replica-kill": 0.0}


@dataclass
class Sample:
    sent: float
    took: float
    status: int
    kind: str  # "ok", a problem type, or a transport error
    serial: str | None = None
    retried: bool = False
    replica: int = 0  # which replica answered (or failed to)


@dataclass
class FaultRun:
    name: str
    started: float
    repaired: float = 0.0
    recovered: float | None = None  # first 201 sent after the repair


@dataclass
class Stack:
    token: SoftHsmToken
    hsm: P11KitServer
    pg: LocalPostgres
    replicas: list[SignerProcess]
    bearer: str
    work: Path
    idp: Any = None
    faults: list[FaultRun] = field(default_factory=list)


def body() -> dict[str, Any]:
    digest = hashlib.sha256(secrets.token_bytes(16)).digest()
    return {"hash_algorithm": "sha256", "hashes": [base64.b64encode(digest).decode()]}


async def one(session: aiohttp.ClientSession, url: str, bearer: str) -> Sample:
    sent = time.monotonic()
    headers = {"Authorization": f"Bearer {bearer}", "Idempotency-Key": uuid.uuid4().hex}
    try:
        async with session.post(f"{url}/api/v1/signatures", json=body(), headers=headers) as r:
            payload = await r.json(content_type=None)
            took = time.monotonic() - sent
            if r.status == 201:
                return Sample(sent, took, 201, "ok", payload["serial"])
            kind = payload.get("type", f"HTTP {r.status}") if isinstance(payload, dict) else ""
            return Sample(sent, took, r.status, kind)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Sample(sent, time.monotonic() - sent, -1, type(exc).__name__)


async def request(session: aiohttp.ClientSession, stack: Stack, n: int) -> Sample:
    """Round robin; a replica that does not answer is skipped once (the client's retry)."""
    urls = [r.url for r in stack.replicas]
    first = await one(session, urls[n % len(urls)], stack.bearer)
    first.replica = n % len(urls)
    if first.status != -1:
        return first
    second = await one(session, urls[(n + 1) % len(urls)], stack.bearer)
    second.replica = (n + 1) % len(urls)
    second.retried = True
    second.sent = first.sent
    second.took += first.took
    return second


async def capacity(stack: Stack, seconds: float, concurrency: int) -> float:
    done = 0
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def loop(i: int) -> None:
            nonlocal done
            n = i
            while time.monotonic() < end:
                if (await request(session, stack, n)).status == 201:
                    done += 1
                n += concurrency

        await asyncio.gather(*(loop(i) for i in range(concurrency)))
    return done / seconds


async def load(
    stack: Stack, rate: float, seconds: float, samples: list[Sample], faults_over: asyncio.Event
) -> None:
    """Open loop at ``rate`` requests/s (at most 256 in flight), for ``seconds`` and at least
    until 5 s after the last fault was repaired (a slow restart on a busy machine must not
    leave its recovery unmeasured)."""
    limit = asyncio.Semaphore(256)
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def go(n: int) -> None:
            async with limit:
                samples.append(await request(session, stack, n))

        def end() -> float:
            if faults_over.is_set() and stack.faults:
                return max(start + seconds, stack.faults[-1].repaired + 5)
            return start + seconds

        n = 0
        while (now := time.monotonic()) < end() or not faults_over.is_set():
            due = start + n / rate
            if due > now:
                await asyncio.sleep(due - now)
            task = asyncio.create_task(go(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)


async def refresh_token(stack: Stack) -> None:
    """Access tokens live 10 minutes: a fresh one every 4."""
    while True:
        await asyncio.sleep(240)
        stack.bearer = await stack.idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])


def fault_actions(stack: Stack) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    victim = stack.replicas[-1]
    return {
        "hsm-kill": (stack.hsm.kill, stack.hsm.start),
        "hsm-hang": (stack.hsm.hang, stack.hsm.resume),
        "postgres-restart": (lambda: stack.pg.stop(mode="immediate"), stack.pg.start),
        "replica-kill": (victim.kill, lambda: victim.start(timeout=60)),
    }


async def chaos(stack: Stack, every: float, seconds: float, over: asyncio.Event) -> None:
    try:
        await _chaos(stack, every, seconds)
    finally:
        over.set()


async def _chaos(stack: Stack, every: float, seconds: float) -> None:
    actions = fault_actions(stack)
    start = time.monotonic()
    i = 0
    while time.monotonic() - start + every < seconds:
        await asyncio.sleep(every)
        name = FAULTS[i % len(FAULTS)]
        i += 1
        run = FaultRun(name, time.monotonic())
        stack.faults.append(run)
        begin, end = actions[name]
        await asyncio.to_thread(begin)
        await asyncio.sleep(OUTAGE[name])
        await asyncio.to_thread(end)
        run.repaired = time.monotonic()


def rss_kib(replica: SignerProcess) -> dict[int, int]:
    """RSS of the replica's process group members (supervisor and workers), from /proc."""
    if replica.proc is None:
        return {}
    group = replica.proc.pid
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) != group:  # field 5: process group
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[int(entry.name)] = int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def records_lost(stack: Stack, samples: list[Sample]) -> int:
    conn = await asyncpg.connect(stack.pg.url())
    try:
        rows = await conn.fetch("SELECT serial, status FROM signing_records")
    finally:
        await conn.close()
    status = {r["serial"]: r["status"] for r in rows}
    return sum(1 for s in samples if s.serial and status.get(s.serial) != "completed")


def report(stack: Stack, samples: list[Sample], start: float, extra: dict[str, Any]) -> None:
    kinds = Counter(s.kind for s in samples)
    signed, cap, rate = kinds.get("ok", 0), extra["capacity"], extra["rate"]
    print(f"requests: {len(samples)}  signed: {signed}  capacity: {cap:.1f}/s  rate: {rate:.1f}/s")
    print("errors by kind:")
    for kind, count in kinds.most_common():
        if kind != "ok":
            print(f"  {count:6d}  {kind}")
    print(f"requests retried on the other replica: {sum(1 for s in samples if s.retried)}")
    print(f"records lost (201 without a completed record): {extra['lost']}")
    print(f"keys left in the token: {extra['keys_left']}")
    print("RSS per replica process, KiB (start -> end):")
    for name, (before, after) in extra["rss"].items():
        print(f"  {name}: {sum(before.values())} -> {sum(after.values())}"
              f"  ({len(before)} -> {len(after)} processes)")  # fmt: skip
    by_minute: dict[int, list[float]] = defaultdict(list)
    for s in samples:
        if s.status == 201:
            by_minute[int((s.sent - start) // 60)].append(s.took * 1000)
    print("minute  signed   p50 ms   p99 ms")
    for minute in sorted(by_minute):
        values = by_minute[minute]
        print(f"{minute:6d}  {len(values):6d}  {statistics.median(values):7.1f}"
              f"  {percentile(values, 0.99):7.1f}")  # fmt: skip
    names = [f"replica{i}" for i in range(len(stack.replicas))]
    print("fault              at s   repaired s   next signature after repair, s: "
          + "  ".join(names))  # fmt: skip
    for run in stack.faults:
        per = [recovery(samples, run.repaired, i) for i in range(len(names))]
        known = [t for t in per if t is not None]
        run.recovered = max(known) if len(known) == len(per) else None
        shown = "  ".join(f"{t:.2f}" if t is not None else "never" for t in per)
        print(f"{run.name:17s} {run.started - start:6.1f}   {run.repaired - start:9.1f}   {shown}")


def recovery(samples: list[Sample], repaired: float, replica: int) -> float | None:
    """Seconds from a fault's repair to the first signature ``replica`` sent after it: every
    replica must come back on its own (one stuck replica behind a retrying client is an
    outage for every client that does not retry)."""
    after = [s.sent for s in samples if s.status == 201 and s.replica == replica]
    after = [t for t in after if t >= repaired]
    return min(after) - repaired if after else None


def build(work: Path, workers: int, idp: Any) -> Stack:
    token = SoftHsmToken.create(work / "token", label="qes-soak").with_offline_root()
    hsm = P11KitServer.for_token(token, work, "hsm").start()
    pg = LocalPostgres(private_cluster_dir())
    pg.start()
    replicas = []
    for n in range(2):
        port = free_port()
        env = service_env(
            token=token,
            database_url=pg.url(),
            idp=idp,
            port=port,
            data_dir=work,
            QES__SERVER__WORKERS=str(workers),
            QES__HSM__CALL_TIMEOUT_SECONDS="3",
            QES__HSM__RECONNECT_MAX_SECONDS="1",
            QES__DATABASE__COMMAND_TIMEOUT="3",
            **hsm.env_overrides(),
        )
        if n == 0:
            done = subprocess.run(
                [sys.executable, "-m", "signer", "init", "--config", str(DEV_CONFIG)],
                # the ceremony, init only: the root token straight from SoftHSM2, not through
                # the p11-kit server that carries only the service's token
                env={
                    **os.environ,
                    **env,
                    **token.root_env(),
                    "QES__OFFLINE__MODULE": token.module,
                    "SOFTHSM2_CONF": str(token.conf),
                },
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"qes init failed: {done.stderr.strip()[-500:]}")
        replicas.append(SignerProcess(env, port, work / f"replica{n}.log").start(timeout=120))
    return Stack(token, hsm, pg, replicas, "", work)


async def soak(args: argparse.Namespace, stack: Stack) -> int:
    seconds = args.minutes * 60
    cap = await capacity(stack, args.capacity_seconds, args.concurrency)
    rate = max(1.0, cap * args.share)
    rss_before = {f"replica{i}": rss_kib(r) for i, r in enumerate(stack.replicas)}
    samples: list[Sample] = []
    start = time.monotonic()
    refresher = asyncio.create_task(refresh_token(stack))
    over = asyncio.Event()
    await asyncio.gather(
        load(stack, rate, seconds, samples, over), chaos(stack, args.fault_every, seconds, over)
    )
    refresher.cancel()
    await asyncio.sleep(1)
    rss_after = {f"replica{i}": rss_kib(r) for i, r in enumerate(stack.replicas)}
    for replica in stack.replicas:
        replica.stop()
    lost = await records_lost(stack, samples)
    keys_left = [o for o in stack.token.list_objects() if o.label not in LONG_LIVED_LABELS]
    extra = {
        "capacity": cap,
        "rate": rate,
        "lost": lost,
        "keys_left": len(keys_left),
        "rss": {k: (rss_before[k], rss_after[k]) for k in rss_before},
    }
    report(stack, samples, start, extra)
    stuck = any(run.recovered is None for run in stack.faults)
    return 2 if lost or keys_left or stuck else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--share", type=float, default=0.5, help="share of measured capacity")
    p.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults")
    p.add_argument("--workers", type=int, default=1, help="server.workers per replica")
    p.add_argument("--concurrency", type=int, default=16, help="for the capacity probe")
    p.add_argument("--capacity-seconds", type=float, default=5.0)
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qes-soak-"))
    stack: Stack | None = None
    with start_idp(work / "idp") as idp:
        try:
            stack = build(work, args.workers, idp)
            stack.idp = idp
            stack.bearer = asyncio.run(idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"]))
            return asyncio.run(soak(args, stack))
        finally:
            if stack is not None:
                for replica in stack.replicas:
                    replica.kill(signal.SIGKILL)
                stack.hsm.kill()
                stack.pg.stop(mode="immediate")
                shutil.rmtree(stack.pg.data_dir, ignore_errors=True)
            if args.keep:
                print(f"work directory kept: {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
