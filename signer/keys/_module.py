"""Loading a PKCS#11 module once per process, with OS locking, and the process's login session.

python-pkcs11 0.10.1 calls ``C_Initialize(NULL)``. SoftHSM2 then runs without internal mutexes
while python-pkcs11 releases the GIL around every call, so two threads with two sessions crash
the process (STANDARDS.md §8; python-pkcs11 issue #171). The remedy used here: right after
``pkcs11.lib(path)`` and before any session is opened, call the *same* library's
``C_Finalize(NULL)`` and ``C_Initialize`` with ``CK_C_INITIALIZE_ARGS.flags = CKF_OS_LOCKING_OK``
through ``ctypes`` (PKCS#11 v2.40 §5.4, C_Initialize; ``dlopen`` of the same path returns the same
library instance, so python-pkcs11's function list keeps working).

The login state belongs to the application, not to a session (PKCS#11 v2.40 §5.6 C_Login,
C_CloseSession): one logged-in session per (module, slot) is kept for the process's life and
shared, reference-counted, by every :class:`~signer.keys.Hsm` of the process. Closing the last
session logs the application out and destroys every session object.
"""

from __future__ import annotations

import contextlib
import ctypes
import hmac
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pkcs11
from pkcs11.exceptions import PKCS11Error

from signer.errors import HsmUnavailable
from signer.secrets import Secret

CKF_OS_LOCKING_OK = 0x2
CKU_USER = 1
CKR_OK = 0x0
CKR_GENERAL_ERROR = 0x5
CKR_OBJECT_HANDLE_INVALID = 0x82
CKR_PIN_INCORRECT = 0xA0
CKR_PIN_LOCKED = 0xA4
CKR_USER_ALREADY_LOGGED_IN = 0x100
CKS_RO_USER_FUNCTIONS = 1
CKS_RW_USER_FUNCTIONS = 3
CKA_CLASS = 0x0
_LOGIN_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8)


