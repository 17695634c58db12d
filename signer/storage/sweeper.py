"""SQL of the sweeper (signer.signing.sweeper): ending what a crash left half-done.

Every replica runs the sweeper; one at a time does the work, under a transaction-level
advisory lock that the others try and skip (as the log integrator does, signer.storage.log).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from signer.storage.csc_oauth2 import _EXPIRE as _EXPIRE_CSC_OAUTH2
from signer.storage.records import (
    _COLUMNS,
    _FAIL,
    IssuedRecord,
    PoolStore,
    record_from_row,
    transaction,
)
from signer.storage.signing_requests import REQUEST_COLUMNS, StoredRequest, request_from_row
from signer.storage.sql import sql

# pg_try_advisory_xact_lock key of the sweeper: the bytes of "qes-swp" as a bigint.
SWEEPER_LOCK = 0x7165732D737770
SWEEP_BATCH = 500

# A web-signing or approval request is moved to 'signing' before its expiry and signs within
# seconds; one still 'signing' past its expiry plus a grace period was left by a crash.
# Batch records left 'issued' (their process died between the "issued" commit and the end of
# the request): never a CSC credential's record, which its own sweeper ends (signer.http.csc).
_STUCK_ISSUED = sql(
    "SELECT", _COLUMNS, "FROM signing_records AS r",
    "WHERE r.status = 'issued' AND r.created_at < $1"
    " AND NOT EXISTS (SELECT 1 FROM csc_credentials AS c WHERE c.record_id = r.id)"
    " ORDER BY r.created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
)  # fmt: skip
_STUCK_WEB = (
    "UPDATE signing_requests SET status = 'failed', ended_at = $1, error = 'abandoned'"
    " WHERE status = 'signing' AND expires_at < $2 RETURNING id"
)
_STUCK_APPROVALS = (
    "UPDATE approval_requests SET status = 'failed', ended_at = $1, error = 'abandoned'"
    " WHERE status = 'signing' AND expires_at < $2 RETURNING id"
)

# Pending requests past their expiry (issue 14, item 6: "expires pending requests in the
# background"), so that their end is recorded, and their webhook sent, when they expire rather
# than when somebody next looks at them. Approval requests have their own expiry loop
# (signer.flows.approvals); a CSC OAuth2 authorization's end also drops its login (principal,
# consent session) that would otherwise wait in the table for the next authorization.
_EXPIRE_WEB = sql(
    "UPDATE signing_requests SET status = 'expired', ended_at = $1"
    " WHERE id IN (SELECT id FROM signing_requests WHERE status = 'pending'"
    " AND expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " RETURNING", REQUEST_COLUMNS,
)  # fmt: skip
_EXPIRE_OAUTH2 = _EXPIRE_CSC_OAUTH2 + " RETURNING id"


@dataclass(frozen=True)
class ExpiryResult:
    """What one expiry pass ended, or ``ran=False`` when another replica held the lock."""

    ran: bool
    web_requests: tuple[StoredRequest, ...] = ()
    csc_authorizations: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class SweepResult:
    """What one sweep ended (ids), or ``ran=False`` when another replica held the lock."""

    ran: bool
    abandoned_records: tuple[uuid.UUID, ...] = ()
    abandoned_web_requests: tuple[uuid.UUID, ...] = ()
    abandoned_approvals: tuple[uuid.UUID, ...] = ()

    def counts(self) -> dict[str, int]:
        return {
            "abandoned_records": len(self.abandoned_records),
            "abandoned_web_requests": len(self.abandoned_web_requests),
            "abandoned_approvals": len(self.abandoned_approvals),
        }


#: Builds the log entry (encoded), subject index and destruction flags (the key's fate) of
#: an abandoned record.
EntryFor = Callable[[IssuedRecord, datetime], tuple[bytes, bytes | None, Mapping[str, bool] | None]]


class SweeperStore(PoolStore):
    async def sweep(
        self,
        *,
        now: datetime,
        issued_before: datetime,
        signing_expired_before: datetime,
        entry_for: EntryFor,
    ) -> SweepResult:
        """One sweep in one transaction, if this process gets the lock (else ``ran=False``).

        An abandoned record ends 'failed' with failure 'abandoned' and its issuance log entry
        (outcome failed, nothing signed, the key's fate as destruction flags), appended in the
        same statement as the status change."""
        async with transaction(self._pool, "sweep") as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SWEEPER_LOCK):
                return SweepResult(ran=False)
            rows = await conn.fetch(_STUCK_ISSUED, issued_before, SWEEP_BATCH)
            abandoned = []
            for row in rows:
                record = record_from_row(row)
                entry, subject_key, fate = entry_for(record, now)
                flags = None if fate is None else json.dumps(dict(fate))
                idx = await conn.fetchval(
                    _FAIL, record.id, now, "abandoned", flags, entry, subject_key
                )
                if idx is not None:
                    abandoned.append(record.id)
            return SweepResult(
                ran=True,
                abandoned_records=tuple(abandoned),
                abandoned_web_requests=await _ids(conn, _STUCK_WEB, now, signing_expired_before),
                abandoned_approvals=await _ids(conn, _STUCK_APPROVALS, now, signing_expired_before),
            )

    async def expire_pending(self, now: datetime) -> ExpiryResult:
        """End pending web-signing requests and open CSC OAuth2 authorizations past their
        expiry as 'expired', in one transaction under the sweeper's advisory lock (one replica
        at a time; the statements are idempotent anyway)."""
        async with transaction(self._pool, "expire pending requests") as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SWEEPER_LOCK):
                return ExpiryResult(ran=False)
            web = await conn.fetch(_EXPIRE_WEB, now, SWEEP_BATCH)
            oauth2 = await _ids(conn, _EXPIRE_OAUTH2, now)
        return ExpiryResult(True, tuple(request_from_row(r) for r in web), oauth2)


async def _ids(conn: asyncpg.Connection, sql: str, *args: object) -> tuple[uuid.UUID, ...]:
    rows: Sequence[asyncpg.Record] = await conn.fetch(sql, *args)
    return tuple(r["id"] for r in rows)
