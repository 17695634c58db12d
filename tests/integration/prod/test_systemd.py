"""The systemd unit (issue 13, item 6): `systemd-analyze verify` finds nothing to say about it,
`systemd-analyze security` rates it below 2.0, and `qes serve` speaks the unit's protocol: it
sends READY=1 over $NOTIFY_SOCKET once it answers, and STOPPING=1 then exits 0 on SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.idp import RunningIdp
from tests.support.service import DEV_CONFIG, ROOT, free_port, service_env
from tests.support.softhsm import SoftHsmToken

UNIT = ROOT / "deploy" / "systemd" / "qes-signer.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def _root_with_unit(root: Path) -> Path:
    """A root directory holding the unit, the system's targets and slices, and the executable
    the unit starts (a stand-in for /opt/qes-signer, which the operator installs)."""
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units / UNIT.name)
    system = root / "usr" / "lib" / "systemd" / "system"
    system.mkdir(parents=True)
    for found in (*SYSTEM_UNITS.glob("*.target"), *SYSTEM_UNITS.glob("*.slice")):
        if not found.is_symlink():
            shutil.copy(found, system / found.name)
    exec_start = re.search(r"^ExecStart=(\S+)", UNIT.read_text(), re.M)
    assert exec_start
    program = root / exec_start[1].lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return root


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: run `bash deploy/setup.sh --test`")
    return _root_with_unit(tmp_path / "root")


def test_unit_verifies_cleanly(unit_root: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={unit_root}", UNIT.name],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr.strip() == "", done.stdout + done.stderr


def test_unit_exposure_is_below_two(unit_root: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={unit_root}", "--no-pager",
         UNIT.name],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    print(done.stdout)  # the full table, for the record
    score = re.search(
        r"Overall exposure level for qes-signer\.service: ([0-9.]+) (\w+)", done.stdout
    )
    assert score, done.stdout + done.stderr
    assert float(score[1]) < 2.0 and score[2] == "OK", score[0]
    unit = UNIT.read_text()
    for required in ("Type=notify", "ProtectSystem=strict", "NoNewPrivileges=yes",
                     "PrivateTmp=yes", "CapabilityBoundingSet=\n", "Restart=on-failure",
                     "User=qes-signer"):  # fmt: skip
        assert required in unit, required


def test_serve_notifies_ready_once_it_answers_and_stops_cleanly(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    ca_ready: None,
    tmp_path: Path,
) -> None:
    port = free_port()
    env = service_env(
        token=softhsm_token, database_url=database_url, idp=idp, port=port, data_dir=tmp_path
    )
    notify_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        sock.settimeout(1)
        log = (tmp_path / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "signer", "serve", "--config", str(DEV_CONFIG)],
            env={**os.environ, **env, "NOTIFY_SOCKET": str(notify_path)},
            cwd=ROOT, stdout=log, stderr=log,
        )  # fmt: skip
        try:
            ready = _receive(sock, proc, tmp_path / "serve.log")
            assert ready.startswith("READY=1\n"), ready
            assert f"STATUS=serving http on 127.0.0.1:{port}" in ready
            # When systemd hears READY=1, the service answers: no polling needed.
            url = f"http://127.0.0.1:{port}/readyz"
            with urllib.request.urlopen(url, timeout=10) as r:
                assert r.status == 200
            proc.send_signal(signal.SIGTERM)
            assert sock.recv(4096) == b"STOPPING=1"
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


def _receive(sock: socket.socket, proc: subprocess.Popen[bytes], log: Path) -> str:
    for _ in range(90):
        try:
            return sock.recv(4096).decode()
        except TimeoutError:
            assert proc.poll() is None, log.read_text()[-2000:]
    raise AssertionError(f"no READY=1 in 90 s: {log.read_text()[-2000:]}")


def test_issuer_setup_error_stops_the_start_in_one_line(
    softhsm_token: SoftHsmToken, database_url: str, idp: RunningIdp, ca_ready: None,
    tmp_path: Path,
) -> None:  # fmt: skip
    """An error found only while the service starts (two issuers with one URL, neither told
    apart by match_claims) ends `qes serve` with one line, exit 1: what systemd logs."""
    env = service_env(
        token=softhsm_token, database_url=database_url, idp=idp, port=free_port(),
        data_dir=tmp_path, QES__ISSUERS__DEMO_ORGANISATIONS__MATCH_CLAIMS="{}",
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "signer", "serve", "--config", str(DEV_CONFIG)],
        env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("qes: issuers: ") and "match_claims" in last, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
