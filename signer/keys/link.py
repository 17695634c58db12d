"""One live connection to one member of the HSM group: module epoch, login, worker sessions.

An :class:`~signer.keys.Hsm` works through exactly one link at a time. When the HSM dies or
hangs, the link is retired (no new hop is sent to it) and a new one opened, on the same member
after re-initialising its module or on the next member of the HA group. A retired link is
closed only once its last running hop has returned: a hop stuck in a hung HSM runs to its end
when the HSM resumes (it destroys its own ephemeral keys on the way), and closing its sessions
afterwards destroys any session object left (PKCS#11 v2.40 §5.6 C_CloseSession).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pkcs11.exceptions import GeneralError, MultipleTokensReturned, NoSuchToken, PKCS11Error

from signer import metrics
from signer.errors import HsmUnavailable
from signer.keys._context import holding
from signer.keys._module import (
    _LOCK,
    _LOGIN_BACKOFF,
    CKS_RO_USER_FUNCTIONS,
    CKS_RW_USER_FUNCTIONS,
    Module,
    _Login,
    load_module,
)
from signer.keys.session import HsmSession
from signer.keys.types import HsmMember

if TYPE_CHECKING:
    from signer.keys._recycle import ObjectBudget
    from signer.keys.types import HsmSettings
    from signer.secrets import Secret


class LinkOwner(Protocol):
    """What a link needs of its pool (``Hsm``): the settings, the token-object lock, the
    object budget and the record of live ephemeral keys. A Protocol, so this module never
    imports the pool that imports it."""

    @property
    def settings(self) -> HsmSettings: ...
    @property
    def token_objects(self) -> threading.RLock: ...
    @property
    def object_budget(self) -> ObjectBudget: ...
    def _track(self, key_id: bytes, private_handle: int, public_handle: int, link: int) -> None: ...
    def _untrack(self, key_id: bytes) -> None: ...
    def _stale(self, max_age_seconds: float, link: int) -> Iterator[tuple[bytes, int, int]]: ...


T = TypeVar("T")
_IDS = itertools.count(1)


class Link:
    """Worker sessions on one member, each with its own worker thread (one hop at a time)."""

    def __init__(
        self, owner: LinkOwner, member: HsmMember, module: Module, epoch: int, login: _Login
    ) -> None:
        """Internal: use :meth:`open`, which does the I/O."""
        self.id = next(_IDS)
        self.owner = owner
        self.member = member
        self.module = module
        self.epoch = epoch
        self.login = login
        self.sessions: list[HsmSession] = []
        self.free: queue.SimpleQueue[HsmSession] = queue.SimpleQueue()
        self.executor = ThreadPoolExecutor(
            max_workers=owner.settings.sessions, thread_name_prefix=f"hsm{self.id}"
        )
        self._inflight = 0
        self._idle = threading.Condition()
        self.closed = False

    # -- what HsmSession asks of its owner -------------------------------------------------------

    @property
    def token_label(self) -> str:
        return self.member.token_label

    @property
    def token_objects(self) -> threading.RLock:
        return self.owner.token_objects

    def _track(self, key_id: bytes, private_handle: int, public_handle: int) -> None:
        self.owner._track(key_id, private_handle, public_handle, self.id)

    def _untrack(self, key_id: bytes) -> None:
        self.owner._untrack(key_id)

    def _stale(self, max_age_seconds: float) -> Iterator[tuple[bytes, int, int]]:
        return self.owner._stale(max_age_seconds, self.id)

    def _forget_token_key(self, label: str) -> None:
        for session in self.sessions:
            session._token_keys.pop(label, None)

    # -- life ------------------------------------------------------------------------------------

    @classmethod
    def open(cls, owner: LinkOwner, member: HsmMember, pin: Secret, sessions: int) -> Link:
        """Load ``member``'s module (once per process), log in, open ``sessions`` sessions.

        Blocking. Every failure raises HsmUnavailable naming it."""
        module = load_module(member.module, member.module_env)
        with _LOCK, module.one_call():
            epoch = module.epoch
            token = _find_token(module, member.token_label)
            try:
                login = module.login(token, pin)
            except PKCS11Error as exc:
                raise HsmUnavailable(f"cannot log in to {member.describe()}") from exc
        link = cls(owner, member, module, epoch, login)
        opened: list[Any] = []
        try:
            for _ in range(sessions):
                with module.one_call():
                    opened.append(token.open(rw=True))
        except PKCS11Error as exc:
            link._close_p11(opened)
            link.executor.shutdown(wait=False)
            raise HsmUnavailable(f"cannot open {sessions} sessions on {member.describe()}") from exc
        link.sessions = [HsmSession(link, s, module, owner.settings.curve) for s in opened]
        for session in link.sessions:
            link.free.put(session)
        return link

    def call(self, fn: Callable[[HsmSession], T]) -> T:
        """Run ``fn`` on this worker thread's session (the body of one hop)."""
        with self.owner.object_budget.hop():
            with self._idle:
                self._inflight += 1
            session = self.free.get_nowait()  # never empty: one session per worker thread
            try:
                with holding(session), self.module.one_call():
                    return fn(session)
            except PKCS11Error as exc:
                metrics.HSM_ERRORS.inc()
                raise HsmUnavailable(f"PKCS#11 call failed: {type(exc).__name__} {exc}") from exc
            finally:
                self.free.put(session)
                with self._idle:
                    self._inflight -= 1
                    self._idle.notify_all()

    def renew(self, pin: Secret, sessions: int) -> bool:
        """Renew the module's library instance under this link, which no hop uses now (the
        object budget holds them back): close the sessions, C_Finalize and C_Initialize, log in
        again and open fresh sessions, as new HsmSession objects so no key bound to an old
        session or handle is used again (PKCS#11 v2.40 §5.4, §5.6). False, doing nothing, if
        another Hsm of the process shares the login (and so the library instance)."""
        if self.login.refs > 1 or self.closed:
            return False
        self._close_p11([s._p11 for s in self.sessions])
        epoch = self.module.reinitialize(self.epoch)
        with _LOCK, self.module.one_call():
            token = _find_token(self.module, self.member.token_label)
            try:
                self.login = self.module.login(token, pin)
                opened = [token.open(rw=True) for _ in range(sessions)]
            except PKCS11Error as exc:
                raise HsmUnavailable(
                    f"cannot renew the library of {self.member.describe()}"
                ) from exc
        self.epoch = epoch
        while not self.free.empty():
            self.free.get_nowait()
        self.sessions = [
            HsmSession(self, s, self.module, self.owner.settings.curve) for s in opened
        ]
        for session in self.sessions:
            self.free.put(session)
        return True

    def probe(self) -> None:
        """Ask the HSM for real whether the login still stands (C_GetSessionInfo on the login
        session: a round trip to a network HSM). Raises HsmUnavailable saying why not."""
        if self.module.epoch != self.epoch:
            raise HsmUnavailable(f"the module of {self.member.describe()} was re-initialised")
        with self.module.one_call():
            state = self.module.session_state(int(self.login.session.handle))
        if state not in (CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS):
            raise HsmUnavailable(f"{self.member.describe()}: session no longer logged in")

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no hop runs on this link; False if one still runs after ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def close(self) -> None:
        """Close the sessions and release the login; call only when no hop runs. Sessions of
        a module re-initialised since are already gone (and their handles may name new
        sessions now), so they are left alone."""
        if self.closed:
            return
        self.closed = True
        self.executor.shutdown(wait=False)
        self._close_p11([s._p11 for s in self.sessions])

    def _close_p11(self, sessions: list[Any]) -> None:
        with _LOCK:
            current = self.module.epoch == self.epoch
        if current:
            for session in sessions:
                # the HSM went away: they died with it
                with contextlib.suppress(PKCS11Error), self.module.one_call():
                    session.close()
        self.login.release()


