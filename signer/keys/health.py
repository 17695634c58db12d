"""Noticing that the HSM died or hangs, and getting it back without a restart.

A hop that misses its deadline or fails with a PKCS#11 error *kicks* the recovery thread. It
asks the HSM for real (:meth:`Link.probe`, bounded by a deadline). An answer means the HSM is
fine (the hop was slow for another reason, e.g. a database commit inside it) and nothing
changes. No answer, or an error, marks the HSM down: hops then fail at once with
HsmUnavailable naming the reason, and the thread reconnects with backoff (0.1 s doubling up to
``hsm.reconnect_max_seconds``): first to the next member of the HA group, last to the same
member after re-initialising its module (a dead network HSM's client reconnects only so). A
hung member is never re-initialised under a call stuck in it; it is skipped until that call
returns (the HSM resumed or died).

Counters in :class:`HsmStats` and structlog events (``hsm_down``, ``hsm_reconnect_failed``,
``hsm_recovered``, ``hsm_failover``, ``hsm_link_closed``) say what happened; the metrics
endpoint can export the counters as they are.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import structlog

from signer.errors import HsmUnavailable
from signer.keys.link import Link

if TYPE_CHECKING:
    from signer.keys.types import HsmSettings


class RecoveryOwner(Protocol):
    """What recovery needs of its pool (``Hsm``): its settings and counters, its current link,
    and the moves between links. A Protocol, so this module never imports the pool that
    imports it."""

    stats: HsmStats

    @property
    def settings(self) -> HsmSettings: ...
    def _current(self) -> Link: ...
    def _open_member(self, index: int) -> Link: ...
    def _mark_down(self, link: Link, reason: str) -> None: ...
    def _mark_up(self, link: Link) -> None: ...
    def _swap(self, failed: Link, new: Link) -> None: ...
    def _retire(self, link: Link) -> None: ...


log = structlog.get_logger(__name__)
T = TypeVar("T")
FIRST_DELAY = 0.1
PROBE_TIMEOUT = 3.0


@dataclass
class HsmStats:
    """Plain counters of this process's HSM troubles (monotonic; read with :meth:`snapshot`)."""

    calls_timed_out: int = 0
    outages: int = 0
    reconnect_attempts: int = 0
    reconnects: int = 0
    failovers: int = 0
    links_closed: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Bounded(Generic[T]):
    """The outcome of :func:`bounded`: a value, an error, or nothing yet (``timed_out``)."""

    value: T | None = None
    error: BaseException | None = None
    timed_out: bool = False


def bounded(
    fn: Callable[[], T], timeout: float, on_late: Callable[[T], None] | None = None
) -> _Bounded[T]:
    """Run ``fn`` on a fresh daemon thread and wait at most ``timeout`` seconds for it.

    A PKCS#11 call into a hung HSM cannot be interrupted; the thread stays behind until the
    HSM answers or dies. If it then returns a value nobody waited for, ``on_late`` gets it (to
    close a link opened too late)."""
    outcome: _Bounded[T] = _Bounded()
    done = threading.Event()
    lock = threading.Lock()

    def target() -> None:
        try:
            value = fn()
        except BaseException as exc:  # handed to the waiter
            outcome.error = exc
            done.set()
            return
        with lock:
            late = outcome.timed_out
            outcome.value = value
        if late and on_late is not None:
            on_late(value)
        done.set()

    threading.Thread(target=target, name="hsm-bounded", daemon=True).start()
    if not done.wait(timeout):
        with lock:
            if not done.is_set():
                outcome.timed_out = True
    return outcome


class Recovery:
    """The one recovery thread of an :class:`~signer.keys.Hsm` (started on demand)."""

    def __init__(self, hsm: RecoveryOwner) -> None:
        self._hsm = hsm
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        #: Members with bounded calls still running (stuck in a hung HSM), and how many.
        self._busy: Counter[int] = Counter()

    def kick(self, link: Link, reason: str | None) -> None:
        """Check ``link`` (the one a hop failed on) unless a check is already running."""
        with self._lock:
            if self._stop.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(
                target=self._run, args=(reason,), name="hsm-recovery", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self, reason: str | None) -> None:
        try:
            self._recover(reason)
        except Exception:  # a bug here must not end recovery silently
            log.exception("hsm_recovery_crashed")

    def _recover(self, reason: str | None) -> None:
        hsm = self._hsm
        delay = FIRST_DELAY
        while not self._stop.is_set():
            link = hsm._current()
            probe_timeout = min(hsm.settings.call_timeout_seconds, PROBE_TIMEOUT)
            if self._busy[hsm.settings.members.index(link.member)]:
                outcome: _Bounded[None] = _Bounded(timed_out=True)  # the last probe still hangs
            else:
                outcome = self._on_member(link, link.probe, probe_timeout)
            if not outcome.timed_out and outcome.error is None:
                hsm._mark_up(link)
                return
            why = reason or _describe(outcome, probe_timeout)
            reason = None
            hsm._mark_down(link, why)
            if self._reconnect(link, hung=outcome.timed_out):
                return
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, hsm.settings.reconnect_max_seconds)

    def _reconnect(self, failed: Link, *, hung: bool) -> bool:
        """Open a link on the next usable member (the failed one last); True on success."""
        hsm = self._hsm
        members = hsm.settings.members
        start = members.index(failed.member)
        for step in range(1, len(members) + 1):
            index = (start + step) % len(members)
            if self._busy[index] or (index == start and hung):
                continue  # a call is stuck in it: wait until it answers or dies
            hsm.stats.reconnect_attempts += 1
            timeout = hsm.settings.call_timeout_seconds
            outcome = self._on_member_index(
                index, functools.partial(hsm._open_member, index), timeout
            )
            if outcome.value is not None:
                hsm._swap(failed, outcome.value)
                return True
            log.warning(
                "hsm_reconnect_failed",
                member=members[index].describe(),
                error=_describe(outcome, timeout),
            )
        return False

    def _on_member(self, link: Link, fn: Callable[[], T], timeout: float) -> _Bounded[T]:
        index = self._hsm.settings.members.index(link.member)
        return self._on_member_index(index, fn, timeout)

    def _on_member_index(self, index: int, fn: Callable[[], T], timeout: float) -> _Bounded[T]:
        """``bounded(fn)``; the member counts as busy until ``fn`` returns, however late."""
        with self._lock:
            self._busy[index] += 1
        hsm = self._hsm

        def guarded() -> T:
            try:
                return fn()
            finally:
                with self._lock:
                    self._busy[index] -= 1

        def late(value: T) -> None:
            if isinstance(value, Link):  # opened after we gave up on it: nobody will use it
                hsm._retire(value)

        return bounded(guarded, timeout, on_late=late)


def _describe(outcome: _Bounded[Any], timeout: float) -> str:
    if outcome.timed_out:
        return f"no answer within {timeout:g} s"
    error = outcome.error
    if isinstance(error, HsmUnavailable):
        return str(error)
    return f"{type(error).__name__}: {error}"
