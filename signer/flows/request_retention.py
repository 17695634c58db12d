"""Finished web-signing requests and their PDFs are deleted after a configured time (issue 17
item 9; GDPR Art. 5(1)(e) storage limitation).

The PDFs a relying party sent, the prepared and the signed ones, and the request's state are
needed only until the RP has fetched the result. Every replica runs :meth:`RequestRetention.run`:
every :data:`INTERVAL` it deletes the requests that ended more than ``[audit]
finished_requests_keep_hours`` ago (a delete is idempotent, so replicas need no lock). The
evidence stays: the signing record and its log entry, kept for ``retention_days`` and erased
only by ``qes audit purge``, which also deletes every finished request that ended before its
cut-off. ``qes audit subject`` lists the person's requests still kept.

Kept apart from :mod:`signer.signing.sweeper` (crash recovery): this deletes only what ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from signer.periodic import every
from signer.storage.request_retention import RequestRetentionStore

log = structlog.get_logger(__name__)
#: How often each replica looks for finished requests to delete.
INTERVAL = 300.0


@dataclass(frozen=True, eq=False)
class RequestRetention:
    store: RequestRetentionStore
    clock: Callable[[], datetime]
    keep: timedelta

    async def purge_once(self) -> int:
        """Delete the requests that ended more than ``keep`` ago; how many were."""
        count = await self.store.purge_finished(self.clock() - self.keep)
        if count:
            log.info("finished_web_requests_purged", count=count)
        return count

    async def run(self) -> None:
        """At start, then every :data:`INTERVAL` seconds, until cancelled; errors are logged."""
        await every(INTERVAL, self.purge_once, failed="web_request_purge_failed")
