"""The 90-second version of bench/soak.py: signing at half of capacity through two replicas
while the HSM is killed, the HSM hangs, PostgreSQL restarts and a replica is SIGKILLed; no
record lost, no key left, and signing resumes after every fault."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.service import ROOT


@pytest.mark.timeout(900)
def test_short_soak_loses_nothing_and_recovers_from_every_fault() -> None:
    done = subprocess.run(
        [sys.executable, "bench/soak.py", "--minutes", "1.5", "--fault-every", "15"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "records lost (201 without a completed record): 0" in out, out
    assert "keys left in the token: 0" in out, out
    faults = re.findall(r"^(hsm-kill|hsm-hang|postgres-restart|replica-kill) .*$", out, re.M)
    assert set(faults) == {"hsm-kill", "hsm-hang", "postgres-restart", "replica-kill"}, out
    assert " never" not in out, out
    signed = int(re.search(r"signed: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert signed > 100, out
