"""Nothing stays half-done after a crash (issue 14): the sweeper every replica runs.

A process killed between a record's "issued" commit and the end of its request leaves the
record 'issued' (no signature was released: DESIGN.md, fail closed) and its key already gone
(a session object dies with its session). A web-signing or approval request can likewise be
left 'signing'. Every ``sweeper.interval_seconds``, one replica at a time (advisory lock)
ends them:

- a batch record 'issued' for longer than ``sweeper.issued_after_seconds``: 'failed' with
  failure 'abandoned' and its issuance log entry (outcome failed, signed_count 0, no
  destruction receipt), so the log shows that a certificate was issued and nothing was signed;
- a web-signing or approval request still 'signing' ``sweeper.signing_after_seconds`` past
  its expiry: 'failed' with error 'abandoned' (its requester sees it ended).

Each ended item is logged (``sweeper_abandoned_record`` …) and counted in :class:`SweeperStats`
for the metrics endpoint to export.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import structlog

from ca.logentry import PrivacyKey
from signer.errors import SignerError
from signer.settings.config import SweeperSettings
from signer.storage.records import IssuedRecord
from signer.storage.sweeper import SweeperStore, SweepResult
from signer.translog.log import issuance_entry, subject_index

log = structlog.get_logger(__name__)
#: The app's sweeper (tests and the metrics endpoint read its counters).


@dataclass
class SweeperStats:
    sweeps: int = 0
    abandoned_records: int = 0
    abandoned_web_requests: int = 0
    abandoned_approvals: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


class Sweeper:
    def __init__(
        self,
        store: SweeperStore,
        privacy_key: PrivacyKey,
        clock: Callable[[], datetime],
        settings: SweeperSettings | None = None,
    ) -> None:
        self._store = store
        self._key = privacy_key
        self._clock = clock
        self.settings = settings or SweeperSettings()
        self.stats = SweeperStats()

    async def sweep(self) -> SweepResult:
        """One sweep now (or nothing, if another replica is sweeping)."""
        now = self._clock()
        result = await self._store.sweep(
            now=now,
            issued_before=now - timedelta(seconds=self.settings.issued_after_seconds),
            signing_expired_before=now - timedelta(seconds=self.settings.signing_after_seconds),
            entry_for=self._entry,
        )
        if result.ran:
            self._report(result)
        return result

    async def run(self) -> None:
        """Sweep at start, then every ``interval_seconds``, until cancelled."""
        while True:
            try:
                await self.sweep()
            except SignerError as exc:
                log.warning("sweep_failed", error=str(exc))
            await asyncio.sleep(self.settings.interval_seconds)

    def _entry(self, record: IssuedRecord, now: datetime) -> tuple[bytes, bytes | None]:
        entry = issuance_entry(
            record, completed_at=now, destruction=None, signed_count=0, failure="abandoned"
        )
        return (
            entry.encode(self._key),
            subject_index(self._key, record.token_issuer, record.token_subject),
        )

    def _report(self, result: SweepResult) -> None:
        self.stats.sweeps += 1
        self.stats.abandoned_records += len(result.abandoned_records)
        self.stats.abandoned_web_requests += len(result.abandoned_web_requests)
        self.stats.abandoned_approvals += len(result.abandoned_approvals)
        for record_id in result.abandoned_records:
            log.warning(
                "sweeper_abandoned_record",
                record_id=str(record_id),
                key="session object: died with its process's session",
            )
        for request_id in result.abandoned_web_requests:
            log.warning("sweeper_abandoned_web_request", id=str(request_id))
        for request_id in result.abandoned_approvals:
            log.warning("sweeper_abandoned_approval", id=str(request_id))
