"""SQL of retention and data-subject requests (issue 5; GDPR Art. 15 and 17).

A purged signing record is a *tombstone*: the row stays (its id, serial, status, times, IdP,
profile and counts, none of them personal), so the log entry that commits to it keeps its
record, while the personal payload is erased: token subject, client id, certificate (it names
the person), certificate subject and signed digests, plus the record's time-stamp tokens and
stored idempotent response (which holds the certificate chain). An empty ``certificate`` marks
the tombstone; every real record has one (DER is never empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from signer.storage.log import LoggedEntry
from signer.storage.records import guard

#: One statement, one transaction: erase the payload and the copies that hold it.
PURGE = """
WITH gone AS (
    UPDATE signing_records
       SET token_subject = '', client_id = NULL, subject_dn = '', email = NULL,
           certificate = ''::bytea, digests = '{}'
     WHERE created_at < $1 AND octet_length(certificate) > 0
    RETURNING id
), stamps AS (
    DELETE FROM signature_time_stamps WHERE record_id IN (SELECT id FROM gone)
), responses AS (
    DELETE FROM idempotency_keys WHERE record_id IN (SELECT id FROM gone)
)
SELECT count(*) FROM gone
"""

#: A person's records through ``signing_records_subject`` (token_subject, created_at) and
#: their log entries through ``log_entries_record`` (record_id): index lookups only.
SUBJECT_RECORDS = """
SELECT r.serial, r.status, r.created_at, r.token_issuer, r.client_id, r.profile, r.subject_dn,
       e.idx
  FROM signing_records AS r LEFT JOIN log_entries AS e ON e.record_id = r.id
 WHERE r.token_subject = $1 AND ($2::text IS NULL OR r.token_issuer = $2)
 ORDER BY r.created_at
"""

_REFUSALS = """
SELECT idx, entry FROM log_entries WHERE kind = 'refusal' AND idx >= $1 ORDER BY idx LIMIT $2
"""


@dataclass(frozen=True)
class SubjectRecord:
    serial: str
    status: str
    created_at: datetime
    issuer: str
    client_id: str | None
    profile: str
    subject_dn: str
    log_index: int | None


class RetentionStore:
    """Purge and data-subject lookups; the pool belongs to the caller."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def purge(self, before: datetime) -> int:
        """Turn every record created before ``before`` into a tombstone; how many were."""
        async with guard("purge signing records"):
            count: int = await self._pool.fetchval(PURGE, before)
        return count

    async def subject_records(self, subject: str, issuer: str | None) -> list[SubjectRecord]:
        async with guard("find a subject's records"):
            rows = await self._pool.fetch(SUBJECT_RECORDS, subject, issuer)
        return [
            SubjectRecord(
                r["serial"],
                r["status"],
                r["created_at"],
                r["token_issuer"],
                r["client_id"],
                r["profile"],
                r["subject_dn"],
                r["idx"],
            )
            for r in rows
        ]

    async def refusals(self, start: int, limit: int) -> list[LoggedEntry]:
        """Refusal entries from index ``start`` (they have no record row to index)."""
        async with guard("read refusal entries"):
            rows = await self._pool.fetch(_REFUSALS, start, limit)
        return [
            LoggedEntry(r["idx"], "refusal", bytes(r["entry"]), None, None, None, None, False)
            for r in rows
        ]