def _find_token(module: Module, label: str) -> Any:
    """The token labelled ``label`` (C_GetSlotList, C_GetTokenInfo), looked up again with the
    login's backoff while it is missing or the lookup fails with CKR_GENERAL_ERROR: SoftHSM
    rewrites the token file at every login, and another process reading it meanwhile sees no
    token or a general error (STANDARDS.md §8; measured: a lookup beside a process logging in
    fails more often than not). Only after the last attempt is the token called missing."""
    for delay in (*_LOGIN_BACKOFF, None):
        try:
            return module.lib.get_token(token_label=label)
        except (NoSuchToken, GeneralError) as exc:
            if delay is None:
                raise _lookup_failure(module, label, exc) from exc
            time.sleep(delay)
        except (MultipleTokensReturned, PKCS11Error) as exc:
            raise _lookup_failure(module, label, exc) from exc
    raise AssertionError("unreachable")


class TokenNotFound(HsmUnavailable):
    """The token was not found, or its lookup failed with CKR_GENERAL_ERROR, after the
    lookup's own retries: a wrong label, or SoftHSM hiding it longer while other processes log
    in (:func:`_find_token`)."""


def _lookup_failure(module: Module, label: str, exc: PKCS11Error) -> HsmUnavailable:
    if isinstance(exc, NoSuchToken):
        return TokenNotFound(f"no token labelled {label!r} in PKCS#11 module {module.path}")
    if isinstance(exc, GeneralError):
        return TokenNotFound(f"cannot list tokens of {module.path}: {exc!r}")
    if isinstance(exc, MultipleTokensReturned):
        return HsmUnavailable(f"several tokens labelled {label!r} in {module.path}")
    return HsmUnavailable(f"cannot list tokens of {module.path}: {exc!r}")
