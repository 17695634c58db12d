"""The metrics that are read, not counted: sampled every few seconds in each worker.

Readiness (database and HSM, as ``/readyz``), the pools' use, and the database-wide figures
(log size, newest checkpoint, pending approvals). Each worker samples; the metrics say how the
workers' values combine (:mod:`signer.metrics`).
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from signer import metrics
from signer.errors import SignerError
from signer.keys import Hsm
from signer.storage.gauges import read_figures

log = structlog.get_logger(__name__)
SAMPLE_SECONDS = 5.0
READY_TIMEOUT = 2.0


async def sample_once(pool: asyncpg.Pool, hsm: Hsm) -> None:
    metrics.DB_POOL.set(pool.get_size())
    metrics.DB_IN_USE.set(pool.get_size() - pool.get_idle_size())
    metrics.HSM_SESSIONS.set(hsm.settings.sessions)
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            figures = await read_figures(pool)
        database = True
    except (SignerError, TimeoutError) as exc:
        log.warning("metrics_sample_failed", error=str(exc) or type(exc).__name__)
        database = False
    else:
        metrics.LOG_ENTRIES.set(figures.log_entries)
        metrics.LOG_CHECKPOINT_SIZE.set(figures.checkpoint_size)
        if figures.checkpoint_at is not None:
            metrics.LOG_CHECKPOINT_TIME.set(figures.checkpoint_at.timestamp())
        metrics.APPROVALS_PENDING.set(figures.approvals_pending)
    metrics.READY.set(1 if database and await hsm.ready() else 0)


async def run(pool: asyncpg.Pool, hsm: Hsm) -> None:
    """Sample until cancelled."""
    while True:
        await sample_once(pool, hsm)
        await asyncio.sleep(SAMPLE_SECONDS)
