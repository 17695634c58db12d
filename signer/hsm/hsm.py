"""The process's HSM: a bounded pool of PKCS#11 worker sessions behind one thread hop per call.

Thread hops cost more than a P-256 signature in SoftHSM (STANDARDS.md §8), so every caller
batches its HSM work into one callback: ``await hsm.run(lambda s: ...)``. The executor has
exactly ``sessions`` worker threads and the pool exactly ``sessions`` sessions, so a worker
always finds a free session; callers beyond that wait on an asyncio future for a worker, never
blocking the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pkcs11.exceptions import MultipleTokensReturned, NoSuchToken, PKCS11Error

from signer import metrics
from signer.errors import HsmUnavailable
from signer.hsm._context import current_session, holding
from signer.hsm._module import (
    _LOCK,
    CKS_RO_USER_FUNCTIONS,
    CKS_RW_USER_FUNCTIONS,
    Module,
    _Login,
    load_module,
)
from signer.hsm.session import HsmSession
from signer.hsm.types import HsmSettings

T = TypeVar("T")
READY_TIMEOUT = 2.0


class Hsm:
    """One PKCS#11 token used by this process: :meth:`open` it, :meth:`close` it."""

    def __init__(
        self,
        settings: HsmSettings,
        module: Module,
        login: _Login,
        p11_sessions: list[Any],
        clock: Callable[[], float],
    ) -> None:
        """Internal: use :meth:`open`, which does the I/O."""
        self.settings = settings
        self._module = module
        self._login = login
        self._clock = clock
        self._sessions = [HsmSession(self, s, module, settings.curve) for s in p11_sessions]
        self._free: queue.SimpleQueue[HsmSession] = queue.SimpleQueue()
        for session in self._sessions:
            self._free.put(session)
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=settings.sessions, thread_name_prefix="hsm"
        )
        self._live: dict[bytes, tuple[float, int, int]] = {}
        self._live_lock = threading.Lock()
        #: Serialises this process's creation, destruction and listing of token objects (CSC
        #: credential keys): SoftHSM fails concurrent token-object writes from several sessions
        #: of one process with CKR_GENERAL_ERROR and can leave half a key pair behind, and a
        #: listing that meets a half-built object fails (seen under two threads; processes
        #: are kept apart by SoftHSM's own file locks).
        self.token_objects = threading.RLock()

    @property
    def token_label(self) -> str:
        return self.settings.token_label

    @classmethod
    def open(cls, settings: HsmSettings, *, clock: Callable[[], float] = time.monotonic) -> Hsm:
        """Load the module (once per process), log in (once per process), open worker sessions.

        Blocking; at startup call it from a thread or before the loop serves requests. Every
        failure (missing module, unknown token, wrong PIN) raises HsmUnavailable naming it.
        """
        module = load_module(settings.module)
        with _LOCK:
            token = _find_token(module, settings.token_label)
            try:
                login = module.login(token, settings.pin)
            except PKCS11Error as exc:
                raise HsmUnavailable(f"cannot log in to token {settings.token_label!r}") from exc
        opened: list[Any] = []
        try:
            for _ in range(settings.sessions):
                opened.append(token.open(rw=True))
        except PKCS11Error as exc:
            for session in opened:
                session.close()
            login.release()
            raise HsmUnavailable(
                f"cannot open {settings.sessions} sessions on token {settings.token_label!r}"
            ) from exc
        return cls(settings, module, login, opened, clock)

    def close(self) -> None:
        """Wait for running callbacks, close the worker sessions, then release the login.

        Closing a session destroys the session objects it created (PKCS#11 v2.40 §5.6), so
        ephemeral keys still alive die here at the latest. Idempotent.
        """
        executor, self._executor = self._executor, None
        if executor is None:
            return
        executor.shutdown(wait=True)
        try:
            for session in self._sessions:
                session._p11.close()
        finally:
            self._login.release()

    async def run(self, fn: Callable[[HsmSession], T]) -> T:
        """Run ``fn(session)`` on a worker thread holding a free session: one thread hop.

        PKCS#11 errors raised inside become HsmUnavailable (chained). If the awaiting task is
        cancelled, ``fn`` still runs to completion on its worker; its result is dropped.
        """
        executor = self._require_open()
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        try:
            future = loop.run_in_executor(executor, ctx.run, self._call, fn)
        except RuntimeError as exc:  # shut down between the check and the submit
            raise HsmUnavailable("HSM has been closed") from exc
        return await future

    def run_sync(self, fn: Callable[[HsmSession], T]) -> T:
        """Blocking variant of :meth:`run` for CLI and start-up code (not on the event loop)."""
        if current_session() is not None:
            raise RuntimeError("Hsm.run_sync called inside an Hsm.run callback (would deadlock)")
        executor = self._require_open()
        ctx = contextvars.copy_context()
        return executor.submit(ctx.run, self._call, fn).result()

    async def ready(self) -> bool:
        """Readiness: one hop asking C_GetSessionInfo whether the session is logged in.

        False if closed, failing, or if no worker frees up within READY_TIMEOUT seconds.
        """
        if self._executor is None:
            return False
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                return await self.run(self._logged_in)
        except (HsmUnavailable, TimeoutError, RuntimeError):
            return False

    def live_ephemeral_keys(self) -> int:
        """How many ephemeral keys generated through this Hsm are not yet destroyed."""
        with self._live_lock:
            return len(self._live)

    # -- internals -------------------------------------------------------------------------------

    def _require_open(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            raise HsmUnavailable("HSM has been closed")
        return executor

    def _call(self, fn: Callable[[HsmSession], T]) -> T:
        session = self._free.get_nowait()  # never empty: one session per worker thread
        try:
            with holding(session):
                return fn(session)
        except PKCS11Error as exc:
            metrics.HSM_ERRORS.inc()
            raise HsmUnavailable(f"PKCS#11 call failed: {type(exc).__name__} {exc}") from exc
        finally:
            self._free.put(session)

    def _logged_in(self, session: HsmSession) -> bool:
        state = self._module.session_state(session.handle)
        return state in (CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS)

    def _forget_token_key(self, label: str) -> None:
        for session in self._sessions:
            session._token_keys.pop(label, None)

    def _track(self, key_id: bytes, private_handle: int, public_handle: int) -> None:
        with self._live_lock:
            self._live[key_id] = (self._clock(), private_handle, public_handle)

    def _untrack(self, key_id: bytes) -> None:
        with self._live_lock:
            self._live.pop(key_id, None)

    def _stale(self, max_age_seconds: float) -> Iterator[tuple[bytes, int, int]]:
        cutoff = self._clock() - max_age_seconds
        with self._live_lock:
            stale = [(k, p, q) for k, (t, p, q) in self._live.items() if t <= cutoff]
        yield from stale


def _find_token(module: Module, label: str) -> Any:
    try:
        return module.lib.get_token(token_label=label)
    except NoSuchToken as exc:
        raise HsmUnavailable(
            f"no token labelled {label!r} in PKCS#11 module {module.path}"
        ) from exc
    except MultipleTokensReturned as exc:
        raise HsmUnavailable(f"several tokens labelled {label!r} in {module.path}") from exc
    except PKCS11Error as exc:
        raise HsmUnavailable(f"cannot list tokens of {module.path}: {exc!r}") from exc
