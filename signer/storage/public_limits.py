"""SQL of the anonymous endpoints' rate limit (``public_rate_windows``,
signer.policy.public_limits).

One statement counts a request against its source's row and the all-sources row (``source =
''``) of the window and returns both counts, so every replica shares one limit and a request
costs one round trip. Rows are taken in one order (the all-sources key sorts first), so two
statements never wait on each other crosswise.
"""

from __future__ import annotations

from datetime import datetime

from signer.storage.records import PoolStore, guard

ALL_SOURCES = b""

_HIT = """
INSERT INTO public_rate_windows AS w (source, window_start, hits)
SELECT s, $2, 1 FROM unnest(ARRAY[$3::bytea, $1::bytea]) AS s ORDER BY s
ON CONFLICT (source, window_start) DO UPDATE SET hits = w.hits + 1
RETURNING w.source, w.hits
"""
_FORGET = "DELETE FROM public_rate_windows WHERE window_start < $1"


class PublicLimitStore(PoolStore):
    """Window counters of the anonymous endpoints; the pool belongs to the caller."""

    async def hit(self, source: bytes, window_start: datetime) -> tuple[int, int]:
        """Count one request; return (this source's, all sources') hits in the window."""
        async with guard("count anonymous request"):
            rows = await self._pool.fetch(_HIT, source, window_start, ALL_SOURCES)
        counts = {bytes(r["source"]): int(r["hits"]) for r in rows}
        return counts[source], counts[ALL_SOURCES]

    async def forget_before(self, window_start: datetime) -> None:
        """Delete the rows of windows that started before ``window_start``."""
        async with guard("forget closed rate windows"):
            await self._pool.execute(_FORGET, window_start)