class _InitArgs(ctypes.Structure):
    """``CK_C_INITIALIZE_ARGS`` (PKCS#11 v2.40 §3.6)."""

    _fields_ = (
        ("create_mutex", ctypes.c_void_p),
        ("destroy_mutex", ctypes.c_void_p),
        ("lock_mutex", ctypes.c_void_p),
        ("unlock_mutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("reserved", ctypes.c_void_p),
    )


class _SessionInfo(ctypes.Structure):
    """``CK_SESSION_INFO`` (PKCS#11 v2.40 §3.6)."""

    _fields_ = (
        ("slot_id", ctypes.c_ulong),
        ("state", ctypes.c_ulong),
        ("flags", ctypes.c_ulong),
        ("device_error", ctypes.c_ulong),
    )


class _Attribute(ctypes.Structure):
    """``CK_ATTRIBUTE`` (PKCS#11 v2.40 §4.1)."""

    _fields_ = (
        ("type", ctypes.c_ulong),
        ("value", ctypes.c_void_p),
        ("length", ctypes.c_ulong),
    )


@dataclass
class Module:
    """One loaded and OS-locking-initialised PKCS#11 module in this process.

    ``epoch`` counts re-initialisations (:meth:`reinitialize`): a login or session of an older
    epoch is dead, and whoever notices a dead module first re-initialises it once for all.
    """

    path: str
    lib: Any  # pkcs11._pkcs11.lib
    c: FunctionList
    pid: int
    logins: dict[int, _Login] = field(default_factory=dict)
    env: tuple[tuple[str, str], ...] = ()
    epoch: int = 0
    #: One call into the module at a time (:func:`serializes`); re-entrant for nested use.
    serialized: bool = False
    calls: threading.RLock = field(default_factory=threading.RLock)

    def one_call(self) -> contextlib.AbstractContextManager[Any]:
        """Hold while calling into the module: the module's lock if it is ``serialized``."""
        return self.calls if self.serialized else contextlib.nullcontext()

    def reinitialize(self, seen_epoch: int) -> int:
        """C_Finalize then C_Initialize with OS locking, unless someone already did it since
        ``seen_epoch``; returns the current epoch. Every session and login of the process on
        this module is gone afterwards (PKCS#11 v2.40 §5.4 C_Finalize): a network HSM's client
        reconnects to its server only this way (p11-kit's client does)."""
        with _LOCK, self.one_call():
            if self.epoch != seen_epoch:
                return self.epoch
            self.logins.clear()
            with _module_env(self.env):
                _reinitialise_with_os_locking(self.c, self.path)
            self.epoch += 1
            return self.epoch

    def login(self, token: Any, pin: Secret) -> _Login:
        """Return the process's shared logged-in session for ``token``, creating it if needed."""
        slot_id = token.slot.slot_id
        existing = self.logins.get(slot_id)
        if existing is not None:
            if not hmac.compare_digest(existing.pin.reveal(), pin.reveal()):
                raise HsmUnavailable(
                    f"token {token.label!r}: PIN differs from the one this process logged in with"
                )
            existing.refs += 1
            return existing
        session = _login_with_retry(self, token, pin)
        entry = _Login(module=self, slot_id=slot_id, session=session, pin=pin, epoch=self.epoch)
        self.logins[slot_id] = entry
        return entry

    def session_state(self, session_handle: int) -> int:
        """``C_GetSessionInfo(...).state``; raises HsmUnavailable if the call fails."""
        info = _SessionInfo()
        rv = self.c.C_GetSessionInfo(ctypes.c_ulong(session_handle), ctypes.byref(info))
        if rv != CKR_OK:
            raise HsmUnavailable(f"C_GetSessionInfo failed with CKR 0x{rv:x}")
        return int(info.state)

    def destroy_object(self, session_handle: int, object_handle: int) -> bool:
        """C_DestroyObject by raw handle on any session of the process (PKCS#11 v2.40 §5.7).

        Returns True if destroyed now, False if the handle was already invalid; raises
        HsmUnavailable for any other return value.
        """
        rv = self.c.C_DestroyObject(ctypes.c_ulong(session_handle), ctypes.c_ulong(object_handle))
        if rv == CKR_OK:
            return True
        if rv == CKR_OBJECT_HANDLE_INVALID:
            return False
        raise HsmUnavailable(f"C_DestroyObject failed with CKR 0x{rv:x}")

    def handle_resolves(self, session_handle: int, object_handle: int) -> bool:
        """True if ``object_handle`` still names an object (C_GetAttributeValue of CKA_CLASS).

        Object handles are valid in every session of the application (PKCS#11 v2.40 §2.3), so
        this probe may use any session of the process. Only CKR_OBJECT_HANDLE_INVALID counts as
        "gone"; every other failure raises, so an unconfirmed destruction is never reported absent.
        """
        template = _Attribute(CKA_CLASS, None, 0)
        rv = self.c.C_GetAttributeValue(
            ctypes.c_ulong(session_handle),
            ctypes.c_ulong(object_handle),
            ctypes.byref(template),
            ctypes.c_ulong(1),
        )
        if rv == CKR_OBJECT_HANDLE_INVALID:
            return False
        if rv == CKR_OK:
            return True
        raise HsmUnavailable(f"C_GetAttributeValue probe failed with CKR 0x{rv:x}")


@dataclass
class _Login:
    module: Module
    slot_id: int
    session: Any  # pkcs11.Session, opened without PIN then logged in through ctypes
    pin: Secret = field(repr=False)
    refs: int = 1
    epoch: int = 0

    def release(self) -> None:
        """Drop one reference; the last one closes the session (the application logs out).

        A login of a module re-initialised since is already gone: nothing to close."""
        with _LOCK:
            self.refs -= 1
            if self.refs > 0:
                return
            if self.module.logins.get(self.slot_id) is self:
                del self.module.logins[self.slot_id]
            elif self.epoch != self.module.epoch:
                return
        # the HSM went away: sessions died with it
        with contextlib.suppress(PKCS11Error), self.module.one_call():
            self.session.close()


_LOCK = threading.RLock()
_MODULES: dict[str, Module] = {}


#: Client modules that must see one call at a time. p11-kit's RPC client (0.24, Debian 12)
#: multiplexes the calls of all threads over one socket; when its server dies while several
#: calls wait for their answers, the threads waiting for another's reply header are never
#: woken (pthread_cond_wait in the client, seen in the soak bench): those calls never return,
#: and neither does C_Finalize. With one call at a time nothing waits for another's reply, and
#: a dead server fails the one running call. p11-kit's server answers one connection's calls
#: in order anyway, so throughput is the same.
SERIALIZED_MODULE_PREFIXES = ("p11-kit-client",)


def serializes(path: str) -> bool:
    """Whether calls into the module at ``path`` are made one at a time."""
    return os.path.basename(path).startswith(SERIALIZED_MODULE_PREFIXES)


def load_module(path: str, env: tuple[tuple[str, str], ...] = ()) -> Module:
    """Load ``path`` once per process (cached by path, redone after a fork), with OS locking.

    ``env``: variables the module reads while it initialises (a network HSM client's server
    address, e.g. p11-kit's ``P11_KIT_SERVER_ADDRESS``), set only for that moment."""
    with _LOCK:
        cached = _MODULES.get(path)
        if cached is not None and cached.pid == os.getpid():
            return cached
        if not os.path.exists(path):
            raise HsmUnavailable(f"PKCS#11 module not found: {path}")
        with _module_env(env):
            try:
                lib = pkcs11.lib(path)
            except PKCS11Error as exc:
                raise HsmUnavailable(f"cannot load PKCS#11 module {path}: {exc}") from exc
            c = FunctionList.of(path, lib)
            _reinitialise_with_os_locking(c, path)
        module = Module(
            path=path, lib=lib, c=c, pid=os.getpid(), env=env, serialized=serializes(path)
        )
        _MODULES[path] = module
        return module


@contextmanager
def _module_env(env: tuple[tuple[str, str], ...]) -> Iterator[None]:
    """Set ``env`` in the process environment for the duration (under _LOCK), then restore."""
    saved = {name: os.environ.get(name) for name, _ in env}
    os.environ.update(dict(env))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class FunctionList:
    """The few PKCS#11 functions called through ``ctypes``, taken from the module's
    ``CK_FUNCTION_LIST`` (PKCS#11 v2.40 §5.2 C_GetFunctionList) rather than its exported
    symbols: a client module such as p11-kit's exports C_GetFunctionList alone."""

    #: Positions in CK_FUNCTION_LIST after its CK_VERSION (PKCS#11 v2.40 §3.6 pkcs11f.h order).
    _INDEX = {
        "C_Initialize": 0,
        "C_Finalize": 1,
        "C_GetSessionInfo": 15,
        "C_Login": 18,
        "C_DestroyObject": 22,
        "C_GetAttributeValue": 24,
    }
    _ARGS: dict[str, list[Any]] = {
        "C_Initialize": [ctypes.c_void_p],
        "C_Finalize": [ctypes.c_void_p],
        "C_GetSessionInfo": [ctypes.c_ulong, ctypes.c_void_p],
        "C_Login": [ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong],
        "C_DestroyObject": [ctypes.c_ulong, ctypes.c_ulong],
        "C_GetAttributeValue": [ctypes.c_ulong, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong],
    }

    def __init__(self, functions: Mapping[str, Callable[..., int]]) -> None:
        self._functions = functions

    def __getattr__(self, name: str) -> Callable[..., int]:
        try:
            return self._functions[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def of(cls, path: str, lib: Any) -> FunctionList:
        """The function list python-pkcs11's ``lib`` calls through.

        It must be that very list: a client module such as p11-kit's hands out a new instance,
        with its own connection and session handles, on every C_GetFunctionList call.
        python-pkcs11 keeps the pointer in the first field of its ``lib`` object (``cdef
        CK_FUNCTION_LIST *funclist`` right after the object header, python-pkcs11 0.10
        _pkcs11.pyx ``HasFuncList``); it is read there and checked to be a function list."""
        address = ctypes.c_void_p.from_address(id(lib) + object.__basicsize__).value
        if not address or ctypes.c_ubyte.from_address(address).value not in (2, 3):
            raise HsmUnavailable(f"cannot find the PKCS#11 function list of {path}")
        size = ctypes.sizeof(ctypes.c_void_p)
        slots = ctypes.cast(address + size, ctypes.POINTER(ctypes.c_void_p))  # past CK_VERSION
        functions: dict[str, Callable[..., int]] = {}
        for name, index in cls._INDEX.items():
            prototype = ctypes.CFUNCTYPE(ctypes.c_ulong, *cls._ARGS[name])
            functions[name] = prototype(slots[index])
        return cls(functions)


def _reinitialise_with_os_locking(c: FunctionList, path: str) -> None:
    """C_Finalize(NULL) then C_Initialize({flags: CKF_OS_LOCKING_OK}) (STANDARDS.md §8)."""
    c.C_Finalize(None)  # CKR_CRYPTOKI_NOT_INITIALIZED is fine here
    args = _InitArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
    rv = c.C_Initialize(ctypes.byref(args))
    if rv != CKR_OK:
        raise HsmUnavailable(f"C_Initialize with CKF_OS_LOCKING_OK failed for {path}: 0x{rv:x}")


def _login_with_retry(module: Module, token: Any, pin: Secret) -> Any:
    """Open a R/W session and C_Login as CKU_USER, retrying CKR_GENERAL_ERROR with backoff.

    SoftHSM rewrites the token file at login, so processes starting at the same instant can
    briefly see CKR_GENERAL_ERROR (STANDARDS.md §8). The session is opened without a PIN and
    logged in through ctypes so that a failed login closes it instead of leaking it.
    """
    secret = pin.reveal().encode("utf-8")
    for attempt, delay in enumerate((*_LOGIN_BACKOFF, None)):
        session = token.open(rw=True)
        rv = module.c.C_Login(session.handle, CKU_USER, secret, len(secret))
        if rv in (CKR_OK, CKR_USER_ALREADY_LOGGED_IN):
            return session
        session.close()
        if rv == CKR_GENERAL_ERROR and delay is not None:
            time.sleep(delay)
            continue
        raise HsmUnavailable(_login_failure(token.label, rv, attempt + 1))
    raise AssertionError("unreachable")


def _login_failure(label: str, rv: int, attempts: int) -> str:
    if rv == CKR_PIN_INCORRECT:
        return f"login to token {label!r} failed: PIN incorrect"
    if rv == CKR_PIN_LOCKED:
        return f"login to token {label!r} failed: PIN locked"
    return f"login to token {label!r} failed with CKR 0x{rv:x} after {attempts} attempt(s)"
