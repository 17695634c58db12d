"""Requests refused before authentication, in the log with a rate limit (issue 5).

A signing request whose body is rejected or whose bearer token does not verify (missing, bad
signature, expired, wrong audience, unknown issuer, replayed ``jti``, ...) is answered 4xx and
appended to the log as a refusal entry (``ca.logentry`` version 2) with what is known: the
stable reason (``token.<reason>`` or the problem slug), what was asked when the body parsed,
the ``iss`` the token *claims* (``claimed_issuer``, only when it names a trusted issuer: never
taken as who asked), and the client address as a keyed commitment (personal data). No verified
identity, so no subject index.

Nobody is accountable for such a request, so an attacker could fill the log with them. Per
window of ``[log] refusal_window_seconds`` at most ``refusals_per_source`` entries per client
address and ``refusals_total`` for all addresses together are appended one by one; every
further refusal is only counted (in PostgreSQL, shared by all replicas). When the window has
closed, one aggregate entry (reason ``refusals-suppressed``, ``suppressed`` = the count) per
address that hit its limit, and one for the all-sources limit, is appended in the same
transaction that deletes the counters (:class:`signer.storage.refusals.RefusalStore`), so
``logged + suppressed`` always equals the number of refusals. Refusals of authenticated
requests (policy, CSC) go through the same writer, :meth:`RefusalLog.attributed`, not limited:
their requester is known. :class:`RefusalLog` is the only code that builds refusal entries.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from ca.logentry import (
    SUPPRESSED_REASON,
    LogEntryError,
    PrivacyKey,
    RefusalEntry,
    Requester,
    RequestSummary,
)
from signer.errors import DatabaseUnavailable
from signer.periodic import every
from signer.settings.config import LogSettings
from signer.storage.refusals import ClosedWindow, RefusalStore
from signer.translog.log import source_index, subject_index

log = structlog.get_logger(__name__)
UNKNOWN_ADDRESS = "unknown"


@dataclass(frozen=True)
class Refused:
    """What is known of a request refused before its token verified."""

    request_id: str
    reason: str
    client_address: str | None
    claimed_issuer: str | None = None
    profile: str | None = None
    hash_algorithm: str | None = None
    digests: tuple[bytes, ...] = ()
    signature_format: str | None = None


@dataclass(frozen=True, kw_only=True, eq=False)
class RefusalLog:
    """Appends pre-authentication refusals under the rate limit; closes finished windows."""

    store: RefusalStore
    key: PrivacyKey
    settings: LogSettings
    clock: Callable[[], datetime]

    def window_start(self, at: datetime) -> datetime:
        """The start of the window ``at`` falls in (windows are aligned to the epoch)."""
        seconds = self.settings.refusal_window_seconds
        epoch = int(at.timestamp()) // seconds * seconds
        return datetime.fromtimestamp(epoch, UTC)

    async def log(self, refused: Refused) -> int | None:
        """The refusal's log index, or None when it was only counted (limit reached) or the
        log is unreachable (the refusal stands either way; that failure goes to the log)."""
        at = self.clock()
        address = refused.client_address or UNKNOWN_ADDRESS
        try:
            entry = RefusalEntry(
                record_id=str(uuid.uuid4()),
                request_id=refused.request_id,
                refused_at=at,
                requester=Requester(None, None, None),
                request=RequestSummary(
                    refused.profile, None, refused.hash_algorithm, refused.digests
                ),
                reason=refused.reason,
                claimed_issuer=refused.claimed_issuer,
                client_address=address,
                signature_format=refused.signature_format,
            )
            return await self.store.admit(
                source=source_index(self.key, address),
                address=address,
                window_start=self.window_start(at),
                per_source=self.settings.refusals_per_source,
                total=self.settings.refusals_total,
                entry=entry.encode(self.key),
            )
        except (DatabaseUnavailable, LogEntryError) as exc:  # the refusal stands regardless
            log.error("refusal_not_logged", reason=refused.reason, error=str(exc))
            return None

    async def attributed(
        self,
        requester: Requester,
        request: RequestSummary,
        *,
        request_id: str,
        reason: str,
        indexed: bool = True,
        signature_format: str | None = None,
    ) -> int | None:
        """A refusal whose requester is known (an authenticated request refused by policy, a
        CSC call, an RP client suspended): appended at once, with the requester's subject index
        when ``indexed``. The refusal stands even when the log is unreachable (that failure is
        logged); returns the entry's log index, or None then."""
        entry = RefusalEntry(
            record_id=str(uuid.uuid4()),
            request_id=request_id,
            refused_at=self.clock(),
            requester=requester,
            request=request,
            reason=reason,
            signature_format=signature_format,
        )
        subject = requester.token_subject
        key = None
        if indexed and requester.token_issuer is not None and subject is not None:
            key = subject_index(self.key, requester.token_issuer, subject)
        try:
            return await self.store.append(entry.encode(self.key), key)
        except DatabaseUnavailable:
            log.error("refusal_not_logged", request_id=request_id, reason=reason)
            return None

    def _aggregate(self, window: ClosedWindow) -> bytes:
        return RefusalEntry(
            record_id=str(uuid.uuid4()),
            request_id=f"window-{int(window.window_start.timestamp())}",
            refused_at=window.window_start,
            requester=Requester(None, None, None),
            request=RequestSummary(None, None, None),
            reason=SUPPRESSED_REASON,
            client_address=window.address,
            suppressed=window.suppressed,
        ).encode(self.key)

    async def flush(self) -> Sequence[int]:
        """Close every window that has ended: append its aggregate entries, drop its counters."""
        closed = await self.store.close_windows(self.window_start(self.clock()), self._aggregate)
        if closed:
            log.info("refusals_suppressed_logged", entries=len(closed))
        return closed

    async def run(self) -> None:
        """Close windows twice per window length until cancelled; errors are logged."""
        await every(
            self.settings.refusal_window_seconds / 2,
            self.flush,
            failed="refusal_windows_not_closed",
        )
