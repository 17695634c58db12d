"""The offline root's settings (issue 15 item 1): the ``[offline]`` section of the same file.

The root CA key lives in a token of its own that the running service never opens (ETSI EN 319
411-1 §6.5.1 via EN 319 401 §7.5: the root is kept offline, its key used only in a recorded
ceremony). Only the ceremony commands (`qes ca root ...`, `qes init`) read this section;
:func:`signer.settings.config.load_settings` skips it, so the service's
:class:`~signer.settings.config.Settings` holds neither the root token's label nor its PIN, and
``signer.app`` may not import this module (import-linter contract ``offline-root``).

``[offline]`` keys: ``module`` (the PKCS#11 module; default ``[hsm] module``), ``token_label``
(default ``qes-root``), the PIN in ``$QES_ROOT_PIN`` (``pin_env``) or ``pin_file``, and the
files a ceremony carries between the two machines: ``transcript`` (the hash-chained transcript,
default ``<data_dir>/ceremony/transcript.jsonl``) and ``root_certificate`` (the root's
certificate, PEM, default ``<data_dir>/ceremony/root.pem``). The root certificate's names,
curve and lifetime come from ``[ca]``, as for the rest of the CA. Reading this section never
needs the online HSM's PIN nor the database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from signer.errors import ConfigError
from signer.keys import HsmSettings
from signer.settings.config import (
    CaSettings,
    _ca,
    _module_env,
    _secret,
    _Section,
    _server,
    read_raw,
)

DEFAULT_ROOT_TOKEN = "qes-root"  # noqa: S105 (a token label, not a secret)
ROOT_PIN_ENV = "QES_ROOT_PIN"


@dataclass(frozen=True)
class OfflineSettings:
    """The root token (``hsm``; the root key's label in it is ``ca.root_label``), the CA's
    names and lifetimes, and the ceremony's files (module docstring)."""

    hsm: HsmSettings
    ca: CaSettings
    transcript: Path
    root_certificate: Path


def default_transcript(data_dir: Path) -> Path:
    """Where a side keeps the ceremony transcript unless told otherwise."""
    return data_dir / "ceremony" / "transcript.jsonl"


def load_offline_settings(
    path: Path | None, env: Mapping[str, str] | None = None, *, required: bool = True
) -> OfflineSettings | None:
    """``[offline]`` and ``[ca]`` of the file at ``path`` with ``QES__…`` overrides; raises
    :class:`ConfigError` naming the key, and when no root PIN is given unless not
    ``required`` (then None: `qes init` on a machine without the root token)."""
    env = os.environ if env is None else env
    raw = read_raw(path, env)
    base = Path(path).parent if path is not None else Path.cwd()
    data_dir = raw.get("data_dir", ".qes")
    if not isinstance(data_dir, str):
        raise ConfigError(f"data_dir: expected a string, got {data_dir!r}")
    transcript = default_transcript((base / data_dir).resolve())
    server = _server(_Section("server", raw.get("server", {})), base)
    ca = _ca(_Section("ca", raw.get("ca", {})), server)
    hsm_module = raw.get("hsm", {}).get("module", "/usr/lib/softhsm/libsofthsm2.so")
    s = _Section("offline", raw.get("offline", {}))
    pin = _secret(s, "pin", env, base, ROOT_PIN_ENV)
    if pin is None and not required:
        return None
    s.check("pin", pin is not None, f"no root token PIN: set {ROOT_PIN_ENV} or offline.pin_file")
    assert pin is not None
    hsm = HsmSettings(
        module=s.get("module", str, hsm_module),
        token_label=s.get("token_label", str, DEFAULT_ROOT_TOKEN),
        pin=pin,
        sessions=1,
        curve=ca.curve,
        module_env=_module_env(s),
    )
    result = OfflineSettings(
        hsm=hsm,
        ca=ca,
        transcript=base / s.get("transcript", str, str(transcript)),
        root_certificate=base / s.get("root_certificate", str, str(transcript.parent / "root.pem")),
    )
    s.done()
    return result
