"""Two replicas behind a real load balancer (issue 13, item 7): HAProxy (Debian's 2.6) with
health checks on /readyz in front of two `qes serve` processes on one PostgreSQL. Concurrent
clients sign batches through it while one replica is killed with SIGKILL: every request ends
with 201 and a completed record, after clean retryable answers only (a 5xx from the balancer or
the service, or 409 idempotency-key-in-progress while the dead replica's claim ages out), the
retry with the same Idempotency-Key gets the same result or a fresh complete one, no record is
lost, the ones the dead replica left half-done are visible as 'issued', and the token holds no
ephemeral key. A web-signing flow whose steps alternate between the replicas works through
the balancer too."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from tests.support.idp import DEMO_CLIENTS, DEMO_SECRETS, RunningIdp, start_idp, with_redirect_uri
from tests.support.prod import ephemeral_keys
from tests.support.service import SignerProcess, free_port, service_env
from tests.support.softhsm import SoftHsmToken
from tests.support.webflow import sign_across

CLIENTS = 6
REQUESTS = 48
KILL_AFTER = 12  # completed requests before replica A dies
ABANDON_SECONDS = 6  # server.idempotency_abandon_seconds: how long A's claims block a retry
RETRYABLE = {502, 503, 504}


@dataclass
class Balanced:
    a: SignerProcess
    b: SignerProcess
    url: str
    idp: RunningIdp
    env: dict[str, str]
    haproxy: subprocess.Popen[bytes]
    log: Path


HAPROXY_CFG = """
global
    maxconn 256
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 2s
    retries 2
    option redispatch
frontend signers
    bind 127.0.0.1:{lb}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 300ms fall 2 rise 2
    server a 127.0.0.1:{a} check
    server b 127.0.0.1:{b} check
