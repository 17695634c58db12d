"""Concurrency (the OS-locking fix), event-loop responsiveness, and death by SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from signer.keys import Hsm, HsmSession
from tests.support.softhsm import SoftHsmToken

TASKS = 8
ITERATIONS = 150
DIGEST = bytes(range(32))
PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


def _cycle(s: HsmSession) -> tuple[ec.EllipticCurvePublicKey, bytes, bool]:
    key = s.generate_ephemeral()
    sig = key.private.sign_digest(DIGEST)
    ca_sig = s.token_key("it-hsm-p256").sign_digest(DIGEST)
    s.token_key("it-hsm-p256").public_key().verify(ca_sig, DIGEST, PREHASHED)
    return key.private.public_key(), sig, s.destroy(key).confirmed_absent


async def test_eight_tasks_on_four_sessions_keep_the_loop_responsive(hsm: Hsm) -> None:
    """8 concurrent tasks x ITERATIONS keygen+sign+destroy on 4 sessions: without
    CKF_OS_LOCKING_OK SoftHSM segfaults here within a second (STANDARDS.md §8)."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def worker() -> int:
        done = 0
        for _ in range(ITERATIONS):
            public, sig, absent = await hsm.run(_cycle)
            public.verify(sig, DIGEST, PREHASHED)
            assert absent
            done += 1
        return done

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    results = await asyncio.gather(*(worker() for _ in range(TASKS)))
    elapsed = time.perf_counter() - started
    stop.set()
    await tick
    assert results == [ITERATIONS] * TASKS
    assert hsm.live_ephemeral_keys() == 0
    assert not [o for o in hsm.run_sync(lambda s: s.object_summary()) if not o[2]]
    # The loop kept ticking: many ticks, none stalled behind HSM work.
    assert len(gaps) >= elapsed / 0.05, (len(gaps), elapsed)
    assert max(gaps) < 0.25, max(gaps)


_CHILD = """
import sys, time
from signer.keys import Hsm, HsmSettings
from signer.secrets import Secret
import os
hsm = Hsm.open(HsmSettings(module=sys.argv[1], token_label=sys.argv[2],
                           pin=Secret(os.environ["QES_TEST_PIN"]), sessions=2))
hsm.run_sync(lambda s: s.create_token_key("it-sigkill-witness", "P-256", replace=True))
keys = [hsm.run_sync(lambda s: s.generate_ephemeral()) for _ in range(20)]
seen = hsm.run_sync(lambda s: s.object_summary())
print("ephemeral-visible", sum(1 for o in seen if not o[2]), flush=True)
print("ids", " ".join(k.key_id.hex() for k in keys), flush=True)
print("ready", flush=True)
time.sleep(120)
"""


def test_sigkill_leaves_only_long_lived_keys(
    hsm: Hsm, softhsm_token: SoftHsmToken, long_lived: dict[str, str]
) -> None:
    child = softhsm_token.python(
        _CHILD,
        softhsm_token.module,
        softhsm_token.label,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: dict[str, str] = {}
    try:
        assert child.stdout is not None
        for line in child.stdout:
            name, _, rest = line.strip().partition(" ")
            lines[name] = rest
            if name == "ready":
                break
        assert "ready" in lines, child.stderr.read() if child.stderr else ""
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert lines["ephemeral-visible"] == "40"  # the child really held 20 key pairs
    child_ids = set(lines["ids"].split())
    assert len(child_ids) == 20

    objects = softhsm_token.list_objects()  # a third process, after the kill
    assert all(o.token for o in objects), objects
    assert not child_ids & {o.id for o in objects}
    labels = {o.label for o in objects}
    assert "it-sigkill-witness" in labels  # the listing does see what the child stored
    assert set(long_lived) <= labels
    assert "qes-ephemeral" not in labels  # (other suites may add long-lived keys of their own)
    # This process's own Hsm is unaffected by the other process dying.
    assert hsm.run_sync(lambda s: s.token_key("it-hsm-p256").sign_digest(DIGEST))
