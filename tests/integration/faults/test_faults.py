"""Fault tests: the database stopped under load, and the service killed with SIGKILL.

Fail closed (DESIGN.md): no signature leaves without its completed record; keys die with their
session; a crash between "issued" and "completed" leaves a visibly incomplete record.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from signer.cli.localdb import LocalPostgres
from signer.keys.session import EPHEMERAL_LABEL
from signer.storage.db import migrate
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.pg import private_cluster_dir
from tests.support.service import SignerProcess, api_headers, free_port, service_env
from tests.support.softhsm import SoftHsmToken

BODY = {
    "hash_algorithm": "sha256",
    "hashes": [base64.b64encode(hashlib.sha256(b"fault").digest()).decode()],
}


@pytest.fixture
def private_pg() -> Iterator[LocalPostgres]:
    cluster = LocalPostgres(private_cluster_dir())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")


async def post(session: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
    try:
        async with session.post(
            f"{url}/api/v1/signatures", json=BODY, headers=api_headers(token)
        ) as resp:
            return resp.status, await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return -1, repr(exc)


async def sign_then_sigkill(
    signer: SignerProcess, token: str, *, signed: int
) -> list[tuple[int, Any]]:
    """16 clients sign back to back; once ``signed`` signatures are in, the whole process group
    is SIGKILLed mid-flow. Returns every client's results (the last ones are -1)."""
    done: list[tuple[int, Any]] = []
    enough = asyncio.Event()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:

            async def worker() -> None:
                for _ in range(200):
                    result = await post(session, signer.url, token)
                    done.append(result)
                    if sum(1 for c, _ in done if c == 201) >= signed:
                        enough.set()
                    if result[0] == -1:
                        return

            workers = [asyncio.create_task(worker()) for _ in range(16)]
            await asyncio.wait_for(enough.wait(), 60)
            os.killpg(signer.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
            await asyncio.gather(*workers)
    finally:
        signer.kill()
    return done


async def statuses(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT serial, status FROM signing_records")
    finally:
        await conn.close()
    return {r["serial"]: r["status"] for r in rows}


async def copy_ca_certificates(source: str, target: str, labels: tuple[str, ...]) -> None:
    """The session's CA (keys in the test token) made known to another database."""
    src, dst = await asyncpg.connect(source), await asyncpg.connect(target)
    try:
        await migrate(dst)
        async with dst.transaction():
            rows = await src.fetch(
                "SELECT * FROM ca_certificates WHERE label = ANY($1)", list(labels)
            )
            for row in rows:
                await dst.execute("INSERT INTO ca_certificates VALUES ($1, $2, $3)", *row)
    finally:
        await src.close()
        await dst.close()


async def test_database_stopped_under_load(
    aiohttp_client: Any,
    settings: Any,
    ca_ready: None,
    database_url: str,
    private_pg: LocalPostgres,
    batch_token: str,
) -> None:
    from signer.app import create_app
    from signer.http.kit.state import SERVICES
    from signer.secrets import Secret

    db = dataclasses.replace(settings.database, url=Secret(private_pg.url()), command_timeout=2)
    own = dataclasses.replace(settings, database=db)
    await copy_ca_certificates(
        database_url,
        private_pg.url(),
        (settings.ca.root_label, settings.ca.issuing_label, settings.tsa.label),
    )
    app = create_app(own)
    client = await aiohttp_client(app)

    def headers() -> dict[str, str]:  # each request its own signing operation
        return api_headers(batch_token)

    assert (await client.post("/api/v1/signatures", json=BODY, headers=headers())).status == 201

    stopped = asyncio.Event()

    async def client_loop() -> list[tuple[int, Any, bool]]:
        """Sends requests back to back until one sent after the stop has returned."""
        seen: list[tuple[int, Any, bool]] = []
        while True:
            sent_before_stop = not stopped.is_set()
            resp = await client.post("/api/v1/signatures", json=BODY, headers=headers())
            seen.append((resp.status, await resp.json(content_type=None), sent_before_stop))
            if not sent_before_stop:
                return seen

    loops = [asyncio.create_task(client_loop()) for _ in range(8)]
    await asyncio.sleep(0.3)
    await asyncio.to_thread(private_pg.stop, "immediate")
    stopped.set()
    seen = [item for loop in await asyncio.gather(*loops) for item in loop]
    results = [(code, payload) for code, payload, _ in seen]
    in_flight = [code for code, _, sent_before_stop in seen if sent_before_stop]
    codes = [code for code, _ in results]
    assert set(codes) <= {201, 503}, codes
    assert 503 in in_flight, "no request in flight during the stop failed; the test proved nothing"
    for code, payload in results:
        if code == 503:
            assert payload["type"] == "/problems/database-unavailable"
            assert "signatures" not in payload
    after_stop = await client.post("/api/v1/signatures", json=BODY, headers=headers())
    assert after_stop.status == 503
    ready = await client.get("/readyz")
    assert ready.status == 503 and (await ready.json())["checks"]["database"] == "unavailable"
    assert app[SERVICES].hsm.live_ephemeral_keys() == 0, "a key outlived its failed request"

    await asyncio.to_thread(private_pg.start)
    recorded = await statuses(private_pg.url())
    for code, payload in results:
        if code == 201:
            assert recorded[payload["serial"]] == "completed", "signature released unrecorded"
    assert set(recorded.values()) <= {"completed", "issued", "failed"}
    assert (await client.post("/api/v1/signatures", json=BODY, headers=headers())).status == 201


@pytest.mark.timeout(240)
async def test_sigkill_under_load_leaves_no_key_and_honest_records(
    signer_for: Callable[..., SignerProcess],
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    ca_ready: None,
    tmp_path: Path,
) -> None:
    signer = signer_for(QES__SERVER__WORKERS="2").start()
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    done = await sign_then_sigkill(signer, token, signed=40)

    leftovers = [o for o in softhsm_token.list_objects() if o.label in ("", EPHEMERAL_LABEL)]
    assert leftovers == [], leftovers
    recorded = await statuses(database_url)
    released = [payload["serial"] for code, payload in done if code == 201]
    assert released and all(recorded[s] == "completed" for s in released)
    assert set(recorded.values()) <= {"completed", "issued", "failed"}

    again = SignerProcess(signer.env, signer.port, tmp_path / "signer2.log").start()
    try:
        async with aiohttp.ClientSession() as session:
            code, _ = await post(session, again.url, token)
        assert code == 201
    finally:
        again.stop()
    assert [o for o in softhsm_token.list_objects() if o.label in ("", EPHEMERAL_LABEL)] == []


@pytest.mark.timeout(120)
async def test_sigterm_finishes_in_flight_requests(
    softhsm_token: SoftHsmToken, database_url: str, idp: RunningIdp, ca_ready: None, tmp_path: Path
) -> None:
    """Graceful shutdown: every request the server accepted is answered (201, or a clean
    problem), none is cut off with a half-made record, and the process exits 0."""
    port = free_port()
    env = service_env(
        token=softhsm_token, database_url=database_url, idp=idp, port=port, data_dir=tmp_path
    )
    signer = SignerProcess(env, port, tmp_path / "signer.log").start()
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    loop = asyncio.get_running_loop()
    finished: dict[int, float] = {}

    async def timed(n: int) -> tuple[int, Any]:
        result = await post(session, signer.url, token)
        finished[n] = loop.time()
        return result

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        # Open the connections first, so that the burst below is on the server at once
        # (a fixed sleep raced connection setup on a loaded machine).
        warm = await asyncio.gather(*(post(session, signer.url, token) for _ in range(24)))
        assert {code for code, _ in warm} == {201}, warm
        in_flight = [asyncio.create_task(timed(n)) for n in range(24)]
        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        signer.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        stopped_at = loop.time()
        results = await asyncio.gather(*in_flight)
    assert signer.proc.wait(30) == 0  # type: ignore[union-attr]
    codes = [code for code, _ in results]
    after_stop = [code for n, (code, _) in enumerate(results) if finished[n] > stopped_at]
    assert 201 in after_stop, f"no request in flight at SIGTERM was finished: {codes}"
    # accepted requests complete; connections opened after the listener closed are refused
    assert set(codes) <= {201, 503, -1}, codes
    recorded = await statuses(database_url)
    for code, payload in results:
        if code == 201:
            assert recorded[payload["serial"]] == "completed"
    assert "issued" not in {recorded[p["serial"]] for c, p in results if c == 201}
    leftovers = [o for o in softhsm_token.list_objects() if o.label in ("", EPHEMERAL_LABEL)]
    assert leftovers == []


@pytest.mark.timeout(120)
async def test_group_sigterm_stops_a_multi_worker_signer_cleanly(
    signer_for: Callable[..., SignerProcess], ca_ready: None
) -> None:
    """SIGTERM to the process group reaches each worker twice (directly and forwarded by the
    supervisor); shutdown must still happen once, promptly, with exit code 0. The signal comes
    at different moments of the start too (workers forking, opening the HSM and the pool,
    binding): a stop noted while starting must never be lost."""
    for attempt, after in enumerate((None, None, 0.4, 1.2)):
        signer = signer_for(log=f"signer{attempt}.log", QES__SERVER__WORKERS="2")
        if after is None:
            signer.start()
        else:
            signer.spawn()
            await asyncio.sleep(after)
        os.killpg(signer.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        code = signer.proc.wait(30)  # type: ignore[union-attr]
        # Before the interpreter has run cmd_serve, SIGTERM ends the process by its default
        # action; systemd and Kubernetes count that as a clean stop too. Never anything else.
        clean = (0,) if after is None else (0, -signal.SIGTERM)
        assert code in clean, signer.log.read_text()[-2000:]


def _workers(supervisor: int) -> set[int]:
    """The live child processes of ``supervisor`` (its workers)."""
    found = subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()}


def _age(pid: int) -> float:
    """Seconds since process ``pid`` started."""
    found = subprocess.run(["ps", "-o", "etimes=", "-p", str(pid)], capture_output=True, text=True)
    return float(found.stdout.strip())


@pytest.mark.timeout(180)
async def test_a_worker_killed_while_serving_is_replaced(
    signer_for: Callable[..., SignerProcess], idp: RunningIdp, ca_ready: None
) -> None:
    """The OOM killer ends one worker of two: the supervisor starts another (the service keeps
    its capacity and signs), and the group still stops cleanly (exit 0) afterwards."""
    from signer.cli.supervisor import START_GRACE_SECONDS

    signer = signer_for(QES__SERVER__WORKERS="2").start()
    assert signer.proc is not None
    before = _workers(signer.proc.pid)
    assert len(before) == 2
    victim = min(before)
    await asyncio.sleep(max(0.0, START_GRACE_SECONDS + 1 - _age(victim)))  # served, not started
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _workers(signer.proc.pid)
        if len(now) == 2 and victim not in now and signer.ready():
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(
            f"no replacement for worker {victim}: {signer.log.read_text()[-2000:]}"
        )
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(4):  # a connection each: SO_REUSEPORT spreads them over both workers
            assert (await post(session, signer.url, token))[0] == 201
    assert '"event": "worker_died"' in signer.log.read_text()
    os.killpg(signer.proc.pid, signal.SIGTERM)
    assert signer.proc.wait(30) == 0, signer.log.read_text()[-2000:]


@pytest.mark.timeout(120)
async def test_workers_that_cannot_start_end_the_service_with_their_code(
    signer_for: Callable[..., SignerProcess], ca_ready: None
) -> None:
    """A wrong PIN fails every worker's start: no endless restarts, the supervisor exits 1 at
    once (systemd and Kubernetes restart with their own backoff) and names the cause."""
    signer = signer_for(QES__SERVER__WORKERS="2", QES_HSM_PIN="0000-wrong").spawn()
    assert signer.proc is not None
    assert signer.proc.wait(60) == 1
    log = signer.log.read_text()
    assert "PIN incorrect" in log, log[-2000:]
    assert '"event": "worker_start_failed"' in log, log[-2000:]
