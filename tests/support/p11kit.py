"""SoftHSM2 in another process, behind ``p11-kit server``: an HSM that can die, hang and return.

The server forks one child per client connection, so "the HSM process" is its whole process
group: :meth:`P11KitServer.kill` (SIGKILL), :meth:`hang` (SIGSTOP) and :meth:`resume` (SIGCONT)
signal the group. The signer loads p11-kit's client module; each server gets its own copy of
that module file (:func:`client_module`), because a process loads one file once and the client
reads its server's address (``P11_KIT_SERVER_ADDRESS``) when it initialises. OPERATIONS.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from signer.keys.types import HsmMember
from tests.support.softhsm import SoftHsmToken

P11KIT_CLIENT = Path("/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so")
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def client_module(directory: Path, name: str) -> Path:
    """A private copy of p11-kit's client module (one per server a process talks to)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"p11-kit-client-{name}.so"
    if not path.exists():
        shutil.copyfile(P11KIT_CLIENT, path)
    return path


def token_copy(token: SoftHsmToken, directory: Path) -> SoftHsmToken:
    """A second SoftHSM2 config over a copy of ``token``'s store (same keys, same PINs): the
    other half of an HA pair."""
    tokens = directory / "tokens"
    shutil.copytree(token.directory / "tokens", tokens)
    conf = directory / "softhsm2.conf"
    conf.write_text(token.conf.read_text().replace(str(token.directory / "tokens"), str(tokens)))
    return SoftHsmToken(directory, conf, token.label, token.pin, token.so_pin, token.module)


@dataclass
class P11KitServer:
    """``p11-kit server`` exporting ``token``'s SoftHSM2 token on a Unix socket."""

    token: SoftHsmToken
    socket: Path
    module: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @classmethod
    def for_token(cls, token: SoftHsmToken, directory: Path, name: str) -> P11KitServer:
        return cls(token, directory / f"{name}.sock", client_module(directory, name))

    @property
    def address(self) -> str:
        return f"unix:path={self.socket}"

    @property
    def module_env(self) -> tuple[tuple[str, str], ...]:
        return (("P11_KIT_SERVER_ADDRESS", self.address),)

    def member(self) -> HsmMember:
        return HsmMember(str(self.module), self.token.label, self.module_env)

    def env_overrides(self) -> dict[str, str]:
        """QES__ overrides that make a `qes serve` use this server as its HSM."""
        return {
            "QES__HSM__MODULE": str(self.module),
            "QES__HSM__MODULE_ENV": f'{{P11_KIT_SERVER_ADDRESS = "{self.address}"}}',
        }

    def start(self) -> P11KitServer:
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                *("p11-kit", "server", "-f", "-n", str(self.socket)),
                *("--provider", SOFTHSM, f"pkcs11:token={self.token.label}"),
            ],
            env=self.token.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own group: kill() reaches the per-client children
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # P11_KIT_SERVER_ADDRESS=...: it listens
        if b"P11_KIT_SERVER_ADDRESS" not in line:
            raise RuntimeError(f"p11-kit server did not start: {line!r}")
        deadline = time.monotonic() + 10
        while not self.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """The HSM dies (SIGKILL to the server and its per-client children)."""
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def hang(self) -> None:
        """The HSM hangs: every call into it blocks (SIGSTOP to the group)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self) -> P11KitServer:
        self.kill()
        return self.start()
