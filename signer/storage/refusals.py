"""SQL of the rate-limited refusal log (issue 5): requests refused before authentication.

Counters live in ``log_refusal_windows`` (one row per source and window, plus the row of all
sources, ``source = ''``), so every replica shares one limit. :meth:`RefusalStore.admit` takes
the source row's lock, then the all-sources row's (always in that order), and either appends
the entry and counts it as logged, or only counts it as suppressed, in one transaction.
:meth:`RefusalStore.close_windows` deletes the rows of closed windows and appends one aggregate
entry per row that suppressed anything, in one transaction: a count is either still in its row
or in the log, never lost and never written twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from signer.storage.records import PoolStore, guard, transaction

ALL_SOURCES = b""

#: Creates the window row if needed and locks it; returns how many entries it logged so far.
_LOCK_WINDOW = """
INSERT INTO log_refusal_windows AS w (source, window_start, address)
VALUES ($1, $2, $3)
ON CONFLICT (source, window_start) DO UPDATE SET address = coalesce(w.address, EXCLUDED.address)
RETURNING w.logged
"""
_COUNT = """
UPDATE log_refusal_windows SET logged = logged + $3, suppressed = suppressed + $4
 WHERE source = $1 AND window_start = $2
"""
#: Appends refusal entries in order (same sequencing as signer.storage.records: the log_state
#: row lock serializes every writer), each with its subject index (NULL when unknown).
APPEND_REFUSALS = """
WITH given AS (
    SELECT entry, subject_key, ord
      FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS g(entry, subject_key, ord)
), seq AS (
    UPDATE log_state SET size = size + (SELECT count(*) FROM given)
     WHERE id = 1 AND EXISTS (SELECT 1 FROM given)
    RETURNING size - (SELECT count(*) FROM given) AS base
)
INSERT INTO log_entries (idx, kind, record_id, entry, leaf_hash, subject_key)
SELECT seq.base + given.ord - 1, 'refusal', NULL, given.entry,
       sha256('\\x00'::bytea || given.entry), given.subject_key
  FROM given, seq
RETURNING idx
"""
_CLOSE = """
DELETE FROM log_refusal_windows WHERE window_start < $1
RETURNING source, window_start, address, logged, suppressed
"""


@dataclass(frozen=True)
class ClosedWindow:
    """A window that suppressed refusals: from ``address`` (None: all sources together)."""

    window_start: datetime
    address: str | None
    logged: int
    suppressed: int


class RefusalStore(PoolStore):
    """Rate-limit counters and refusal appends; the pool belongs to the caller."""

    async def append(self, entry: bytes, subject_key: bytes | None) -> int:
        """Append one refusal entry at once (its requester is known: not rate limited)."""
        async with guard("log refused request"):
            idx: int = await self._pool.fetchval(APPEND_REFUSALS, [entry], [subject_key])
        return idx

    async def admit(
        self,
        *,
        source: bytes,
        address: str,
        window_start: datetime,
        per_source: int,
        total: int,
        entry: bytes,
    ) -> int | None:
        """Append ``entry`` when both the source's and the all-sources count of the window are
        below their limits (returns its log index), else count it as suppressed (None)."""
        async with transaction(self._pool, "log refused request") as conn:
            logged = await conn.fetchval(_LOCK_WINDOW, source, window_start, address)
            if logged >= per_source:
                await conn.execute(_COUNT, source, window_start, 0, 1)
                return None
            everyone = await conn.fetchval(_LOCK_WINDOW, ALL_SOURCES, window_start, None)
            if everyone >= total:
                await conn.execute(_COUNT, ALL_SOURCES, window_start, 0, 1)
                return None
            await conn.execute(_COUNT, source, window_start, 1, 0)
            await conn.execute(_COUNT, ALL_SOURCES, window_start, 1, 0)
            idx: int = await conn.fetchval(APPEND_REFUSALS, [entry], [None])
        return idx

    async def close_windows(
        self, before: datetime, aggregate: Callable[[ClosedWindow], bytes]
    ) -> Sequence[int]:
        """Delete every window that started before ``before``; for each that suppressed
        refusals, append ``aggregate(window)`` in the same transaction. Returns their indexes
        (in window order, the all-sources row last within a window)."""
        async with transaction(self._pool, "close refusal windows") as conn:
            rows = await conn.fetch(_CLOSE, before)
            closed = sorted(
                (
                    ClosedWindow(
                        r["window_start"],
                        None if r["source"] == ALL_SOURCES else r["address"],
                        r["logged"],
                        r["suppressed"],
                    )
                    for r in rows
                    if r["suppressed"] > 0
                ),
                key=lambda w: (w.window_start, w.address is None, w.address or ""),
            )
            if not closed:
                return []
            entries = [aggregate(w) for w in closed]
            idx = await conn.fetch(APPEND_REFUSALS, entries, [None] * len(entries))
        return sorted(r["idx"] for r in idx)
