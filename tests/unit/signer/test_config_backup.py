"""`qes backup` / `qes restore` of the configuration and the log privacy key
(signer.settings.backup): what goes in, what stays out, and that nothing changed comes back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from signer.settings.backup import (
    MAGIC,
    PRIVACY_KEY_ROLE,
    BackupError,
    Member,
    collect,
    open_sealed,
    restore,
    seal,
)
from signer.settings.config import load_settings
from tests.support.service import DEV_CONFIG

PASSPHRASE = b"a passphrase for the unit test"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The development config with a privacy key file outside its directory and an anchor."""
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    shutil.copy(DEV_CONFIG.parent / "policy.toml", etc)
    (elsewhere / "privacy.key").write_text("00112233445566778899\n")
    (etc / "anchor.json").write_text("{}")
    path = etc / "qes.toml"
    path.write_text(
        DEV_CONFIG.read_text()
        + f'\n[log]\nprivacy_key_file = "{elsewhere / "privacy.key"}"\n'
        + 'anchor_file = "anchor.json"\n'
    )
    return path


def _members(config: Path) -> list[Member]:
    env = {"QES_HSM_PIN": "1234"}
    return collect(config, load_settings(config, env), env, default_key=config / "unused")


def test_the_config_the_files_it_names_and_the_privacy_key_go_in_not_the_anchor(
    config: Path,
) -> None:
    members = {m.path: m for m in _members(config)}
    key_path = "external" + (config.parent.parent / "elsewhere" / "privacy.key").as_posix()
    assert set(members) == {"qes.toml", "policy.toml", key_path}
    assert members[key_path].role == PRIVACY_KEY_ROLE
    assert members[key_path].data == b"00112233445566778899\n"
    assert members["policy.toml"].role == "policy.file"


def test_sealed_then_restored_byte_for_byte_and_private(config: Path, tmp_path: Path) -> None:
    members = _members(config)
    blob = seal(members, PASSPHRASE)
    assert blob.startswith(MAGIC) and b"00112233445566778899" not in blob
    manifest, opened = open_sealed(blob, PASSPHRASE)
    assert [f["sha256"] for f in manifest["files"]] == [m.sha256 for m in members]
    written = restore(opened, tmp_path / "restored")
    for member, path in zip(members, written, strict=True):
        assert path.read_bytes() == member.data
        assert path.stat().st_mode & 0o077 == 0
    with pytest.raises(BackupError, match="not empty"):
        restore(opened, tmp_path / "restored")


def test_a_changed_byte_a_wrong_or_short_passphrase_are_refused(config: Path) -> None:
    blob = seal(_members(config), PASSPHRASE)
    changed = blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:]
    for sealed, passphrase in ((changed, PASSPHRASE), (blob, b"another passphrase, long")):
        with pytest.raises(BackupError, match="wrong passphrase, or the backup was changed"):
            open_sealed(sealed, passphrase)
    with pytest.raises(BackupError, match="at least 16 bytes"):
        seal(_members(config), b"short")
    with pytest.raises(BackupError, match="not a qes-signer configuration backup"):
        open_sealed(b"PK\x03\x04", PASSPHRASE)


def test_a_member_outside_the_target_is_refused(tmp_path: Path) -> None:
    for path in ("../escape", "/etc/passwd"):
        with pytest.raises(BackupError, match="not a path inside the backup"):
            restore([Member(path, "x", "x", b"")], tmp_path / path.strip("/.").replace("/", "_"))


def test_the_privacy_key_from_the_environment_or_the_default_file(tmp_path: Path) -> None:
    shutil.copy(DEV_CONFIG.parent / "policy.toml", tmp_path)
    config = tmp_path / "qes.toml"
    config.write_text(DEV_CONFIG.read_text())
    default = tmp_path / "data" / "log-privacy.key"
    env = {"QES_HSM_PIN": "1234", "QES_LOG_PRIVACY_KEY": "aabbccddeeff"}
    [key] = [
        m
        for m in collect(config, load_settings(config, env), env, default_key=default)
        if m.role == PRIVACY_KEY_ROLE
    ]
    assert (key.path, key.source, key.data) == (
        "log-privacy.key",
        "$QES_LOG_PRIVACY_KEY",
        b"aabbccddeeff\n",
    )
    env = {"QES_HSM_PIN": "1234"}
    with pytest.raises(BackupError, match="cannot read"):
        collect(config, load_settings(config, env), env, default_key=default)
    default.parent.mkdir()
    default.write_text("0123\n")
    [key] = [
        m
        for m in collect(config, load_settings(config, env), env, default_key=default)
        if m.role == PRIVACY_KEY_ROLE
    ]
    assert (key.source, key.data) == (str(default), b"0123\n")
