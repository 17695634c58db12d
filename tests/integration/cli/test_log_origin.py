"""`qes serve` warns once (not once per worker) when ``log.origin`` was derived from
``server.public_url``, and not at all when it is configured (issue 5: the origin names every
checkpoint and must never change). The workers here stop at start-up (no database, no token):
the warning comes before anything is opened, so nothing is written anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.service import DEV_CONFIG, ROOT, free_port


def serve(tmp_path: Path, **extra: str) -> str:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("QES_")
    }  # only what this test sets
    env.update(
        QES_HSM_PIN="not-used",
        QES_DATABASE_URL="postgresql://127.0.0.1:1/unreachable",
        QES__SERVER__WORKERS="2",
        QES__SERVER__PORT=str(free_port()),
        QES__DATA_DIR=f'"{tmp_path}"',
        **extra,
    )
    done = subprocess.run(
        [sys.executable, "-m", "signer", "serve", "--config", str(DEV_CONFIG)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode != 0  # the workers cannot start here, by design of this test
    return done.stdout + done.stderr


@pytest.mark.parametrize(("origin", "warnings"), [(None, 1), ("example.com/qes-log", 0)])
def test_a_derived_origin_is_warned_about_once(
    tmp_path: Path, origin: str | None, warnings: int
) -> None:
    extra = {"QES__LOG__ORIGIN": origin} if origin else {}
    output = serve(tmp_path, **extra)
    assert output.count("log_origin_derived") == warnings, output
    if warnings:
        assert "127.0.0.1:8780/log" in output and "[log] origin" in output
    # Workers did start and got past loading the settings (where a per-worker warning would
    # be) to the missing privacy key, so "once" is real. Not necessarily both: the supervisor
    # stops the other worker as soon as one fails its start, and on a busy machine that can
    # come before the other reached the key.
    assert 1 <= output.count("log.privacy_key") <= 2, output
    assert "worker_start_failed" in output, output
