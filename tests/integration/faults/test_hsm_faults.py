"""The HSM in another process (p11-kit server) killed, hung and restarted under a live Hsm.

Every hop has a deadline; a dead or hung HSM gives HsmUnavailable within it; the Hsm
reconnects by itself (re-initialising the client module, logging in again) or fails over to the
next member of its HA group; no ephemeral key outlives its request. An independent listing
(python-pkcs11 in another process, through the server) checks that the token holds only the
long-lived key afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from threading import Event

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from signer.errors import HsmUnavailable
from signer.keys import Hsm, HsmSession, HsmSettings
from signer.keys.session import EPHEMERAL_LABEL
from signer.secrets import Secret
from tests.support.p11kit import P11KitServer, token_copy
from tests.support.softhsm import SoftHsmToken

LONG_LIVED = "it-p11-long-lived"
DEADLINE = 2.0


@pytest.fixture
def token(tmp_path: Path) -> SoftHsmToken:
    return SoftHsmToken.create(tmp_path / "token", label="qes-p11")


@pytest.fixture
def server(token: SoftHsmToken, tmp_path: Path) -> Iterator[P11KitServer]:
    srv = P11KitServer.for_token(token, tmp_path, "a").start()
    try:
        yield srv
    finally:
        srv.kill()


def settings_for(token: SoftHsmToken, *servers: P11KitServer) -> HsmSettings:
    first, *rest = servers
    return HsmSettings(
        module=str(first.module),
        token_label=token.label,
        pin=Secret(token.pin),
        sessions=2,
        module_env=first.module_env,
        standbys=tuple(s.member() for s in rest),
        call_timeout_seconds=DEADLINE,
        reconnect_max_seconds=0.5,
    )


def sign_once(session: HsmSession) -> tuple[bytes, bytes]:
    """One request's key life in one hop: generate, sign, destroy (as the pipeline does)."""
    key = session.generate_ephemeral()
    digest = bytes(range(32))
    signature = key.private.sign_digest(digest)
    assert session.destroy(key).confirmed_absent
    return digest, signature


def verified(digest: bytes, der: bytes, public: ec.EllipticCurvePublicKey) -> None:
    """cryptography (an independent verifier) accepts the DER ECDSA signature."""
    public.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def leftovers(token: SoftHsmToken) -> list[str]:
    """Objects other than the long-lived key, listed by another process."""
    return [o.label or "<unlabelled>" for o in token.list_objects() if o.label != LONG_LIVED]