"""


@pytest.fixture(scope="module")
def balanced(
    softhsm_token: SoftHsmToken,
    database_url: str,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Balanced]:
    work = tmp_path_factory.mktemp("haproxy")
    lb, port_a, port_b = free_port(), free_port(), free_port()
    public = f"http://127.0.0.1:{lb}"
    clients = with_redirect_uri(DEMO_CLIENTS, "demo-signer-web", f"{public}/sign/callback")
    with start_idp(work / "idp", clients=clients) as idp:
        envs = [
            service_env(
                token=softhsm_token, database_url=database_url, idp=idp, port=port,
                data_dir=work, QES__SERVER__PUBLIC_URL=public,
                QES__SERVER__ACCESS_LOG="true",
                QES__SERVER__IDEMPOTENCY_ABANDON_SECONDS=str(ABANDON_SECONDS),
                QES__WEB_SIGNING__CLIENT_ID="demo-signer-web",
                QES__WEB_SIGNING__ISSUER="demo_people",
                QES_WEB_SIGNING_CLIENT_SECRET=DEMO_SECRETS["demo-signer-web"],
            )
            for port in (port_a, port_b)
        ]  # fmt: skip
        a = SignerProcess(envs[0], port_a, work / "a.log").start()
        b = SignerProcess(envs[1], port_b, work / "b.log").start()
        config = work / "haproxy.cfg"
        config.write_text(HAPROXY_CFG.format(lb=lb, a=port_a, b=port_b))
        log = work / "haproxy.log"
        with log.open("wb") as out:
            haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=out,
                                       stderr=out)  # fmt: skip
        try:
            _wait_both_up(public, haproxy, log)
            yield Balanced(a, b, public, idp, envs[0], haproxy, log)
        finally:
            haproxy.terminate()
            haproxy.wait(30)
            b.stop()
            a.stop()


def _wait_both_up(url: str, haproxy: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    ok = 0
    while time.monotonic() < deadline and ok < 4:  # 4 in a row: both servers answered
        assert haproxy.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:  # noqa: S310
                ok = ok + 1 if r.status == 200 else 0
        except OSError:
            ok = 0
        time.sleep(0.3)
    assert ok >= 4, log.read_text()


@dataclass
class Outcome:
    key: str
    digest: bytes
    attempts: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None


async def _attempt(http: aiohttp.ClientSession, url: str, token: str, o: Outcome) -> bool:
    """One try; True when it got its 201. Anything but a clean retryable answer fails."""
    body = {"hash_algorithm": "sha256", "hashes": [base64.b64encode(o.digest).decode()]}
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": o.key}
    try:
        async with http.post(f"{url}/api/v1/signatures", json=body, headers=headers) as r:
            text = await r.text()
            replayed = r.status == 200 and r.headers.get("Idempotent-Replayed") == "true"
            if r.status == 201 or replayed:  # a replay: the first run's stored response
                o.attempts.append(str(r.status))
                o.result = json.loads(text)
                return True
            problem = json.loads(text).get("type", "") if "json" in r.content_type else ""
    except (TimeoutError, aiohttp.ClientConnectionError) as exc:
        raise AssertionError(f"no clean answer ({type(exc).__name__}): {o.attempts}") from exc
    o.attempts.append(f"{r.status} {problem}".strip())
    in_progress = r.status == 409 and problem == "/problems/idempotency-key-in-progress"
    assert r.status in RETRYABLE or in_progress, f"not a clean retryable answer: {o.attempts}"
    return False


async def _client(
    http: aiohttp.ClientSession, url: str, token: str, queue: asyncio.Queue[Outcome],
    done: list[Outcome], killed: asyncio.Event,
) -> None:  # fmt: skip
    while not queue.empty():
        o = queue.get_nowait()
        deadline = time.monotonic() + 3 * ABANDON_SECONDS + 30
        while not await _attempt(http, url, token, o):
            assert time.monotonic() < deadline, f"{o.key} never completed: {o.attempts}"
            await asyncio.sleep(0.3)
        done.append(o)
        if len(done) >= KILL_AFTER:
            killed.set()


def _verify(result: dict[str, Any], digest: bytes) -> None:
    """The result is complete: a certificate and a signature over our digest (cryptography)."""
    leaf = x509.load_pem_x509_certificate(result["certificate"].encode())
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    signature = base64.b64decode(result["signatures"][0])
    key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


async def test_replica_killed_mid_load_loses_nothing(
    balanced: Balanced, database_url: str, softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    token = await balanced.idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    started = datetime.now(UTC)
    queue: asyncio.Queue[Outcome] = asyncio.Queue()
    for _ in range(REQUESTS):
        queue.put_nowait(Outcome(str(uuid.uuid4()), os.urandom(32)))
    done: list[Outcome] = []
    killed = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=60)
    # A connection per request. (On a reused keep-alive connection HAProxy answers a request its
    # dead server never answered by closing the connection instead of a 502, so that the client
    # retries, RFC 9112 §9.3.1: a client that keeps connections open must treat that like a
    # 5xx and retry with the same key.)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        workers = [asyncio.create_task(_client(http, balanced.url, token, queue, done, killed))
                   for _ in range(CLIENTS)]  # fmt: skip
        await asyncio.wait_for(killed.wait(), 120)
        balanced.a.kill(signal.SIGKILL)  # mid-load: requests are in flight on A
        await asyncio.gather(*workers)
        # A retry after the fact, with each key: the same result, every time.
        for o in done[:5]:
            again = Outcome(o.key, o.digest)
            assert await _attempt(http, balanced.url, token, again)
            assert again.result is not None and o.result is not None
            assert again.result["serial"] == o.result["serial"]

    assert len(done) == REQUESTS
    interrupted = [o for o in done if len(o.attempts) > 1]
    print(f"{len(interrupted)} requests retried: {[o.attempts for o in interrupted]}")
    assert interrupted, "the kill interrupted nothing: the test proved nothing"
    for o in done:
        assert o.result is not None
        _verify(o.result, o.digest)
    serials = {o.result["serial"] for o in done if o.result}
    assert len(serials) == REQUESTS  # one signature per logical request

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT serial, status, completed_at FROM signing_records WHERE created_at >= $1",
            started,
        )
        keys = await conn.fetch(
            "SELECT key, response IS NOT NULL AS answered FROM idempotency_keys"
            " WHERE key = ANY($1::text[])",
            [o.key for o in done],
        )
    finally:
        await conn.close()
    status = {r["serial"]: r["status"] for r in rows}
    # Every result a client got is a completed record; every completed record went to a client.
    assert all(status.get(s) == "completed" for s in serials)
    assert {s for s, st in status.items() if st == "completed"} == serials
    # What A left half-done is visible as such: issued, never completed, no signature released.
    half_done = [s for s, st in status.items() if st != "completed"]
    assert all(status[s] in ("issued", "failed") for s in half_done)
    assert len(half_done) <= CLIENTS
    assert len(keys) == REQUESTS and all(k["answered"] for k in keys)
    # The token: no ephemeral key (A's session objects died with it; B is stopped meanwhile).
    balanced.b.stop()
    try:
        assert ephemeral_keys(softhsm_token) == []
    finally:
        balanced.b.start()


async def test_web_signing_alternates_replicas_through_the_balancer(
    balanced: Balanced, tmp_path: Path
) -> None:
    if balanced.a.proc is not None and balanced.a.proc.poll() is not None:
        balanced.a.start()  # the kill test ran first
        _wait_both_up(balanced.url, balanced.haproxy, balanced.log)
    marks = [p.log.stat().st_size for p in (balanced.a, balanced.b)]
    await sign_across(balanced.url, balanced.url, balanced.idp, balanced.env, tmp_path)
    # Round robin: the flow's steps were served by both replicas.
    for process, mark in zip((balanced.a, balanced.b), marks, strict=True):
        with process.log.open("rb") as f:
            f.seek(mark)
            lines = [json.loads(x) for x in f.read().decode().splitlines() if x.startswith("{")]
        routes = {x["route"] for x in lines if x.get("event") == "access"}
        assert any(r.startswith("/sign/") for r in routes), routes
