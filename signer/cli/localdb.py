"""A private PostgreSQL cluster in the data directory, for the quick start and for tests.

The service itself only needs a URL; this exists so that a new user gets a working database
without touching the machine's own server. PostgreSQL refuses to run as root, so under root the
cluster is owned by the ``postgres`` system user (created by Debian's postgresql package).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from signer.errors import SignerError


class LocalDbError(SignerError):
    slug = "local-database-error"
    title = "Private PostgreSQL could not be started"


def _bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    if not versions:
        raise LocalDbError("PostgreSQL server binaries not found (install postgresql)")
    return Path(versions[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LocalPostgres:
    data_dir: Path
    database: str = "qes"

    @property
    def _pgdata(self) -> Path:
        return self.data_dir / "data"

    @property
    def _port_file(self) -> Path:
        return self.data_dir / "port"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(_bindir() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]
            raise LocalDbError(f"{args[0]}: {last[0]}")
        return proc

    def url(self) -> str:
        if not self._port_file.exists():
            raise LocalDbError(f"no private PostgreSQL in {self.data_dir}: run `qes db start`")
        port = int(self._port_file.read_text())
        return f"postgresql://postgres@127.0.0.1:{port}/{self.database}"

    def running(self) -> bool:
        return (
            self._pgdata.exists()
            and self._run("pg_ctl", "status", "-D", str(self._pgdata), check=False).returncode == 0
        )

    def start(self, port: int | None = None) -> str:
        """Create (once) and start the cluster; return its URL. Safe to call when running."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.data_dir, pg.pw_uid, pg.pw_gid)
        if not (self._pgdata / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self._pgdata),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
            )
        if self.running():
            return self.url()
        chosen = port or (
            int(self._port_file.read_text()) if self._port_file.exists() else _free_port()
        )
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self._pgdata),
            "-l",
            str(self.data_dir / "postgres.log"),
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {chosen} "
            f"-c unix_socket_directories='{self.data_dir}'",
        )
        self._port_file.write_text(str(chosen))
        self._create_database(chosen)
        return self.url()

    def _create_database(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            proc = self._run(
                "createdb",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                self.database,
                check=False,
            )
            if proc.returncode == 0 or "already exists" in proc.stderr:
                return
            if time.monotonic() > deadline:
                raise LocalDbError(f"createdb: {proc.stderr.strip()}")
            time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self._pgdata))
