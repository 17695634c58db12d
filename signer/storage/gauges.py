"""Database-wide figures for the metrics (signer.signing.gauges): three cheap, indexed reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from signer.storage.records import guard


@dataclass(frozen=True)
class Figures:
    log_entries: int
    checkpoint_size: int
    checkpoint_at: datetime | None
    approvals_pending: int


async def read_figures(pool: asyncpg.Pool) -> Figures:
    async with guard("read metrics figures"), pool.acquire() as conn:
        entries = await conn.fetchval("SELECT coalesce(max(idx) + 1, 0) FROM log_entries")
        newest = await conn.fetchrow(
            "SELECT size, created_at FROM log_checkpoints ORDER BY size DESC LIMIT 1"
        )
        pending = await conn.fetchval(
            "SELECT count(*) FROM approval_requests WHERE status = 'pending'"
        )
    return Figures(
        log_entries=int(entries),
        checkpoint_size=int(newest["size"]) if newest else 0,
        checkpoint_at=newest["created_at"] if newest else None,
        approvals_pending=int(pending),
    )
