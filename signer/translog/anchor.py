"""The log never forks silently (issue 14): the newest published checkpoint, kept outside the
database, checked against the database's log.

A checkpoint published to relying parties commits the service to its log prefix (RFC 9162
§2.1: later trees must extend it). A database restored from an old backup, or a failover to
a standby that had not received every commit, can hold fewer entries than a checkpoint already
published; signing on would re-use those indexes for other entries, a fork. So the newest
published checkpoint is also written to ``log.anchor_file`` (a path on storage that does not
fail over with the database: another disk, a mounted object store), and:

- at start, and before each new checkpoint, the database's tree at the anchor's size must have
  the anchor's root (``MTH(D[n])`` from the stored nodes); entries sequenced but not yet
  integrated count as present;
- otherwise the service refuses to sign (503 ``log-behind-checkpoint``) and to publish, and
  says which range is missing; ``qes audit anchor`` tells the operator the choices.

The file holds JSON: origin, size, root (hex) and the signed note. It only moves forward
(an exclusive lock around read-compare-write; written to a temporary file, fsynced, renamed).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from signer.errors import ConfigError, LogBehindCheckpoint
from signer.storage.anchor import AnchorStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Anchored:
    """The newest published checkpoint as the anchor file holds it."""

    origin: str
    size: int
    root: bytes
    note: str


@dataclass(frozen=True)
class AnchorCheck:
    """How the database's log relates to the anchor. ``missing``: the entry range [a, b)
    the database lacks; ``forked``: it holds the anchor's size with another root."""

    anchor: Anchored | None
    sequenced: int
    integrated: int
    missing: tuple[int, int] | None = None
    forked: bool = False

    @property
    def ok(self) -> bool:
        return self.missing is None and not self.forked

    def problem(self) -> str:
        assert self.anchor is not None
        if self.forked:
            return (
                f"the database's log differs from the published checkpoint of size"
                f" {self.anchor.size}: its first {self.anchor.size} entries have another root"
            )
        assert self.missing is not None
        first, end = self.missing
        return (
            f"the database's log is behind the published checkpoint of size {self.anchor.size}:"
            f" entries {first} to {end - 1} ({end - first}) are missing"
        )


def read_anchor(path: Path) -> Anchored | None:
    """The anchor file's checkpoint (None: no file yet); :class:`ConfigError` if unreadable."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"log.anchor_file {path}: unreadable ({exc})") from exc
    try:
        return Anchored(raw["origin"], int(raw["size"]), bytes.fromhex(raw["root"]), raw["note"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"log.anchor_file {path}: not an anchor ({exc})") from exc


class CheckpointAnchor:
    """``log.anchor_file``: read, check against the database, advance."""

    def __init__(self, path: Path, store: AnchorStore) -> None:
        self.path = path
        self._store = store
        self.halted: LogBehindCheckpoint | None = None

    def read(self) -> Anchored | None:
        return read_anchor(self.path)

    async def check(self) -> AnchorCheck:
        """Compare the database's log with the anchor (RFC 9162 §2.1.1 roots)."""
        anchor = self.read()
        sizes = await self._store.sizes()
        result = AnchorCheck(anchor, sizes.sequenced, sizes.integrated)
        if anchor is None or anchor.size == 0:
            return result
        if sizes.integrated >= anchor.size:
            if await self._store.root_at(anchor.size) != anchor.root:
                return AnchorCheck(anchor, sizes.sequenced, sizes.integrated, forked=True)
            return result
        if sizes.sequenced >= anchor.size:
            return result  # not integrated yet: the check before the next checkpoint decides
        return AnchorCheck(
            anchor, sizes.sequenced, sizes.integrated, missing=(sizes.sequenced, anchor.size)
        )

    async def require(self) -> None:
        """:meth:`check`, and halt signing and publishing (raising) when it fails."""
        result = await self.check()
        if result.ok:
            if self.halted is not None:
                log.warning("log_anchor_check_passed", anchor=str(self.path))
            self.halted = None
            return
        message = f"{result.problem()}; run `qes audit anchor` for the choices"
        if self.halted is None or str(self.halted) != message:  # once per new finding
            log.critical("log_behind_checkpoint", problem=result.problem(), anchor=str(self.path))
        self.halted = LogBehindCheckpoint(message)
        raise self.halted

    def refuse_if_halted(self) -> None:
        """For the signing paths: raise while the log is behind its checkpoint."""
        if self.halted is not None:
            raise self.halted

    def advance(
        self, origin: str, size: int, root: bytes, note: str, *, force: bool = False
    ) -> bool:
        """Write a newly published checkpoint, unless the file already holds a larger one
        (another replica was faster); ``force`` also moves it back (``qes audit anchor
        --accept-loss``). Returns whether the file changed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read()
            if current is not None and current.size >= size and not force:
                return False
            body = {"origin": origin, "size": size, "root": root.hex(), "note": note}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as out:
                json.dump(body, out, indent=1)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return True


async def check_anchor_quietly(anchor: CheckpointAnchor) -> None:
    """At start: check, and stay up halted (refusing to sign, /readyz 503) when the log is
    behind; the publisher's loop re-checks, so the service resumes once the operator acted."""
    with contextlib.suppress(LogBehindCheckpoint):  # logged; signing refuses meanwhile
        await anchor.require()
