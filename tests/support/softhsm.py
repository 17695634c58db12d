"""Fresh SoftHSM2 tokens for tests, and an independent (separate-process) object listing.

SoftHSM2 reads ``SOFTHSM2_CONF`` when the module is initialised, and a process initialises the
module once (``signer.keys`` caches it by path). So there is **one token per test process**,
created before anything loads the module and shared by every test of the process::

    # conftest.py (root or package); safe to define in several conftests: it is a singleton
    import pytest
    from tests.support.softhsm import SoftHsmToken, session_token

    @pytest.fixture(scope="session")
    def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> SoftHsmToken:
        return session_token(tmp_path_factory)  # sets os.environ["SOFTHSM2_CONF"]

    @pytest.fixture(scope="session")
    def hsm(softhsm_token):
        from signer.keys import Hsm
        h = Hsm.open(softhsm_token.settings(sessions=4))
        yield h
        h.close()

Child processes (``subprocess``) get the token through ``token.env()``. With pytest-xdist each
worker process gets its own token (``tmp_path_factory`` is per worker). Long-lived keys made by
tests stay in the token for the rest of the session; give them distinct labels.

Beside it, in the same token directory, lives the offline root's token (``token.offline``,
label ``qes-root``, a PIN of its own): the key ceremony's other side (README "Key ceremony").
``token.env()`` carries its PIN as ``$QES_ROOT_PIN`` for `qes init` and the `qes ca root`
commands; `qes serve` never reads it (tests/integration/cli/test_ceremony.py starts one without).

PINs are random per run and never written anywhere but the throwaway token directory.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SOFTHSM_MODULE = os.environ.get("QES_TEST_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
_SESSION_TOKEN: SoftHsmToken | None = None

# Runs in a separate interpreter with plain python-pkcs11 (not signer.keys): an independent view.
_LIST_SCRIPT = r"""
import json, os, sys
import pkcs11
from pkcs11 import Attribute as A
lib = pkcs11.lib(sys.argv[1])
token = lib.get_token(token_label=sys.argv[2])
out = []
with token.open(user_pin=os.environ["QES_TEST_PIN"]) as session:
    objects = list(session.get_objects())
    for obj in objects:
        a = obj.get_attributes([A.LABEL, A.CLASS, A.TOKEN, A.ID])
        out.append({"label": a.get(A.LABEL) or "", "class": pkcs11.ObjectClass(a[A.CLASS]).name,
                    "token": bool(a.get(A.TOKEN)), "id": bytes(a.get(A.ID) or b"").hex()})
print(json.dumps(out))
"""


@dataclass(frozen=True)
class TokenObject:
    label: str
    cls: str
    token: bool
    id: str


@dataclass(frozen=True)
class SoftHsmToken:
    """A SoftHSM2 token living in ``directory`` (config file + token store)."""

    directory: Path
    conf: Path
    label: str
    pin: str = field(repr=False)
    so_pin: str = field(repr=False)
    module: str = SOFTHSM_MODULE
    #: The offline root's token in the same directory (:meth:`with_offline_root`).
    offline: SoftHsmToken | None = None

    @classmethod
    def create(cls, directory: Path, label: str = "qes-test") -> SoftHsmToken:
        """Write ``softhsm2.conf`` and initialise a token with random PINs (softhsm2-util)."""
        tokens = directory / "tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        conf = directory / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
        token = cls(directory, conf, label, secrets.token_hex(8), secrets.token_hex(8))
        subprocess.run(
            [
                *("softhsm2-util", "--init-token", "--free", "--label", label),
                *("--so-pin", token.so_pin, "--pin", token.pin),
            ],
            env=token.env(),
            check=True,
            capture_output=True,
        )
        return token

    def with_offline_root(self, label: str = "qes-root") -> SoftHsmToken:
        """This token with a second one, ``label``, in the same directory: the offline root's
        token of the key ceremony, with a PIN of its own."""
        root = SoftHsmToken.create(self.directory, label)
        return SoftHsmToken(
            self.directory, self.conf, self.label, self.pin, self.so_pin, self.module, root
        )

    def root_env(self) -> dict[str, str]:
        """What the ceremony's offline side needs: the root token's label and PIN."""
        if self.offline is None:
            return {}
        return {"QES_ROOT_PIN": self.offline.pin, "QES__OFFLINE__TOKEN_LABEL": self.offline.label}

    def env(self, **extra: str) -> dict[str, str]:
        """A copy of ``os.environ`` pointing SoftHSM2 at this token's config (and at the
        offline root's token, :meth:`root_env`)."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), **self.root_env(), **extra}

    def python(
        self, code: str, *args: str, timeout: float = 120.0, **popen: Any
    ) -> subprocess.Popen[str]:
        """Start ``python -c code args…`` in a child process that sees this token and can import
        the project (PYTHONPATH = repository root). The PIN is passed as $QES_TEST_PIN."""
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            env=self.env(QES_TEST_PIN=self.pin, PYTHONPATH=pythonpath),
            text=True,
            **popen,
        )

    def activate(self) -> None:
        """Point this process at the token; must happen before the module is first loaded."""
        os.environ["SOFTHSM2_CONF"] = str(self.conf)

    def settings(self, *, sessions: int = 4, curve: str = "P-256", pin: str | None = None) -> Any:
        """HsmSettings for this token (imported lazily so activation can come first)."""
        from signer.keys import HsmSettings
        from signer.secrets import Secret

        return HsmSettings(
            module=self.module,
            token_label=self.label,
            pin=Secret(self.pin if pin is None else pin),
            sessions=sessions,
            curve=curve,  # type: ignore[arg-type]
        )

    def list_objects(self, timeout: float = 60.0) -> list[TokenObject]:
        """Every object a *separate process* sees after logging in (token objects only,
        since session objects are private to the process that made them)."""
        done = subprocess.run(
            [sys.executable, "-c", _LIST_SCRIPT, self.module, self.label],
            env=self.env(QES_TEST_PIN=self.pin),
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return [
            TokenObject(o["label"], o["class"], o["token"], o["id"])
            for o in json.loads(done.stdout)
        ]


def session_token(tmp_path_factory: pytest.TempPathFactory) -> SoftHsmToken:
    """The test process's one token: created and activated on first call, then reused."""
    global _SESSION_TOKEN
    if _SESSION_TOKEN is None:
        token = SoftHsmToken.create(tmp_path_factory.mktemp("softhsm")).with_offline_root()
        token.activate()
        _SESSION_TOKEN = token
    return _SESSION_TOKEN
