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

import ctypes
import hmac
import os
import threading
import time
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
    """One loaded and OS-locking-initialised PKCS#11 module in this process."""

    path: str
    lib: Any  # pkcs11._pkcs11.lib
    c: ctypes.CDLL
    pid: int
    logins: dict[int, _Login] = field(default_factory=dict)

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
        entry = _Login(module=self, slot_id=slot_id, session=session, pin=pin)
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

    def release(self) -> None:
        """Drop one reference; the last one closes the session (the application logs out)."""
        with _LOCK:
            self.refs -= 1
            if self.refs > 0:
                return
            self.module.logins.pop(self.slot_id, None)
        self.session.close()


_LOCK = threading.RLock()
_MODULES: dict[str, Module] = {}


def load_module(path: str) -> Module:
    """Load ``path`` once per process (cached by path, redone after a fork), with OS locking."""
    with _LOCK:
        cached = _MODULES.get(path)
        if cached is not None and cached.pid == os.getpid():
            return cached
        if not os.path.exists(path):
            raise HsmUnavailable(f"PKCS#11 module not found: {path}")
        try:
            lib = pkcs11.lib(path)
        except PKCS11Error as exc:
            raise HsmUnavailable(f"cannot load PKCS#11 module {path}: {exc}") from exc
        c = ctypes.CDLL(path)
        _declare(c)
        _reinitialise_with_os_locking(c, path)
        module = Module(path=path, lib=lib, c=c, pid=os.getpid())
        _MODULES[path] = module
        return module


def _declare(c: ctypes.CDLL) -> None:
    ulong, vp = ctypes.c_ulong, ctypes.c_void_p
    c.C_Finalize.argtypes = [vp]
    c.C_Initialize.argtypes = [vp]
    c.C_Login.argtypes = [ulong, ulong, ctypes.c_char_p, ulong]
    c.C_GetSessionInfo.argtypes = [ulong, vp]
    c.C_GetAttributeValue.argtypes = [ulong, ulong, vp, ulong]
    c.C_DestroyObject.argtypes = [ulong, ulong]
    for name in (
        "C_Finalize",
        "C_Initialize",
        "C_Login",
        "C_GetSessionInfo",
        "C_GetAttributeValue",
        "C_DestroyObject",
    ):
        getattr(c, name).restype = ulong


def _reinitialise_with_os_locking(c: ctypes.CDLL, path: str) -> None:
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
