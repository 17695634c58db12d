"""SQL of the log's backfills (issue 5): subject index and e-mail of older rows.

Both are idempotent batches, safe to run from several replicas at once: each update only
fills a NULL, and never for a purged record (a tombstone's personal data stays erased).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from signer.storage.records import PoolStore, guard

_STATE = (
    "SELECT legacy_refusals_below, subject_keys_done, emails_before, emails_done"
    " FROM log_backfill WHERE id = 1"
)
#: Issuance entries from before the subject index, with their record's identity.
_PENDING_SUBJECTS = """
SELECT e.idx, r.token_issuer, r.token_subject
  FROM log_entries AS e JOIN signing_records AS r ON r.id = e.record_id
 WHERE e.idx > $1 AND e.idx < $2 AND e.kind = 'issuance' AND e.subject_key IS NULL
   AND octet_length(r.certificate) > 0
 ORDER BY e.idx LIMIT $3
"""
_SET_SUBJECTS = """
UPDATE log_entries AS e SET subject_key = u.subject_key
  FROM unnest($1::bigint[], $2::bytea[]) AS u(idx, subject_key), signing_records AS r
 WHERE e.idx = u.idx AND e.subject_key IS NULL AND r.id = e.record_id
   AND octet_length(r.certificate) > 0
"""
#: Records from before the e-mail column whose e-mail is still unknown (keyset on created, id).
_PENDING_EMAILS = """
SELECT id, created_at, certificate FROM signing_records
 WHERE email IS NULL AND octet_length(certificate) > 0 AND created_at < $1
   AND (created_at, id) > ($2, $3)
 ORDER BY created_at, id LIMIT $4
"""
_SET_EMAILS = """
UPDATE signing_records AS r SET email = u.email
  FROM unnest($1::uuid[], $2::text[]) AS u(id, email)
 WHERE r.id = u.id AND r.email IS NULL AND octet_length(r.certificate) > 0
"""


@dataclass(frozen=True)
class BackfillState:
    legacy_refusals_below: int
    subject_keys_done: bool
    emails_before: datetime
    emails_done: bool


@dataclass(frozen=True)
class PendingSubject:
    idx: int
    token_issuer: str
    token_subject: str


@dataclass(frozen=True)
class PendingEmail:
    id: uuid.UUID
    created_at: datetime
    certificate_der: bytes


class BackfillStore(PoolStore):
    """The pool belongs to the caller."""

    async def state(self) -> BackfillState:
        async with guard("read backfill state"):
            row = await self._pool.fetchrow(_STATE)
        return BackfillState(*row)

    async def pending_subjects(self, after: int, below: int, limit: int) -> list[PendingSubject]:
        async with guard("read entries without subject index"):
            rows = await self._pool.fetch(_PENDING_SUBJECTS, after, below, limit)
        return [PendingSubject(*r) for r in rows]

    async def set_subject_keys(self, idxs: Sequence[int], keys: Sequence[bytes]) -> None:
        async with guard("fill subject index"):
            await self._pool.execute(_SET_SUBJECTS, list(idxs), list(keys))

    async def pending_emails(
        self, before: datetime, after: tuple[datetime, uuid.UUID], limit: int
    ) -> list[PendingEmail]:
        async with guard("read records without e-mail"):
            rows = await self._pool.fetch(_PENDING_EMAILS, before, *after, limit)
        return [PendingEmail(r["id"], r["created_at"], bytes(r["certificate"])) for r in rows]

    async def set_emails(self, ids: Sequence[uuid.UUID], emails: Sequence[str]) -> None:
        async with guard("fill record e-mail"):
            await self._pool.execute(_SET_EMAILS, list(ids), list(emails))

    async def mark_done(self, *, subject_keys: bool = False, emails: bool = False) -> None:
        async with guard("mark backfill done"):
            await self._pool.execute(
                "UPDATE log_backfill SET subject_keys_done = subject_keys_done OR $1,"
                " emails_done = emails_done OR $2 WHERE id = 1",
                subject_keys,
                emails,
            )
