"""A budget of session objects per PKCS#11 library instance, and the pause that renews it.

SoftHSM 2.6.1 (Debian 12's ``softhsm2``) does not free a destroyed session object:
``C_DestroyObject`` removes it from the session object store's listing but the object itself
stays in the store's ``allObjects`` set until the store is cleared, which happens only in
``C_Finalize`` (closing the sessions or logging out does not free it either; later upstream
versions free it in ``SessionObjectStore::deleteObject``). Every request creates two session
objects (the ephemeral key pair), so a worker kept about 250 bytes of native memory per object
for ever: 6.8 MB/min at 240 signatures/s, not released when idle (issue 17, bench/memsoak.py).

The remedy: after ``hsm.reinitialise_after`` session objects the process renews its library
instance. The :class:`ObjectBudget` lets the running callbacks finish, holds new ones back
(on their worker threads, never on the event loop), then calls the owner's ``reinitialise``:
close the sessions, ``C_Finalize``, ``C_Initialize`` with OS locking, log in, open fresh
sessions (PKCS#11 v2.40 §5.4, §5.6). Session objects live only within one callback
(DESIGN.md: keys die with the hop), so nothing in use is lost; token objects are untouched.
A failed renewal raises HsmUnavailable to the callback that tried it and is tried again by
the next one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

log = structlog.get_logger(__name__)


class ObjectBudget:
    """Counts session objects created through one Hsm; renews the library past ``limit``.

    ``reinitialise`` runs on a worker thread while no callback of the Hsm runs; it returns
    False when it cannot renew (the library is shared with another Hsm of the process), in
    which case the count starts again. ``limit`` 0 never renews.
    """

    def __init__(self, limit: int, reinitialise: Callable[[], bool]) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self._limit = limit
        self._reinitialise = reinitialise
        self._cond = threading.Condition()
        self._active = 0
        self._created = 0
        self._renewing = False
        #: How many times the library was renewed (for tests and diagnostics).
        self.renewals = 0

    def created(self, objects: int) -> None:
        """Record ``objects`` new session objects (called inside a callback)."""
        with self._cond:
            self._created += objects

    @contextmanager
    def hop(self) -> Iterator[None]:
        """Wrap one callback: wait while a renewal runs, renew first when the budget is spent."""
        with self._cond:
            self._cond.wait_for(lambda: not self._renewing)
            if self._limit and self._created >= self._limit:
                self._renew()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def _renew(self) -> None:
        """Holding the condition: wait for the running callbacks, then renew once."""
        self._renewing = True
        try:
            self._cond.wait_for(lambda: self._active == 0)
            created = self._created
            if self._reinitialise():
                self.renewals += 1
                log.info("hsm_library_renewed", session_objects=created, renewals=self.renewals)
            else:
                log.warning("hsm_library_shared_not_renewed", session_objects=created)
            self._created = 0
        finally:
            self._renewing = False
            self._cond.notify_all()
