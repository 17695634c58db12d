"""The log never forks silently: a backup taken, signing goes on (checkpoints published and
anchored outside the database), the database restored from the backup into a fresh database.
`qes audit verify` passes on the restored data; the service refuses to sign (503
``log-behind-checkpoint``, /readyz 503) naming the missing range; `qes audit anchor` says the
same and the choices; once the operator accepts the loss, signing resumes without a restart."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from signer.cli.localdb import _bindir
from signer.keys.session import EPHEMERAL_LABEL
from tests.integration.faults.test_faults import copy_ca_certificates, post
from tests.integration.log.test_log_tamper import qes_audit_verify
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.pg import scratch_database
from tests.support.service import DEV_CONFIG, ROOT, SignerProcess, free_port, run_qes, service_env
from tests.support.softhsm import SoftHsmToken


@pytest.fixture
def two_databases(pg_admin: str) -> Iterator[tuple[str, str]]:
    with scratch_database(pg_admin) as first, scratch_database(pg_admin) as second:
        yield first, second


def qes_audit_anchor(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer", "audit", "anchor", "--config", str(DEV_CONFIG), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        check=False,
        timeout=120,
    )


async def log_size(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT size FROM log_state WHERE id = 1"))
    finally:
        await conn.close()


async def anchored_size(anchor: Path, at_least: int) -> int:
    for _ in range(200):
        if anchor.exists():
            size = int(json.loads(anchor.read_text())["size"])
            if size >= at_least:
                return size
        await asyncio.sleep(0.1)
    raise AssertionError(f"no checkpoint of size >= {at_least} anchored in {anchor}")


async def anchored_env(
    *,
    token: SoftHsmToken,
    sessions_db: str,
    target: str,
    idp: RunningIdp,
    settings: Any,
    data_dir: Path,
    anchor: Path,
    port: int,
) -> dict[str, str]:
    """The environment of a `qes serve` on ``target`` (the session's CA made known to it)
    with a checkpoint anchor and a fast checkpoint interval."""
    labels = (settings.ca.root_label, settings.ca.issuing_label, settings.tsa.label)
    await copy_ca_certificates(sessions_db, target, labels)
    return service_env(
        token=token,
        database_url=target,
        idp=idp,
        port=port,
        data_dir=data_dir,
        QES__LOG__ANCHOR_FILE=f'"{anchor}"',
        QES__LOG__CHECKPOINT_INTERVAL_SECONDS="0.3",
    )


async def sign_n(url: str, token: str, n: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            code, body = await post(session, url, token)
            assert code == 201, body


async def watch_sees_the_anchor_not_extended(
    url: str, idp: RunningIdp, anchor: Path, newest: int, tmp_path: Path
) -> None:
    """`qes audit watch --anchor` against the restored service: the anchor, not extended."""
    token_file = tmp_path / "auditor.token"
    token_file.write_text(await idp.client_token("demo-auditor", DEMO_SECRETS["demo-auditor"]))
    code, out, err = await run_qes(
        "audit", "watch", "--url", url, "--token-file", str(token_file), "--once", "-q",
        "--from", str(10**9), "--anchor", str(anchor),
    )  # fmt: skip
    assert code == 1, out + err
    [line] = out.splitlines()
    assert line.startswith(f"anchor  path={anchor}  size={newest}  root="), line
    assert "extends=NO (the log's newest checkpoint is older" in line, line


@pytest.mark.timeout(300)
async def test_restore_from_an_old_backup_is_caught_and_the_operator_decides(
    softhsm_token: SoftHsmToken,
    database_url: str,
    two_databases: tuple[str, str],
    idp: RunningIdp,
    settings: Any,
    ca_ready: None,
    tmp_path: Path,
) -> None:
    live, restored = two_databases
    anchor = tmp_path / "anchor" / "checkpoint.json"
    port = free_port()
    env = await anchored_env(
        token=softhsm_token, sessions_db=database_url, target=live, idp=idp,
        settings=settings, data_dir=tmp_path, anchor=anchor, port=port,
    )  # fmt: skip
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    signer = SignerProcess(env, port, tmp_path / "signer.log").start()
    try:
        await sign_n(signer.url, token, 3)
        backed_up = await log_size(live)
        await anchored_size(anchor, backed_up)
        dump = tmp_path / "backup.dump"
        subprocess.run(
            [str(_bindir() / "pg_dump"), "-Fc", "-f", str(dump), live], check=True, timeout=120
        )
        await sign_n(signer.url, token, 4)  # signing goes on after the backup
        newest = await anchored_size(anchor, backed_up + 4)
    finally:
        signer.stop()
    subprocess.run(
        [str(_bindir() / "pg_restore"), "--no-owner", "-d", restored, str(dump)],
        check=True,
        timeout=120,
    )
    renv = {**env, "QES_DATABASE_URL": restored}

    verified = await asyncio.to_thread(qes_audit_verify, renv)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    told = await asyncio.to_thread(qes_audit_anchor, renv)
    assert told.returncode == 1, told.stdout + told.stderr
    missing = f"entries {backed_up} to {newest - 1} ({newest - backed_up}) are missing"
    assert missing in told.stdout, told.stdout
    assert "--accept-loss" in told.stdout and "point-in-time" in told.stdout

    again = SignerProcess(renv, port, tmp_path / "restored.log")
    assert again.start_unready() == 503  # up, but not ready
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{again.url}/readyz") as resp:
                ready = await resp.json()
            assert resp.status == 503 and missing in ready["reasons"]["log"], ready
            code, body = await post(session, again.url, token)
            assert code == 503 and body["type"] == "/problems/log-behind-checkpoint", body
            assert await log_size(restored) == backed_up  # nothing appended, nothing published
            await watch_sees_the_anchor_not_extended(again.url, idp, anchor, newest, tmp_path)

            accepted = await asyncio.to_thread(qes_audit_anchor, renv, "--accept-loss")
            assert accepted.returncode == 0, accepted.stdout + accepted.stderr
            assert (anchor.parent / f"checkpoint.json.lost-{newest}").exists()
            for _ in range(100):
                code, body = await post(session, again.url, token)
                if code == 201:
                    break
                await asyncio.sleep(0.1)
            assert code == 201, body
    finally:
        again.stop()
    assert (await asyncio.to_thread(qes_audit_anchor, renv)).returncode == 0
    leftovers = [o for o in softhsm_token.list_objects() if o.label in ("", EPHEMERAL_LABEL)]
    assert leftovers == []
