"""Restore drill with pgBackRest (the committed deploy/pgbackrest/pgbackrest.conf): WAL
archiving and a full backup of a signing service's database, signing goes on, then two
restores into fresh clusters. Recovered to the newest archived WAL (point-in-time recovery),
nothing is lost: `qes audit verify` and `qes audit anchor` pass. Recovered only to the end of
the backup, `qes audit verify` still passes on the restored data, and the checkpoint anchor
catches the lost tail, naming it."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signer.keys.session import EPHEMERAL_LABEL
from tests.integration.faults.test_checkpoint_anchor import (
    anchored_env,
    anchored_size,
    log_size,
    qes_audit_anchor,
    sign_n,
)
from tests.integration.log.test_log_tamper import qes_audit_verify
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.pg import private_cluster_dir
from tests.support.pgbackrest import BackedUpCluster
from tests.support.service import DEV_CONFIG, SignerProcess, free_port, run_qes
from tests.support.softhsm import SoftHsmToken


@pytest.fixture
def drill_root() -> Iterator[Path]:
    root = private_cluster_dir()
    try:
        yield root
    finally:
        for cluster in ("pg", "latest", "backup-end"):
            from signer.cli.localdb import LocalPostgres

            if (root / cluster / "data").exists():
                LocalPostgres(root / cluster).stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


async def backup_and_restore_config(env: dict[str, str], tmp_path: Path) -> Path:
    """`qes backup` of the service's configuration and privacy key, `qes restore` of it into
    a fresh directory, a wrong passphrase refused; returns the restored config file."""
    passphrase = tmp_path / "backup.pass"
    passphrase.write_text("a passphrase kept apart from the archive\n")
    archive = tmp_path / "config.qesbak"
    code, out, err = await run_qes(
        "backup", "--config", str(DEV_CONFIG), "--out", str(archive),
        "--passphrase-file", str(passphrase), env=env,
    )  # fmt: skip
    assert code == 0, err
    assert archive.stat().st_mode & 0o077 == 0
    assert env["QES_LOG_PRIVACY_KEY"].encode() not in archive.read_bytes()
    assert "log-privacy.key  (log privacy key, from $QES_LOG_PRIVACY_KEY)" in out
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the passphrase of this archive\n")
    code, _, err = await run_qes(
        "restore", str(archive), "--to", str(tmp_path / "nope"), "--passphrase-file", str(wrong)
    )
    assert code == 1 and "wrong passphrase" in err
    target = tmp_path / "restored-config"
    code, out, err = await run_qes(
        "restore", str(archive), "--to", str(target), "--passphrase-file", str(passphrase)
    )
    assert code == 0, err
    assert "every file matches its SHA-256" in out
    assert (target / "qes.toml").read_bytes() == DEV_CONFIG.read_bytes()
    assert (target / "policy.toml").read_bytes() == (DEV_CONFIG.parent / "policy.toml").read_bytes()
    return target / "qes.toml"


@pytest.mark.timeout(600)
async def test_backup_keep_signing_restore_verify_and_catch_the_lost_tail(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    settings: Any,
    ca_ready: None,
    tmp_path: Path,
    drill_root: Path,
) -> None:
    backed = await asyncio.to_thread(BackedUpCluster.create, drill_root)
    live = backed.cluster.url()
    anchor = tmp_path / "anchor.json"
    port = free_port()
    env = await anchored_env(
        token=softhsm_token, sessions_db=database_url, target=live, idp=idp,
        settings=settings, data_dir=tmp_path, anchor=anchor, port=port,
    )  # fmt: skip
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    signer = SignerProcess(env, port, tmp_path / "signer.log").start()
    try:
        await sign_n(signer.url, token, 3)
        at_backup = await log_size(live)
        await anchored_size(anchor, at_backup)
        await asyncio.to_thread(backed.run, "backup", "--type=full")
        await sign_n(signer.url, token, 4)  # signing goes on after the backup
        newest = await anchored_size(anchor, at_backup + 4)
        await backed.archive_now()  # the WAL of those signatures is in the repository
    finally:
        signer.stop()

    # The repository is encrypted (the committed repo1-cipher-type), its files unreadable.
    info = await asyncio.to_thread(backed.run, "info")
    assert "cipher: aes-256-cbc" in info, info
    wal = [f for f in (drill_root / "repo" / "archive").rglob("0000*") if f.is_file()]
    assert wal and all(f.read_bytes().startswith(b"Salted__") for f in wal)  # OpenSSL's format
    # The configuration and the privacy key (`qes backup`), restored into a fresh directory.
    config = await backup_and_restore_config(env, tmp_path)
    restored_key = config.parent / "log-privacy.key"
    assert restored_key.read_text().strip() == env["QES_LOG_PRIVACY_KEY"]  # identical
    from_backup = {  # the service's files from the backups only, not the test's environment
        **env,
        "QES_LOG_PRIVACY_KEY": "",
        "QES__LOG__PRIVACY_KEY_FILE": f'"{restored_key}"',
    }

    latest = await asyncio.to_thread(backed.restore, drill_root / "latest")
    lenv = {**from_backup, "QES_DATABASE_URL": latest.url()}
    assert await log_size(latest.url()) >= newest
    verified = await asyncio.to_thread(qes_audit_verify, lenv, config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    told = await asyncio.to_thread(qes_audit_anchor, lenv)
    assert told.returncode == 0, told.stdout + told.stderr
    latest.stop()

    old = await asyncio.to_thread(
        backed.restore, drill_root / "backup-end", "--type=immediate", "--target-action=promote"
    )
    oenv = {**from_backup, "QES_DATABASE_URL": old.url()}
    restored_size = await log_size(old.url())
    assert restored_size < newest
    verified = await asyncio.to_thread(qes_audit_verify, oenv, config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    told = await asyncio.to_thread(qes_audit_anchor, oenv)
    assert told.returncode == 1, told.stdout + told.stderr
    missing = newest - restored_size
    assert f"entries {restored_size} to {newest - 1} ({missing}) are missing" in told.stdout
    leftovers = [o for o in softhsm_token.list_objects() if o.label in ("", EPHEMERAL_LABEL)]
    assert leftovers == []
