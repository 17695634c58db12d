"""A PostgreSQL primary with a synchronous streaming standby (Debian's PostgreSQL binaries):
``pg_basebackup -R`` makes the standby, ``synchronous_standby_names`` makes every commit wait
for it, :meth:`PgPair.fail_over` kills the primary and promotes the standby (OPERATIONS.md)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from signer.cli.localdb import LocalPostgres, _free_port

STANDBY_NAME = "standby1"


@dataclass
class PgPair:
    primary: LocalPostgres
    standby_dir: Path
    primary_port: int
    standby_port: int

    @classmethod
    def create(cls, root: Path) -> PgPair:
        primary = LocalPostgres(root / "primary")
        port = _free_port()
        primary.start(port=port)
        pair = cls(primary, root / "standby", port, _free_port())
        pair._make_standby()
        return pair

    @property
    def url(self) -> str:
        """Both hosts; libpq semantics pick the one that accepts writes (asyncpg)."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary_port},127.0.0.1:{self.standby_port}"
            f"/{self.primary.database}?target_session_attrs=read-write"
        )

    def url_of(self, port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{self.primary.database}"

    @property
    def _standby_data(self) -> Path:
        return self.standby_dir / "data"

    def _make_standby(self) -> None:
        self.standby_dir.mkdir(parents=True, exist_ok=True)
        import os
        import pwd

        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.standby_dir, pg.pw_uid, pg.pw_gid)
        run = self.primary._run
        run(
            *("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres"),
            *("-D", str(self._standby_data), "-R", "-X", "stream", "--checkpoint=fast"),
        )
        conninfo = (
            f"host=127.0.0.1 port={self.primary_port} user=postgres application_name={STANDBY_NAME}"
        )
        auto = self._standby_data / "postgresql.auto.conf"
        with auto.open("a") as out:
            out.write(f"primary_conninfo = '{conninfo}'\n")
        run(
            *("pg_ctl", "start", "-w", "-t", "60", "-D", str(self._standby_data)),
            *("-l", str(self.standby_dir / "postgres.log"), "-o"),
            f"-c listen_addresses=127.0.0.1 -p {self.standby_port} "
            f"-c unix_socket_directories='{self.standby_dir}'",
        )
        asyncio.run(self._require_synchronous())

    async def _require_synchronous(self) -> None:
        conn = await asyncpg.connect(self.url_of(self.primary_port))
        try:
            await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
            await conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                state = await conn.fetchval(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
                    STANDBY_NAME,
                )
                if state == "sync":
                    return
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        raise RuntimeError("the standby did not become synchronous")

    def fail_over(self) -> None:
        """The primary dies (immediate shutdown: no checkpoint, like a crash) and the standby
        is promoted."""
        self.primary.stop(mode="immediate")
        self.primary._run("pg_ctl", "promote", "-w", "-t", "60", "-D", str(self._standby_data))

    def stop(self) -> None:
        self.primary.stop(mode="immediate")
        self.primary._run(
            "pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self._standby_data), check=False
        )
