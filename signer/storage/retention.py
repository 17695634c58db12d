"""SQL of retention and data-subject requests (issue 5; GDPR Art. 15 and 17).

A purged signing record is a *tombstone*: the row stays (its id, serial, status, times, IdP,
profile and counts, none of them personal), so the log entry that commits to it keeps its
record, while the personal payload is erased: token subject, client id, certificate (it names
the person), certificate subject and signed digests, plus the record's time-stamp tokens and
stored idempotent response (which holds the certificate chain). An empty ``certificate`` marks
the tombstone; every real record has one (DER is never empty). The purge also erases the
subject index (``log_entries.subject_key``) of the purged records' entries and of refusal
entries appended before the cut-off: it is a pseudonymous identifier of the person.
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
), record_keys AS (
    UPDATE log_entries SET subject_key = NULL WHERE record_id IN (SELECT id FROM gone)
), refusal_keys AS (
    UPDATE log_entries SET subject_key = NULL
     WHERE subject_key IS NOT NULL AND kind = 'refusal' AND created_at < $1
)
SELECT count(*) FROM gone
"""

#: A person's finished records through their entries' subject index (``log_entries_subject``,
#: keys of ``signer.translog.subject_index``), plus records still 'issued' (no entry yet: a
#: crash in between) through ``signing_records_subject``: index lookups only.
SUBJECT_RECORDS = """
SELECT r.serial, r.status, r.created_at, r.token_issuer, r.client_id, r.profile, r.subject_dn,
       e.idx
  FROM log_entries AS e JOIN signing_records AS r ON r.id = e.record_id
 WHERE e.subject_key = ANY($1::bytea[]) AND e.kind = 'issuance'
UNION ALL
SELECT r.serial, r.status, r.created_at, r.token_issuer, r.client_id, r.profile, r.subject_dn,
       NULL
  FROM signing_records AS r
 WHERE r.token_subject = $2 AND ($3::text IS NULL OR r.token_issuer = $3) AND r.status = 'issued'
 ORDER BY created_at
"""
#: A person's refusal entries through the subject index.
SUBJECT_REFUSALS = """
SELECT idx, entry FROM log_entries
 WHERE subject_key = ANY($1::bytea[]) AND kind = 'refusal' ORDER BY idx
"""
#: Refusal entries from before the subject index (a fixed range of the primary key).
_LEGACY_REFUSALS = """
SELECT idx, entry FROM log_entries
 WHERE kind = 'refusal' AND idx >= $1
   AND idx < (SELECT legacy_refusals_below FROM log_backfill WHERE id = 1)
 ORDER BY idx LIMIT $2
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

    async def subject_records(
        self, keys: list[bytes], subject: str, issuer: str | None
    ) -> list[SubjectRecord]:
        """Records whose entries carry one of ``keys``, and unfinished records of ``subject``."""
        async with guard("find a subject's records"):
            rows = await self._pool.fetch(SUBJECT_RECORDS, keys, subject, issuer)
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

    async def subject_refusals(self, keys: list[bytes]) -> list[LoggedEntry]:
        """Refusal entries carrying one of the subject index ``keys``."""
        async with guard("find a subject's refusals"):
            rows = await self._pool.fetch(SUBJECT_REFUSALS, keys)
        return [_refusal(r) for r in rows]

    async def legacy_refusals(self, start: int, limit: int) -> list[LoggedEntry]:
        """Refusal entries from index ``start`` appended before the subject index existed."""
        async with guard("read refusal entries"):
            rows = await self._pool.fetch(_LEGACY_REFUSALS, start, limit)
        return [_refusal(r) for r in rows]


def _refusal(row: asyncpg.Record) -> LoggedEntry:
    return LoggedEntry(row["idx"], "refusal", bytes(row["entry"]), None, None, None, None, False)
