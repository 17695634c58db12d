"""pgBackRest (Debian package) around a private PostgreSQL cluster, with the committed
deploy/pgbackrest/pgbackrest.conf and only its paths overridden: WAL archiving, a full backup,
and restores into fresh clusters (to the newest archived WAL, or to the end of the backup)."""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from signer.cli.localdb import LocalPostgres, _free_port
from tests.support.service import ROOT

CONFIG = ROOT / "deploy" / "pgbackrest" / "pgbackrest.conf"
STANZA = "qes"


def _as_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        for p in (path, *path.rglob("*")):
            os.chown(p, pg.pw_uid, pg.pw_gid)


@dataclass
class BackedUpCluster:
    root: Path
    cluster: LocalPostgres

    @classmethod
    def create(cls, root: Path) -> BackedUpCluster:
        (root / "repo").mkdir(parents=True, exist_ok=True)
        _as_postgres(root)
        made = cls(root, LocalPostgres(root / "pg"))
        made.cluster.start(port=_free_port())
        asyncio.run(made._archive_on())
        made.cluster.stop()
        made.cluster.start()
        made.run("stanza-create")
        made.run("check")
        return made

    def _write_config(self) -> Path:
        """The committed config with this cluster's paths (options in a config file apply
        only to the commands that know them, unlike command-line ones)."""
        port = (self.cluster.data_dir / "port").read_text().strip()
        lines = []
        for line in CONFIG.read_text().splitlines():
            key = line.split("=", 1)[0]
            if key == "repo1-path":
                line = f"repo1-path={self.root / 'repo'}"
            elif key == "pg1-path":
                line = f"pg1-path={self.cluster.data_dir / 'data'}"
            elif key == "pg1-port":
                line = f"pg1-port={port}\npg1-socket-path={self.cluster.data_dir}"
            elif key == "repo1-cipher-type":
                # encrypted as committed; the passphrase, which production gives in the
                # environment, is in this private config file here, so that the server's
                # archive command (which does not see the test's environment) has it too
                line = f"{line}\nrepo1-cipher-pass={secrets.token_urlsafe(32)}"
            elif key == "[global]":
                line = "[global]\nlog-level-file=off"
            lines.append(line)
        path = self.root / "pgbackrest.conf"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        _as_postgres(path)
        return path

    def _options(self, pg_path: Path | None = None) -> list[str]:
        config = self.root / "pgbackrest.conf"
        if not config.exists():
            config = self._write_config()
        return [f"--config={config}", f"--stanza={STANZA}"] + (
            [f"--pg1-path={pg_path}"] if pg_path is not None else []
        )

    def run(self, command: str, *extra: str, pg_path: Path | None = None) -> str:
        cmd = ["pgbackrest", *self._options(pg_path), *extra]
        cmd.append(command)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pgbackrest {command}: {done.stdout[-1500:]}{done.stderr[-1500:]}")
        return done.stdout

    async def _archive_on(self) -> None:
        archive = " ".join(
            [
                "pgbackrest", *self._options(), "archive-push %p",
            ]
        )  # fmt: skip
        conn = await asyncpg.connect(self.cluster.url())
        try:
            await conn.execute("ALTER SYSTEM SET archive_mode = 'on'")
            await conn.execute(f"ALTER SYSTEM SET archive_command = '{archive}'")
        finally:
            await conn.close()

    async def archive_now(self) -> None:
        """Switch to a new WAL segment and wait until the old one is in the repository."""
        conn = await asyncpg.connect(self.cluster.url())
        try:
            segment = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = await conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver")
                if done is not None and done >= segment:
                    return
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
        raise RuntimeError(f"WAL segment {segment} was not archived")

    def restore(self, target: Path, *extra: str) -> LocalPostgres:
        """Restore into a fresh cluster in ``target`` (archiving off there) and start it."""
        target.mkdir(parents=True, exist_ok=True)
        _as_postgres(target)
        self.run("restore", "--archive-mode=off", *extra, pg_path=target / "data")
        restored = LocalPostgres(target)
        restored.start(port=_free_port())
        return restored
