"""The process's HSM: a bounded pool of PKCS#11 worker sessions behind one thread hop per call.

Thread hops cost more than a P-256 signature in SoftHSM (STANDARDS.md §8), so every caller
batches its HSM work into one callback: ``await hsm.run(lambda s: ...)``. The executor has
exactly ``sessions`` worker threads and the pool exactly ``sessions`` sessions, so a worker
always finds a free session; callers beyond that wait on an asyncio future for a worker, never
blocking the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import structlog

from signer.errors import HsmUnavailable
from signer.keys._context import current_session
from signer.keys._module import _LOCK, Module, load_module
from signer.keys._recycle import ObjectBudget
from signer.keys.health import HsmStats, Recovery
from signer.keys.link import Link, TokenNotFound
from signer.keys.session import HsmSession
from signer.keys.types import HsmMember, HsmSettings

T = TypeVar("T")
READY_TIMEOUT = 2.0
log = structlog.get_logger(__name__)


def _rescan_may_find(exc: HsmUnavailable, module: Module) -> bool:
    """At start, whether re-initialising the module may find a token it did not: SoftHSM reads
    its tokens at C_Initialize only, leaving out one whose file another process's login was
    rewriting then (or one made since), until C_Finalize and C_Initialize. Only while no login
    of this process lives on the module: C_Finalize would end it (PKCS#11 v2.40 §5.4)."""
    return isinstance(exc, TokenNotFound) and not module.logins


class Hsm:
    """The process's HSM (one token, or an HA group of copies): :meth:`open`, :meth:`close`.

    Every hop has a deadline (``hsm.call_timeout_seconds``); a hop that misses it, or fails in
    PKCS#11, raises HsmUnavailable and has :mod:`signer.keys.health` check the HSM and, if it
    is gone or hangs, reconnect by itself (signer.keys.link says what becomes of the keys).
    """

    def __init__(self, settings: HsmSettings, clock: Callable[[], float]) -> None:
        """Internal: use :meth:`open`, which does the I/O."""
        self.settings = settings
        self._clock = clock
        self._link: Link | None = None
        self._closed = False
        self._state = threading.Lock()
        self._down: tuple[str, float] | None = None  # (reason, since)
        self._retired: list[Link] = []
        self.stats = HsmStats()
        self._recovery = Recovery(self)
        self._live: dict[bytes, tuple[float, int, int, int]] = {}
        self._live_lock = threading.Lock()
        #: Renews the library after ``settings.reinitialise_after`` session objects: SoftHSM
        #: 2.6 frees destroyed session objects only in C_Finalize (signer.keys._recycle).
        self.object_budget = ObjectBudget(settings.reinitialise_after, self._renew_library)
        #: Serialises this process's creation, destruction and listing of token objects (CSC
        #: credential keys): SoftHSM fails concurrent token-object writes from several sessions
        #: of one process with CKR_GENERAL_ERROR and can leave half a key pair behind, and a
        #: listing that meets a half-built object fails (seen under two threads; processes
        #: are kept apart by SoftHSM's own file locks).
        self.token_objects = threading.RLock()

    @property
    def token_label(self) -> str:
        return self._current().token_label

    @classmethod
    def open(cls, settings: HsmSettings, *, clock: Callable[[], float] = time.monotonic) -> Hsm:
        """Load the module (once per process), log in (once per process), open worker sessions
        on the first member of the group that answers.

        Blocking; at startup call it from a thread or before the loop serves requests. Every
        failure (missing module, unknown token, wrong PIN) raises HsmUnavailable naming it; a
        token not found is looked for once more after re-initialising the module
        (:func:`_rescan_may_find`; the likely cause of a worker that once failed its start,
        "no token labelled", beside three others starting on the same token). A wrong PIN is
        never retried.
        """
        hsm = cls(settings, clock)
        errors: list[HsmUnavailable] = []
        for index in range(len(settings.members)):
            try:
                hsm._link = hsm._open_member(index)
                return hsm
            except HsmUnavailable as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise HsmUnavailable("; ".join(str(e) for e in errors)) from errors[-1]

    def close(self) -> None:
        """Wait (up to the deadline) for running callbacks, close the worker sessions, then
        release the login. Closing a session destroys the session objects it created (PKCS#11
        v2.40 §5.6), so ephemeral keys still alive die here at the latest. Idempotent."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            links = [link for link in (self._link, *self._retired) if link is not None]
        self._recovery.stop(self.settings.call_timeout_seconds)
        for link in links:
            link.executor.shutdown(wait=False, cancel_futures=True)  # queued hops never run
            if link.wait_idle(self.settings.call_timeout_seconds):
                link.close()
            else:  # stuck in a hung HSM: closed when its hop returns
                self._close_when_idle(link)

    async def run(self, fn: Callable[[HsmSession], T]) -> T:
        """Run ``fn(session)`` on a worker thread holding a free session: one thread hop.

        PKCS#11 errors raised inside become HsmUnavailable (chained), and so does a hop that
        has not returned within ``hsm.call_timeout_seconds`` (it still runs to its end on its
        worker, its result dropped). The same holds if the awaiting task is cancelled.
        """
        link = self._usable()
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        timeout = self.settings.call_timeout_seconds
        try:
            future = loop.run_in_executor(link.executor, ctx.run, link.call, fn)
        except RuntimeError as exc:  # shut down between the check and the submit
            raise HsmUnavailable("HSM has been closed") from exc
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            self._timed_out(link, timeout)
            raise HsmUnavailable(f"the HSM did not answer within {timeout:g} s") from exc
        except HsmUnavailable:
            self._recovery.kick(link, None)
            raise

    def run_sync(self, fn: Callable[[HsmSession], T]) -> T:
        """Blocking variant of :meth:`run` for CLI and start-up code (not on the event loop)."""
        if current_session() is not None:
            raise RuntimeError("Hsm.run_sync called inside an Hsm.run callback (would deadlock)")
        link = self._usable()
        ctx = contextvars.copy_context()
        timeout = self.settings.call_timeout_seconds
        try:
            future = link.executor.submit(ctx.run, link.call, fn)
        except RuntimeError as exc:
            raise HsmUnavailable("HSM has been closed") from exc
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            self._timed_out(link, timeout)
            raise HsmUnavailable(f"the HSM did not answer within {timeout:g} s") from exc
        except HsmUnavailable:
            self._recovery.kick(link, None)
            raise

    async def readiness(self, key_label: str | None = None) -> tuple[bool, str]:
        """Ask the HSM for real: one hop that checks the login (a round trip to a network HSM)
        and, given ``key_label``, finds that token key (C_FindObjects). (ready, reason)."""
        if self._closed:
            return False, "closed"
        down = self._down
        if down is not None:
            return False, f"down for {self._clock() - down[1]:.1f} s: {down[0]}"

        def check(session: HsmSession) -> None:
            self._current().probe()
            if key_label is not None and not session.has_token_key(key_label):
                raise HsmUnavailable(f"token key {key_label!r} not found")

        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self.run(check)
        except TimeoutError:
            return False, f"no free session within {READY_TIMEOUT:g} s"
        except (HsmUnavailable, RuntimeError) as exc:
            return False, str(exc)
        return True, "ok"

    async def ready(self, key_label: str | None = None) -> bool:
        """Readiness as a bool (see :meth:`readiness`)."""
        return (await self.readiness(key_label))[0]

    def status(self) -> dict[str, object]:
        """What the process knows about its HSM now (for logs, /readyz and metrics)."""
        down = self._down
        link = self._link
        return {
            "state": "closed" if self._closed else ("down" if down else "up"),
            "reason": down[0] if down else None,
            "member": link.member.describe() if link else None,
            "live_ephemeral_keys": self.live_ephemeral_keys(),
            **self.stats.snapshot(),
        }

    def live_ephemeral_keys(self) -> int:
        """How many ephemeral keys generated through this Hsm are not yet destroyed."""
        with self._live_lock:
            return len(self._live)

    # -- internals: the link and its health ------------------------------------------------------

    def _current(self) -> Link:
        link = self._link
        if link is None:
            raise HsmUnavailable("HSM has not been opened")
        return link

    def _usable(self) -> Link:
        if self._closed:
            raise HsmUnavailable("HSM has been closed")
        down = self._down
        if down is not None:
            raise HsmUnavailable(f"HSM unavailable: {down[0]}")
        return self._current()

    def _open_member(self, index: int) -> Link:
        """A probed link on member ``index``; if that fails (a module whose HSM died keeps
        failing until re-initialised), re-initialise its module once no hop runs on it, and
        try again."""
        member = self.settings.members[index]
        module = load_module(member.module, member.module_env)
        epoch = module.epoch
        try:
            return self._probed(member)
        except HsmUnavailable as exc:
            if self._link is None and not _rescan_may_find(exc, module):
                raise  # at start: report the error as it is (wrong PIN, ...)
            first = exc
        if not self._idle_on(member.module, self.settings.call_timeout_seconds):
            raise HsmUnavailable(f"{member.describe()}: calls still stuck in it") from first
        module.reinitialize(epoch)
        return self._probed(member)

    def _renew_library(self) -> bool:
        """The object budget's renewal, with no hop running: renew the current link in place
        (signer.keys._recycle). Not while an outage is handled or a retired link is still
        being closed (their sessions are the module's too); the budget asks again later."""
        with self._state:
            link, busy = self._link, self._down is not None or bool(self._retired)
        if link is None or busy or self._closed:
            return False
        if not link.renew(self.settings.pin, self.settings.sessions):
            return False
        dropped = self._forget_link_keys(link.id)  # session objects all died with C_Finalize
        log.info("hsm_link_renewed", member=link.member.describe(), keys_closed=dropped)
        return True

    def _probed(self, member: HsmMember) -> Link:
        link = self._try_open(member)
        try:
            link.probe()
        except HsmUnavailable:
            self._retire(link)
            raise
        return link

    def _try_open(self, member: HsmMember) -> Link:
        if self._closed:
            raise HsmUnavailable("HSM has been closed")
        return Link.open(self, member, self.settings.pin, self.settings.sessions)

    def _idle_on(self, module_path: str, timeout: float) -> bool:
        """Wait until no hop runs on any link of ``module_path`` (before re-initialising it)."""
        with self._state:
            links = [
                link
                for link in (self._link, *self._retired)
                if link is not None and link.member.module == module_path
            ]
        deadline = time.monotonic() + timeout
        return all(link.wait_idle(max(0.0, deadline - time.monotonic())) for link in links)

    def _timed_out(self, link: Link, timeout: float) -> None:
        """A hop missed its deadline: the HSM counts as down at once (the hops queued behind
        it fail now instead of waiting a deadline each) until the probe hears from it."""
        self.stats.calls_timed_out += 1
        log.warning("hsm_call_timed_out", member=link.member.describe(), timeout=timeout)
        reason = f"no answer within {timeout:g} s"
        self._mark_down(link, reason)
        self._recovery.kick(link, reason)

    def _mark_down(self, link: Link, reason: str) -> None:
        with self._state:
            if self._down is not None or link is not self._link:
                return
            self._down = (reason, self._clock())
        self.stats.outages += 1
        log.error("hsm_down", member=link.member.describe(), reason=reason)

    def _mark_up(self, link: Link) -> None:
        with self._state:
            down, self._down = self._down, None
        if down is not None:
            self.stats.reconnects += 1
            log.warning(
                "hsm_recovered",
                member=link.member.describe(),
                after_seconds=round(self._clock() - down[1], 3),
                how="resumed",
            )
        self._destroy_overdue(link)

    def _swap(self, failed: Link, new: Link) -> None:
        """Make ``new`` the link; ``failed`` is closed once its last hop returned."""
        with self._state:
            if self._closed:
                closed = True
            else:
                closed = False
                self._link = new
                down, self._down = self._down, None
        if closed:
            self._retire(new)
            return
        self._retire(failed)
        self.stats.reconnects += 1
        moved = new.member != failed.member
        if moved:
            self.stats.failovers += 1
        since = down[1] if down else self._clock()
        log.warning(
            "hsm_failover" if moved else "hsm_recovered",
            member=new.member.describe(),
            previous=failed.member.describe(),
            after_seconds=round(self._clock() - since, 3),
            how="reconnected",
        )

    def _retire(self, link: Link) -> None:
        with self._state:
            if link is self._link or link in self._retired or link.closed:
                return
            self._retired.append(link)
        self._close_when_idle(link)

    def _close_when_idle(self, link: Link) -> None:
        def reap() -> None:
            link.wait_idle(None)  # type: ignore[arg-type]
            with _LOCK:
                link.close()
            with self._state:
                if link in self._retired:
                    self._retired.remove(link)
            dropped = self._forget_link_keys(link.id)
            self.stats.links_closed += 1
            log.info("hsm_link_closed", member=link.member.describe(), keys_closed=dropped)

        threading.Thread(target=reap, name="hsm-reaper", daemon=True).start()

    def _destroy_overdue(self, link: Link) -> None:
        """After an outage: destroy keys older than the deadline (their requests have failed;
        a hop that resumed normally destroyed its own already)."""

        def sweep(session: HsmSession) -> int:
            return session.destroy_stale(self.settings.call_timeout_seconds)

        try:
            future = link.executor.submit(link.call, sweep)
        except RuntimeError:
            return
        future.add_done_callback(_log_sweep)

    # -- ephemeral key bookkeeping (HsmSession reports through its Link) -------------------------

    def _track(self, key_id: bytes, private_handle: int, public_handle: int, link: int) -> None:
        self.object_budget.created(2)
        with self._live_lock:
            self._live[key_id] = (self._clock(), private_handle, public_handle, link)

    def _untrack(self, key_id: bytes) -> None:
        with self._live_lock:
            self._live.pop(key_id, None)

    def _stale(self, max_age_seconds: float, link: int) -> Iterator[tuple[bytes, int, int]]:
        cutoff = self._clock() - max_age_seconds
        with self._live_lock:
            stale = [
                (k, p, q) for k, (t, p, q, li) in self._live.items() if t <= cutoff and li == link
            ]
        yield from stale

    def _forget_link_keys(self, link: int) -> int:
        """Keys of a closed link died with its sessions (or with the HSM process)."""
        with self._live_lock:
            gone = [k for k, v in self._live.items() if v[3] == link]
            for key_id in gone:
                del self._live[key_id]
        return len(gone)


def _log_sweep(future: concurrent.futures.Future[int]) -> None:
    try:
        count = future.result()
    except Exception as exc:  # the HSM failed again: the next recovery sweeps
        log.warning("hsm_overdue_keys_not_swept", error=str(exc))
        return
    if count:
        log.warning("hsm_overdue_keys_destroyed", count=count)