async def until_up(hsm: Hsm, limit: float = 30.0) -> float:
    """Seconds until a signing hop succeeds again (polling every 50 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            await hsm.run(sign_once)
            return time.monotonic() - start
        except HsmUnavailable:
            await asyncio.sleep(0.05)
    raise AssertionError(f"the HSM did not come back within {limit} s: {hsm.status()}")


def open_with_key(settings: HsmSettings) -> Hsm:
    hsm = Hsm.open(settings)
    if not hsm.run_sync(lambda s: s.has_token_key(LONG_LIVED)):
        hsm.run_sync(lambda s: s.create_token_key(LONG_LIVED, "P-256"))
    return hsm


@pytest.mark.timeout(120)
async def test_killed_hsm_fails_fast_and_comes_back_without_restart(
    token: SoftHsmToken, server: P11KitServer
) -> None:
    hsm = open_with_key(settings_for(token, server))
    try:
        assert await hsm.readiness(LONG_LIVED) == (True, "ok")
        await hsm.run(sign_once)
        server.kill()
        started = time.monotonic()
        with pytest.raises(HsmUnavailable):
            await hsm.run(sign_once)
        assert time.monotonic() - started < DEADLINE
        await asyncio.sleep(0.5)  # the recovery thread has probed by now
        ready, why = await hsm.readiness(LONG_LIVED)
        assert not ready and why.startswith("down for"), why
        with pytest.raises(HsmUnavailable, match="HSM unavailable"):  # fails at once while down
            await hsm.run(sign_once)

        server.start()
        recovered = await until_up(hsm)
        assert recovered < 10
        digest, raw = await hsm.run(sign_once)
        public = hsm.run_sync(lambda s: s.token_key(LONG_LIVED).public_key())
        signed = hsm.run_sync(lambda s: s.token_key(LONG_LIVED).sign_digest(digest))
        verified(digest, signed, public)
        assert raw
        assert await hsm.readiness(LONG_LIVED) == (True, "ok")
        assert hsm.stats.outages == 1 and hsm.stats.reconnects == 1
        assert hsm.live_ephemeral_keys() == 0
    finally:
        hsm.close()
    assert leftovers(token) == []


@pytest.mark.timeout(120)
async def test_hung_hsm_answers_within_the_deadline_and_the_key_dies_on_resume(
    token: SoftHsmToken, server: P11KitServer
) -> None:
    """A key generated just before the HSM hangs: its request gets HsmUnavailable at the
    deadline; the hop stays blocked in the HSM; when the HSM resumes, the hop runs to its end
    and destroys the key itself (its result is dropped), and the Hsm is usable again."""
    hsm = open_with_key(settings_for(token, server))
    generated, go_on, finished = Event(), Event(), Event()

    def hop(session: HsmSession) -> None:
        key = session.generate_ephemeral()
        generated.set()
        go_on.wait(10)
        try:
            key.private.sign_digest(bytes(32))  # blocks in the hung HSM
        finally:
            session.destroy(key)
            finished.set()

    try:
        task = asyncio.create_task(hsm.run(hop))
        assert await asyncio.to_thread(generated.wait, 10)
        assert hsm.live_ephemeral_keys() == 1
        server.hang()
        go_on.set()
        started = time.monotonic()
        with pytest.raises(HsmUnavailable, match="did not answer within"):
            await task
        waited = time.monotonic() - started
        assert DEADLINE - 0.2 < waited < DEADLINE + 1.0, waited
        ready, why = await hsm.readiness(LONG_LIVED)
        assert not ready, why
        started = time.monotonic()
        with pytest.raises(HsmUnavailable):  # no request hangs past its deadline meanwhile
            await hsm.run(sign_once)
        assert time.monotonic() - started < DEADLINE + 0.5
        assert not finished.is_set() and hsm.live_ephemeral_keys() == 1  # still blocked

        server.resume()
        assert await asyncio.to_thread(finished.wait, 10), "the hop did not finish on resume"
        await until_up(hsm)
        assert hsm.live_ephemeral_keys() == 0
        seen = hsm.run_sync(lambda s: s.object_summary())  # session objects of this process too
        assert [o for o in seen if o[0] == EPHEMERAL_LABEL] == []
        assert await hsm.readiness(LONG_LIVED) == (True, "ok")
    finally:
        server.resume()
        hsm.close()
    assert leftovers(token) == []


@pytest.mark.timeout(120)
async def test_hung_then_killed_hsm_is_reconnected_and_its_keys_are_gone(
    token: SoftHsmToken, server: P11KitServer
) -> None:
    """Hung, then killed instead of resumed: the stuck hop fails, the module is
    re-initialised, and the key made before the hang died with the HSM process."""
    hsm = open_with_key(settings_for(token, server))
    generated = Event()

    def hop(session: HsmSession) -> None:
        session.generate_ephemeral()
        generated.set()
        session.token_key(LONG_LIVED).sign_digest(bytes(32))  # hangs; key never destroyed here
        raise AssertionError("unreachable: the HSM hung before this")

    try:
        server.hang()
        task = asyncio.create_task(hsm.run(hop))
        await asyncio.sleep(0.3)
        with pytest.raises(HsmUnavailable):
            await task
        server.kill()
        server.start()
        await until_up(hsm)
        for _ in range(100):  # the stuck hop's link is closed once the hop has failed
            if hsm.live_ephemeral_keys() == 0:
                break
            await asyncio.sleep(0.05)
        assert hsm.live_ephemeral_keys() == 0
        assert hsm.stats.reconnects >= 1
    finally:
        hsm.close()
    assert leftovers(token) == []


@pytest.mark.timeout(180)
async def test_ha_group_fails_over_to_the_standby_and_back(
    token: SoftHsmToken, server: P11KitServer, tmp_path: Path
) -> None:
    """Two p11-kit servers over two copies of one token (the same long-lived key): the Hsm
    moves to the standby when the first dies, and back when the standby hangs."""
    setup = Hsm.open(settings_for(token, server))
    setup.run_sync(lambda s: s.create_token_key(LONG_LIVED, "P-256"))
    setup.close()
    twin = token_copy(token, tmp_path / "twin")
    standby = P11KitServer.for_token(twin, tmp_path, "b").start()
    hsm = Hsm.open(settings_for(token, server, standby))
    try:
        public = hsm.run_sync(lambda s: s.token_key(LONG_LIVED).public_key())
        await hsm.run(sign_once)
        assert hsm.status()["member"] == server.member().describe()

        server.kill()
        with pytest.raises(HsmUnavailable):
            await hsm.run(sign_once)
        failover = await until_up(hsm)
        assert hsm.status()["member"] == standby.member().describe()
        assert hsm.stats.failovers == 1
        digest = bytes(range(32))
        raw = await hsm.run(lambda s: s.token_key(LONG_LIVED).sign_digest(digest))
        verified(digest, raw, public)  # the standby holds the same long-lived key

        server.start()
        standby.hang()
        with pytest.raises(HsmUnavailable, match="did not answer within"):
            await hsm.run(sign_once)
        back = await until_up(hsm)
        assert hsm.status()["member"] == server.member().describe()
        assert hsm.stats.failovers == 2
        standby.resume()
        assert failover < 10 and back < 10, (failover, back)
        assert hsm.live_ephemeral_keys() == 0
    finally:
        standby.resume()
        hsm.close()
        standby.kill()
    assert leftovers(token) == []
    assert leftovers(twin) == []


@pytest.mark.timeout(300)
async def test_hsm_killed_under_many_concurrent_hops_never_wedges_its_client(
    token: SoftHsmToken, server: P11KitServer
) -> None:
    """p11-kit's RPC client multiplexes every thread's calls over one socket; when its server
    died while several calls waited for their replies, some of those threads were never woken
    (seen in the soak bench: a replica that never signed again). Calls into it are made one at
    a time now (signer.keys._module.SERIALIZED_MODULE_PREFIXES): through repeated deaths and
    hangs under twelve concurrent requests, every hop returns and signing comes back each time."""
    import dataclasses

    settings = dataclasses.replace(settings_for(token, server), sessions=4)
    hsm = await asyncio.to_thread(open_with_key, settings)
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            try:
                await hsm.run(sign_once)
            except HsmUnavailable:
                await asyncio.sleep(0.02)

    clients = [asyncio.create_task(client()) for _ in range(12)]
    back: list[float] = []
    try:
        for fault in range(8):
            await asyncio.sleep(1.0)
            if fault % 2 == 0:
                server.kill()
                await asyncio.sleep(DEADLINE + 1)
                server.start()
            else:
                server.hang()
                await asyncio.sleep(DEADLINE + 1)
                server.resume()
            back.append(await until_up(hsm, limit=20.0))
    finally:
        stop.set()
        server.resume()
        await asyncio.wait(clients, timeout=30)
        hsm.close()
    print(f"seconds to sign again after each fault: {[round(b, 2) for b in back]}")
    assert all(task.done() for task in clients), "a request still hangs in the HSM client"
    assert leftovers(token) == []
