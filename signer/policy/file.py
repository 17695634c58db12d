"""The policy file on disk, reloaded without a restart.

Every process checks the file every ``reload_seconds``: a cheap ``stat`` first, and only when
its modification time or size moved, a read and a SHA-256 of the content. New content that
parses and validates replaces the policy in one reference assignment (requests see the old or
the new rule set, never a mix); content that does not is logged as ``policy rejected: line N:
…`` and the rule set in force stays. At start a missing or invalid file stops the service
(there is no older rule set to keep).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from signer.errors import ConfigError
from signer.policy.rules import Policy, PolicyFileError, parse_policy

log = structlog.get_logger(__name__)

__all__ = ["PolicyFile", "PolicyStatus", "load_policy_file"]


def load_policy_file(path: Path) -> Policy:
    """Read and validate ``path``; :class:`PolicyFileError` names the line, ConfigError an
    unreadable file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"policy file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyFileError(0, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return parse_policy(text)


@dataclass(frozen=True)
class _Seen:
    mtime_ns: int
    size: int
    sha256: bytes


@dataclass(frozen=True)
class PolicyStatus:
    """What this process enforces (for operators: did my edit take, on this replica?)."""

    file: str
    sha256: str
    rules: tuple[str, ...]
    loaded_at: datetime
    #: The last version refused since then ("line N: …"), None when the file is in force.
    rejected: str | None


class PolicyFile:
    """The policy in force for one process; ``current`` is read on every request (no I/O)."""

    def __init__(
        self,
        path: Path,
        *,
        interval: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._path = path
        self._interval = interval
        self._clock = clock
        self._policy: Policy | None = None
        self._seen: _Seen | None = None
        self._status: PolicyStatus | None = None

    @property
    def status(self) -> PolicyStatus:
        if self._status is None:
            raise RuntimeError("policy not loaded: call load() first")
        return self._status

    @property
    def path(self) -> Path:
        return self._path

    @property
    def current(self) -> Policy:
        if self._policy is None:
            raise RuntimeError("policy not loaded: call load() first")
        return self._policy

    def load(self) -> Policy:
        """The first load (at start): errors propagate and stop the start."""
        stat = self._stat()
        if stat is None:
            raise ConfigError(f"policy.file: {self._path} does not exist")
        text = self._read()
        policy = parse_policy(text)
        self._swap(policy, _Seen(stat[0], stat[1], hashlib.sha256(text.encode()).digest()))
        return policy

    def check(self) -> bool:
        """Reload when the file changed; True when a new policy was swapped in. Never raises
        for a bad or missing file: that is logged and the old policy stays."""
        stat = self._stat()
        if stat is None:
            if self._seen is not None and self._seen.size >= 0:
                self._reject(f"{self._path} is missing; keeping the old policy")
                self._seen = _Seen(-1, -1, b"")
            return False
        if self._seen is not None and (stat[0], stat[1]) == (self._seen.mtime_ns, self._seen.size):
            return False
        try:
            text = self._read()
        except (ConfigError, PolicyFileError) as exc:
            self._reject(str(exc))
            return False
        digest = hashlib.sha256(text.encode()).digest()
        seen = _Seen(stat[0], stat[1], digest)
        if self._seen is not None and digest == self._seen.sha256:
            self._seen = seen  # touched, not changed
            return False
        self._seen = seen  # a rejected version is reported once, not every second
        try:
            policy = parse_policy(text)
        except PolicyFileError as exc:
            self._reject(str(exc), line=exc.line)
            return False
        self._swap(policy, seen)
        return True

    def _reject(self, why: str, *, line: int | None = None) -> None:
        log.error(f"policy rejected: {why}", file=str(self._path), line=line)
        if self._status is not None:
            self._status = dataclasses.replace(self._status, rejected=why)

    async def run(self, after: Callable[[], Awaitable[None]] | None = None) -> None:
        """Check the file forever (a task owned by the app's cleanup context); ``after`` runs
        first and after every check (the transparency log of what took effect)."""
        while True:
            try:
                if after is not None:
                    await after()
            except Exception:  # a bug here must not stop the reloads
                log.exception("policy_logging_failed")
            await asyncio.sleep(self._interval)
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # a bug here must not stop the reloads
                log.exception("policy_reload_failed")

    def _swap(self, policy: Policy, seen: _Seen) -> None:
        self._policy = policy
        self._seen = seen
        self._status = PolicyStatus(
            file=str(self._path),
            sha256=seen.sha256.hex(),
            rules=tuple(r.name for r in policy.rules),
            loaded_at=self._clock(),
            rejected=None,
        )
        log.info(
            "policy loaded",
            file=str(self._path),
            rules=len(policy.rules),
            sha256=seen.sha256.hex(),
        )

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _read(self) -> str:
        try:
            raw = self._path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"policy file {self._path}: {exc.strerror or exc}") from exc
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyFileError(0, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
