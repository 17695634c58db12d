"""Which :class:`~signer.keys.HsmSession` the current worker thread is running a callback on.

A PKCS#11 session runs one operation at a time and must never be used by two threads at once
(STANDARDS.md §8). Keys therefore never call into "their" session from wherever they happen to
be used: they ask which session this thread holds right now, and refuse outside ``Hsm.run``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from pkcs11.exceptions import PKCS11Error

from signer import metrics
from signer.errors import HsmUnavailable

P = ParamSpec("P")
R = TypeVar("R")

_LOCAL = threading.local()


def current_session() -> Any | None:
    """The HsmSession whose ``Hsm.run`` callback this thread is executing, else None."""
    return getattr(_LOCAL, "session", None)


@contextmanager
def holding(session: Any) -> Iterator[None]:
    """Mark ``session`` as held by this thread for the duration of one callback."""
    previous = current_session()
    if previous is not None:
        raise RuntimeError("nested HSM session use on one thread (Hsm.run inside Hsm.run?)")
    _LOCAL.session = session
    metrics.HSM_IN_USE.inc()
    try:
        yield
    finally:
        _LOCAL.session = None
        metrics.HSM_IN_USE.dec()


def pkcs11_errors_as_unavailable(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn python-pkcs11 errors into HsmUnavailable (chained), naming the operation.

    Applied to every public HSM operation so callers that wrap exceptions inside their own
    ``Hsm.run`` callback still see our error type, not a library one (DESIGN.md: one error
    hierarchy per package, chained with ``raise ... from``).
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except PKCS11Error as exc:
            metrics.HSM_ERRORS.inc()
            raise HsmUnavailable(f"{fn.__name__}: PKCS#11 {type(exc).__name__} {exc}") from exc

    return wrapper
