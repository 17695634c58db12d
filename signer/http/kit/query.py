"""Query-parameter parsers shared by the endpoints: text to a value or ``None`` (the caller
raises its own problem kind), never another exception.

- :func:`count`: ASCII digits only. ``str.isdigit`` accepts ``"²"`` and other Unicode digits
  that ``int()`` refuses (a ValueError, then a 500), so it is not used.
- :func:`instant`: an ISO 8601 time (``datetime.fromisoformat``) that PostgreSQL's
  ``timestamptz`` can hold once moved to UTC: ``9999-12-31T23:59:59-14:00`` is in year 10000,
  which neither Python nor PostgreSQL can represent (it reached the database as a 503).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from signer.http.kit.params import utc_instant

_DIGITS = re.compile(r"[0-9]{1,20}")  # bounded before int(): 2**62 has 19


def count(text: str, maximum: int) -> int | None:
    """``text`` as an integer in ``0..maximum``, or None."""
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= maximum else None


def instant(text: str, *, naive_is_utc: bool = False) -> datetime | None:
    """``text`` as an aware time in UTC, or None (malformed, out of range, or without an
    offset unless ``naive_is_utc``)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if not naive_is_utc:
            return None
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return utc_instant(parsed)
    except ValueError:
        return None
