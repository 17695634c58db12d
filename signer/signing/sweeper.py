"""Nothing stays half-done after a crash (issue 14): the sweeper every replica runs.

A process killed between a record's "issued" commit and the end of its request leaves the
record 'issued' (no signature was released: DESIGN.md, fail closed) and its key already gone
(a session object dies with its session). A web-signing or approval request can likewise be
left 'signing'. Every ``sweeper.interval_seconds``, one replica at a time (advisory lock)
ends them:

- a batch record 'issued' for longer than ``sweeper.issued_after_seconds``: 'failed' with
  failure 'abandoned' and its issuance log entry (outcome failed, signed_count 0), so the log
  shows that a certificate was issued and nothing was signed. Its status stays 'failed' (the
  issue: "visible as failed with the reason and the key's fate"; every reader of statuses
  knows 'failed'); the reason is the failure ``abandoned`` and the key's fate is recorded, in
  the record and its log entry, as the destruction flags :data:`ENDED_WITH_SESSION`: no
  C_DestroyObject ran and no search confirmed absence (``confirmed_absent`` false), but the
  key was a session object (``key_evidence.token`` false), which PKCS#11 v2.40 §4.4/§5.6
  destroys when its session closes, and its session closed when its process died;
- a web-signing or approval request still 'signing' ``sweeper.signing_after_seconds`` past
  its expiry: 'failed' with error 'abandoned' (its requester sees it ended).

Each ended item is logged (``sweeper_abandoned_record`` …) and counted in :class:`SweeperStats`
and the ``qes_sweeper_ended`` metric.

It also expires pending requests in the background (:meth:`Sweeper.expire_pending`, same lock):
a web-signing request still 'pending' at its expiry ends 'expired' then, not when somebody
next opens it, and its webhook is sent (``on_expired``, wired by the app to the web-signing
webhooks; one not delivered before a crash is resent by ``signer.flows.webhooks``); an open
CSC OAuth2 authorization past its expiry ends 'expired' and drops its login. Logged as
``sweeper_expired_web_request`` / ``sweeper_expired_csc_authorization``. (Approval requests
expire in the background in ``signer.flows.approvals``.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from ca.logentry import PrivacyKey
from signer import metrics
from signer.periodic import every
from signer.settings.config import SweeperSettings
from signer.storage.records import IssuedRecord
from signer.storage.signing_requests import StoredRequest
from signer.storage.sweeper import ExpiryResult, SweeperStore, SweepResult
from signer.translog.log import issuance_entry, subject_index

log = structlog.get_logger(__name__)
#: Told of each web-signing request the sweeper expired (its end is committed): the webhook.
OnExpired = Callable[[StoredRequest], None]


#: The destruction flags of an abandoned record's key: a session object, gone with its
#: session when its process died; neither destroyed by a call nor confirmed absent by a search.
ENDED_WITH_SESSION: Mapping[str, bool] = {
    "private_destroyed": False,
    "public_destroyed": False,
    "confirmed_absent": False,
    "ended_with_session": True,
}


def key_fate(record: IssuedRecord) -> Mapping[str, bool] | None:
    """:data:`ENDED_WITH_SESSION` for a session-object key; None (fate unknown, no flags)
    should a record ever hold a token object, which no batch key is."""
    return ENDED_WITH_SESSION if record.key_evidence.get("token") is False else None


@dataclass
class SweeperStats:
    sweeps: int = 0
    abandoned_records: int = 0
    abandoned_web_requests: int = 0
    abandoned_approvals: int = 0
    expired_web_requests: int = 0
    expired_csc_authorizations: int = 0


@dataclass(frozen=True, eq=False)
class Sweeper:
    store: SweeperStore
    privacy_key: PrivacyKey
    clock: Callable[[], datetime]
    settings: SweeperSettings = field(default_factory=SweeperSettings)
    on_expired: OnExpired | None = None
    stats: SweeperStats = field(default_factory=SweeperStats, init=False)

    async def sweep(self) -> SweepResult:
        """One sweep now (or nothing, if another replica is sweeping)."""
        now = self.clock()
        result = await self.store.sweep(
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
        await every(self.settings.interval_seconds, self._round, failed="sweep_failed")

    async def _round(self) -> None:
        await self.sweep()
        await self.expire_pending()

    async def expire_pending(self) -> ExpiryResult:
        """Expire pending requests past their expiry now (nothing if another replica is at it)."""
        result = await self.store.expire_pending(self.clock())
        for req in result.web_requests:
            log.info("sweeper_expired_web_request", id=str(req.id), client_id=req.client_id)
            metrics.SWEPT.labels(kind="expired_web_request").inc()
            if self.on_expired is not None:
                self.on_expired(req)
        for auth_id in result.csc_authorizations:
            log.info("sweeper_expired_csc_authorization", id=str(auth_id))
            metrics.SWEPT.labels(kind="expired_csc_authorization").inc()
        self.stats.expired_web_requests += len(result.web_requests)
        self.stats.expired_csc_authorizations += len(result.csc_authorizations)
        return result

    def _entry(
        self, record: IssuedRecord, now: datetime
    ) -> tuple[bytes, bytes | None, Mapping[str, bool] | None]:
        fate = key_fate(record)
        entry = issuance_entry(
            record, completed_at=now, destruction=fate, signed_count=0, failure="abandoned"
        )
        return (
            entry.encode(self.privacy_key),
            subject_index(self.privacy_key, record.token_issuer, record.token_subject),
            fate,
        )

    def _report(self, result: SweepResult) -> None:
        self.stats.sweeps += 1
        self.stats.abandoned_records += len(result.abandoned_records)
        self.stats.abandoned_web_requests += len(result.abandoned_web_requests)
        self.stats.abandoned_approvals += len(result.abandoned_approvals)
        for kind, ids in (
            ("abandoned_record", result.abandoned_records),
            ("abandoned_web_request", result.abandoned_web_requests),
            ("abandoned_approval", result.abandoned_approvals),
        ):
            if ids:
                metrics.SWEPT.labels(kind=kind).inc(len(ids))
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
