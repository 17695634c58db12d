"""`qes backup` and `qes restore`: the configuration and the log privacy key, encrypted
(signer.settings.backup); PostgreSQL is backed up by pgBackRest (deploy/pgbackrest), the CA,
TSA and log keys by the HSM's own procedure (README "Backups and the restore drill")."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from signer.cli.common import WithConfig
from signer.settings.backup import BackupError


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], with_config: WithConfig
) -> None:
    backup = with_config(
        sub.add_parser("backup", help="write the configuration and the log privacy key, encrypted")
    )
    backup.add_argument("--out", required=True, metavar="FILE", help="the archive to write")
    restore = sub.add_parser("restore", help="check a `qes backup` archive and unpack it")
    restore.add_argument("archive", metavar="FILE")
    restore.add_argument("--to", required=True, metavar="DIR", help="an empty directory")
    for sp in (backup, restore):
        sp.add_argument(
            "--passphrase-file",
            required=True,
            metavar="FILE",
            help="the archive's passphrase (at least 16 bytes; keep it apart from the archive)",
        )
    backup.set_defaults(func=cmd_backup)
    restore.set_defaults(func=cmd_restore)


def _passphrase(path: str) -> bytes:
    try:
        return Path(path).read_bytes().strip()
    except OSError as exc:
        raise BackupError(f"--passphrase-file {path}: {exc.strerror}") from exc


def cmd_backup(args: argparse.Namespace) -> int:
    from signer.cli.common import load
    from signer.settings.backup import collect, seal
    from signer.translog.log import privacy_key_path

    path = args.config or os.environ.get("QES_CONFIG")
    if not path:
        raise BackupError("give the config file (--config or $QES_CONFIG): it is what is backed up")
    settings = load(args)
    members = collect(Path(path), settings, os.environ, default_key=privacy_key_path(settings))
    blob = seal(members, _passphrase(args.passphrase_file))
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise BackupError(f"--out {args.out}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(blob)
        out.flush()
        os.fsync(out.fileno())
    for m in members:
        print(f"{m.sha256}  {m.path}  ({m.role}, from {m.source})")
    print(f"wrote {args.out}: {len(members)} files, AES-256-GCM under the passphrase")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from signer.settings.backup import PRIVACY_KEY_ROLE, open_sealed, restore

    try:
        blob = Path(args.archive).read_bytes()
    except OSError as exc:
        raise BackupError(f"{args.archive}: {exc.strerror}") from exc
    manifest, members = open_sealed(blob, _passphrase(args.passphrase_file))
    written = restore(members, Path(args.to))
    print(f"backup of {manifest['created']}: every file matches its SHA-256")
    for member, path in zip(members, written, strict=True):
        print(f"{path}  ({member.role}, was {member.source})")
    key = next((p for m, p in zip(members, written, strict=True) if m.role == PRIVACY_KEY_ROLE))
    print(
        "Put each file back where it was (or point its setting at it); the log privacy key is"
        f" {key} (log.privacy_key_file, or its content in $QES_LOG_PRIVACY_KEY). Then, with"
        " the database restored (pgBackRest), run `qes audit verify` and `qes audit anchor`."
    )
    return 0
