"""`qes backup` / `qes restore` (issue 14, item 5): the configuration and the log privacy key,
which pgBackRest does not cover (it backs up PostgreSQL's data directory and WAL only).

What goes in:

- the config file (TOML) itself;
- every file it names (``file`` and ``*_file`` keys, relative paths resolved from the config's
  directory): secret files (PIN, database URL, privacy key, OIDC client secrets), TLS
  certificate and key, policy file, TSA trust anchors;
- the log privacy key, wherever it comes from (``log.privacy_key_file``, the environment
  variable ``log.privacy_key_env``, or ``<data_dir>/log-privacy.key``): without it ``qes audit
  verify`` cannot recompute the entries' keyed commitments (``ca.logentry``).

Not in: ``log.anchor_file``, deliberately: it must only move forward, and restoring an old
copy beside an old database would hide exactly the lost tail it exists to catch (keep it on
storage that survives the database's loss); other secrets given in the environment (HSM PIN,
database URL), which belong to whatever sets that environment (systemd credentials, a
Kubernetes Secret); the CA, TSA and log keys, which never leave the HSM (its vendor's backup).

The archive is a tar of ``manifest.json`` (each member's path, role, original location and
SHA-256) and the files, encrypted as a whole: scrypt (RFC 7914; N=2^15, r=8, p=1) derives a
256-bit key from the operator's passphrase and a random salt, AES-256-GCM (NIST SP 800-38D)
seals it with the magic line as associated data, so a wrong passphrase or any changed byte is
refused. Restoring checks every file's SHA-256 against the manifest and writes them (mode 0600)
into an empty directory, keeping the layout of the config's directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import tarfile
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from signer.errors import SignerError
from signer.settings.config import Settings

MAGIC = b"qes-signer config backup v1\n"
SALT_BYTES, NONCE_BYTES = 16, 12
MANIFEST = "manifest.json"
PRIVACY_KEY_ROLE = "log privacy key"
#: Settings naming files that are state, not configuration (see the module docstring).
NOT_BACKED_UP = frozenset({"log.anchor_file"})
MIN_PASSPHRASE = 16


class BackupError(SignerError):
    """A backup cannot be made, opened or restored; the message says why in one line."""

    slug = "backup-error"
    title = "Backup failed"


@dataclass(frozen=True)
class Member:
    """One file of the backup: where it goes in the archive, what it is, where it came from."""

    path: str
    role: str
    source: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _named_files(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(setting, path)`` for every ``file`` / ``*_file`` key of the TOML, nested tables too."""
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _named_files(value, f"{name}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from _named_files(item, f"{name}[{i}].")
        elif isinstance(value, str) and (key == "file" or key.endswith("_file")):
            yield name, value


def _archive_path(path: Path, base: Path) -> str:
    """Inside the config's directory: its relative path; elsewhere: ``external/<absolute>``."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(base.resolve()).as_posix()
    except ValueError:
        return "external" + resolved.as_posix()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BackupError(f"{what}: cannot read {path}: {exc.strerror}") from exc


def collect(
    config: Path, settings: Settings, env: Mapping[str, str], *, default_key: Path
) -> list[Member]:
    """The config file, the files it names and the log privacy key (module docstring);
    ``default_key``: where the service looks for the key when none is configured
    (``signer.translog.log.privacy_key_path``)."""
    base = config.parent
    text = _read(config, "config file")
    members = {config.name: Member(config.name, "configuration", str(config.resolve()), text)}
    raw = tomllib.loads(text.decode("utf-8"))
    for setting, value in _named_files(raw):
        if setting in NOT_BACKED_UP:
            continue
        path = base / value
        role = PRIVACY_KEY_ROLE if setting == "log.privacy_key_file" else setting
        where = _archive_path(path, base)
        members.setdefault(where, Member(where, role, str(path.resolve()), _read(path, setting)))
    if not any(m.role == PRIVACY_KEY_ROLE for m in members.values()):
        members["log-privacy.key"] = _privacy_key(raw, settings, env, default_key)
    return list(members.values())


def _privacy_key(
    raw: Mapping[str, Any], settings: Settings, env: Mapping[str, str], default: Path
) -> Member:
    """The key the service uses when the config file names no key file: from the environment
    (its variable, or a ``QES__LOG__…`` override), else the development default file."""
    var = raw.get("log", {}).get("privacy_key_env", "QES_LOG_PRIVACY_KEY")
    if settings.log.privacy_key is not None:
        value = settings.log.privacy_key.reveal().encode() + b"\n"
        source = f"${var}" if env.get(var) else "log.privacy_key_file (environment override)"
        return Member("log-privacy.key", PRIVACY_KEY_ROLE, source, value)
    data = _read(default, "log privacy key (no log.privacy_key_file, no $" + var + ")")
    return Member("log-privacy.key", PRIVACY_KEY_ROLE, str(default.resolve()), data)


def _key(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase)


def seal(members: list[Member], passphrase: bytes, now: datetime | None = None) -> bytes:
    """The encrypted archive of ``members`` with their manifest."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must be at least {MIN_PASSPHRASE} bytes")
    manifest = {
        "format": MAGIC.decode().strip(),
        "created": (now or datetime.now(UTC)).isoformat(),
        "files": [
            {"path": m.path, "role": m.role, "source": m.source, "sha256": m.sha256}
            for m in members
        ],
    }
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w:gz") as tar:
        for name, data in [(MANIFEST, json.dumps(manifest, indent=1).encode())] + [
            (m.path, m.data) for m in members
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    salt, nonce = secrets.token_bytes(SALT_BYTES), secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(_key(passphrase, salt)).encrypt(nonce, plain.getvalue(), MAGIC)
    return MAGIC + salt + nonce + sealed


def open_sealed(blob: bytes, passphrase: bytes) -> tuple[dict[str, Any], list[Member]]:
    """Decrypt and check an archive: its manifest and its members, each SHA-256 verified."""
    if not blob.startswith(MAGIC):
        raise BackupError("not a qes-signer configuration backup")
    rest = blob[len(MAGIC) :]
    salt, nonce, sealed = (
        rest[:SALT_BYTES],
        rest[SALT_BYTES : SALT_BYTES + NONCE_BYTES],
        rest[SALT_BYTES + NONCE_BYTES :],
    )
    try:
        plain = AESGCM(_key(passphrase, salt)).decrypt(nonce, sealed, MAGIC)
    except InvalidTag as exc:
        raise BackupError("wrong passphrase, or the backup was changed") from exc
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m) for m in tar.getmembers() if m.isfile()}
        data = {name: f.read() for name, f in files.items() if f is not None}
    manifest = json.loads(data.pop(MANIFEST))
    members = []
    for entry in manifest["files"]:
        member = Member(entry["path"], entry["role"], entry["source"], data.get(entry["path"], b""))
        if member.sha256 != entry["sha256"]:
            raise BackupError(f"{entry['path']}: SHA-256 does not match the manifest")
        members.append(member)
    return manifest, members


def restore(members: list[Member], target: Path) -> list[Path]:
    """Write ``members`` under ``target`` (created, or empty), mode 0600; returns the paths."""
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: restore into a fresh directory")
    written = []
    for member in members:
        relative = PurePosixPath(member.path)
        if relative.is_absolute() or ".." in relative.parts:
            raise BackupError(f"{member.path}: not a path inside the backup")
        path = target.joinpath(*relative.parts)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(member.data)
        written.append(path)
    target.chmod(0o700)
    return written
