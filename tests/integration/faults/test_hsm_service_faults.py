"""`qes serve` whose HSM (SoftHSM2 behind p11-kit server) is killed, hung and brought back
under load: every refusal is 503 problem+json ``hsm-unavailable`` within the deadline,
/readyz turns 503 with the reason, signing resumes without a restart, no signature leaves
without its completed record, and the token holds only the long-lived keys afterwards."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signer.keys.session import EPHEMERAL_LABEL
from tests.integration.faults.test_faults import BODY, statuses
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.p11kit import P11KitServer
from tests.support.service import SignerProcess, api_headers
from tests.support.softhsm import SoftHsmToken

DEADLINE = 2.0


@pytest.fixture
def hsm_server(
    softhsm_token: SoftHsmToken, ca_ready: None, tmp_path: Path
) -> Iterator[P11KitServer]:
    server = P11KitServer.for_token(softhsm_token, tmp_path, "hsm").start()
    try:
        yield server
    finally:
        server.kill()


async def timed_post(
    session: aiohttp.ClientSession, url: str, token: str
) -> tuple[int, Any, float]:
    started = time.monotonic()
    try:
        async with session.post(
            f"{url}/api/v1/signatures", json=BODY, headers=api_headers(token)
        ) as resp:
            body = await resp.json(content_type=None)
            return resp.status, (body, resp.content_type), time.monotonic() - started
    except (TimeoutError, aiohttp.ClientError) as exc:
        return -1, repr(exc), time.monotonic() - started


async def readyz(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(f"{url}/readyz") as resp:
        return resp.status, await resp.json()


async def load(
    session: aiohttp.ClientSession, url: str, token: str, stop: asyncio.Event
) -> list[tuple[int, Any, float, float]]:
    """Back-to-back requests until ``stop``; (status, body, seconds, sent at)."""
    seen = []
    while not stop.is_set():
        sent = time.monotonic()
        code, body, took = await timed_post(session, url, token)
        seen.append((code, body, took, sent))
        if code != 201:
            await asyncio.sleep(0.02)
    return seen


def check_refusals(results: list[tuple[int, Any, float, float]]) -> None:
    for code, body, took, _ in results:
        assert code in (201, 503), (code, body)
        assert took < DEADLINE + 1.5, f"a request took {took:.2f} s (deadline {DEADLINE} s)"
        if code == 503:
            payload, content_type = body
            assert content_type == "application/problem+json"
            assert payload["type"] == "/problems/hsm-unavailable", payload
            assert "signatures" not in payload


@pytest.mark.timeout(240)
async def test_hsm_killed_and_hung_under_load_recovers_without_restart(
    signer_for: Callable[..., SignerProcess],
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    hsm_server: P11KitServer,
) -> None:
    signer = signer_for(
        QES__HSM__CALL_TIMEOUT_SECONDS=str(DEADLINE),
        QES__HSM__RECONNECT_MAX_SECONDS="0.5",
        QES__HSM__SESSIONS="2",
        **hsm_server.env_overrides(),
    ).start()
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    recoveries: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for fault in ("kill", "hang"):
                stop = asyncio.Event()
                loads = [
                    asyncio.create_task(load(session, signer.url, token, stop)) for _ in range(6)
                ]
                await asyncio.sleep(1.0)
                if fault == "kill":
                    hsm_server.kill()
                else:
                    hsm_server.hang()
                faulted = time.monotonic()
                await asyncio.sleep(DEADLINE + 1.5)
                code, ready = await readyz(session, signer.url)
                assert code == 503 and ready["checks"]["hsm"] == "unavailable", ready
                assert ready["reasons"]["hsm"], ready
                if fault == "kill":
                    hsm_server.start()
                else:
                    hsm_server.resume()
                back = time.monotonic()
                while (await timed_post(session, signer.url, token))[0] != 201:
                    assert time.monotonic() - back < 20, "signing did not resume"
                    await asyncio.sleep(0.05)
                recoveries[fault] = time.monotonic() - back
                stop.set()
                results = [r for task in loads for r in await task]
                check_refusals(results)
                during = [c for c, _, _, sent in results if faulted + 0.1 < sent < back]
                assert during and set(during) == {503}, during
                assert (await readyz(session, signer.url))[0] == 200
                recorded = await statuses(database_url)
                for _code, (payload, _), _, _ in (r for r in results if r[0] == 201):
                    assert recorded[payload["serial"]] == "completed"
    finally:
        signer.stop()
    print(f"time to sign again after the HSM returned: {recoveries}")
    leftovers = [o for o in softhsm_token.list_objects() if o.label in ("", EPHEMERAL_LABEL)]
    assert leftovers == []


@pytest.mark.timeout(120)
async def test_sigterm_ends_the_service_by_its_deadline_while_the_hsm_hangs(
    signer_for: Callable[..., SignerProcess],
    softhsm_token: SoftHsmToken,
    idp: RunningIdp,
    hsm_server: P11KitServer,
    tmp_path: Path,
) -> None:
    """A call stuck in a hung HSM cannot be interrupted and the interpreter joins its worker
    threads at exit: the stop deadline (server.shutdown_timeout + STOP_GRACE_SECONDS) ends the
    process anyway, says so in the log, and the signature in flight was never released."""
    from signer.cli.service import STOP_FORCED_EXIT, STOP_GRACE_SECONDS

    shutdown_timeout = 2.0
    signer = signer_for(
        QES__HSM__CALL_TIMEOUT_SECONDS=str(DEADLINE),
        QES__SERVER__SHUTDOWN_TIMEOUT=str(shutdown_timeout),
        **hsm_server.env_overrides(),
    ).start()
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        assert (await timed_post(session, signer.url, token))[0] == 201
        hsm_server.hang()  # and it never comes back while the service stops
        stuck = await timed_post(session, signer.url, token)
    assert stuck[0] == 503, stuck
    assert signer.proc is not None
    stopping = time.monotonic()
    signer.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(signer.proc.wait, 60)
    took = time.monotonic() - stopping
    hsm_server.resume()
    log = (tmp_path / "signer.log").read_text()
    assert code == STOP_FORCED_EXIT, log[-2000:]
    assert took < shutdown_timeout + STOP_GRACE_SECONDS + 5, took
    (forced,) = [json.loads(x) for x in log.splitlines() if '"event": "stop_forced"' in x]
    # where the stop waited: an HSM worker thread inside its PKCS#11 call
    hsm_threads = [f for name, f in forced["stacks"].items() if name.startswith("hsm")]
    assert any("link.py" in " ".join(f) for f in hsm_threads), forced["stacks"]
    leftovers = [o for o in softhsm_token.list_objects() if o.label in ("", EPHEMERAL_LABEL)]
    assert leftovers == []
