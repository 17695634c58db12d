"""Which :class:`~signer.hsm.HsmSession` the current worker thread is running a callback on.

A PKCS#11 session runs one operation at a time and must never be used by two threads at once
(STANDARDS.md §8). Keys therefore never call into "their" session from wherever they happen to
be used: they ask which session this thread holds right now, and refuse outside ``Hsm.run``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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
    try:
        yield
    finally:
        _LOCAL.session = None
