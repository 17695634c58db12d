"""SQL of retention and data-subject requests (issue 5; GDPR Art. 15 and 17).

A purged signing record is a *tombstone*: the row stays (its id, serial, status, times, IdP,
profile and counts, none of them personal), so the log entry that commits to it keeps its
record, while the personal payload is erased: token subject, client id, certificate (it names
the person), certificate subject and signed digests, plus the record's time-stamp tokens and
stored idempotent response (which holds the certificate chain). An empty ``certificate`` marks
the tombstone; every real record has one (DER is never empty). The purge also erases the
subject index (``log_entries.subject_key``) of the purged records' entries and of refusal
entries appended before the cut-off: it is a pseudonymous identifier of the person.

In the same statement (one transaction), approval requests (issue 7) that ended and were
created before the cut-off, their decisions, and admin actions (the kill switch) from before
it become tombstones too (``purged_at``): requester and approver subjects, client id, names,
e-mail, principal JSON, digests, labels, reason, PDFs, result and webhook are erased; what
their log entries commit to in clear (ids, times, decision, issuers, group, counts, hash
algorithm, action, scope) stays, so ``qes audit verify`` still checks it. An optional text
that was present is erased to '' rather than NULL, so the entry's "was there one" still
matches. A request still 'pending' whose expiry passed before the cut-off has ended too (no
sweep noticed it yet): it becomes 'expired' as it is purged. A request left 'signing' by a
crash is kept for the auditors. An admin action whose suspension is still in force is kept: it
is the reason the identity or client is refused today. A person's approval and admin rows are
found through indexes on their (subject, issuer) columns, which a tombstone no longer holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from signer.storage.log import LoggedEntry
from signer.storage.policy import LoggedAction, record_action
from signer.storage.records import PoolStore, guard, transaction
from signer.storage.request_retention import PURGE_FINISHED

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
), requests AS (
    UPDATE approval_requests
       SET purged_at = $2, token_subject = '', client_id = NULL, display_name = '',
           principal = '{}', digests = '{}', labels = '{}', reason = NULL, pdf = NULL,
           pdf_reserved_start = NULL, pdf_reserved_end = NULL, signed_pdf = NULL, result = NULL,
           webhook_url = NULL, webhook_secret_hash = NULL,
           status = CASE WHEN status = 'pending' THEN 'expired' ELSE status END,
           ended_at = coalesce(ended_at, expires_at)
     WHERE created_at < $1 AND purged_at IS NULL
       AND (status IN ('completed', 'failed', 'denied', 'expired')
            OR (status = 'pending' AND expires_at < $1))
    RETURNING id
), decisions AS (
    UPDATE approval_decisions
       SET token_subject = '', email = CASE WHEN email IS NULL THEN NULL ELSE '' END,
           display_name = ''
     WHERE approval_request IN (SELECT id FROM requests)
    RETURNING id
), actions AS (
    UPDATE admin_actions
       SET purged_at = $2, actor_subject = '',
           token_subject = CASE WHEN token_subject IS NULL THEN NULL ELSE '' END,
           client_id = CASE WHEN client_id IS NULL THEN NULL ELSE '' END,
           reason = CASE WHEN reason IS NULL THEN NULL ELSE '' END
     WHERE acted_at < $1 AND purged_at IS NULL
       AND id NOT IN (SELECT action_id FROM suspensions)
    RETURNING id
)
SELECT (SELECT count(*) FROM gone) AS records, (SELECT count(*) FROM requests) AS requests,
       (SELECT count(*) FROM decisions) AS decisions, (SELECT count(*) FROM actions) AS actions
"""

#: A person's finished records through their entries' subject index (``log_entries_subject``,
#: keys of ``signer.translog.log.subject_index``), plus records still 'issued' (no entry yet: a
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
#: A person's approval requests (as requester) through ``approval_requests_requester``.
SUBJECT_APPROVAL_REQUESTS = """
SELECT id, status, created_at, ended_at, token_issuer, client_id, approver_group,
       approvals_required, cardinality(digests) AS digest_count, labels, reason, record_serial
  FROM approval_requests
 WHERE token_subject = $1 AND ($2::text IS NULL OR token_issuer = $2) AND purged_at IS NULL
 ORDER BY created_at
"""
#: A person's decisions (as approver) through ``approval_decisions_approver``.
SUBJECT_DECISIONS = """
SELECT id, approval_request, decision, decided_at, token_issuer, email, log_index
  FROM approval_decisions
 WHERE token_subject = $1 AND token_subject <> '' AND ($2::text IS NULL OR token_issuer = $2)
 ORDER BY decided_at
"""
#: A person's admin actions, as target (``admin_actions_target``) and as actor
#: (``admin_actions_actor``).
SUBJECT_ADMIN_ACTIONS = """
SELECT id, action, scope, acted_at, token_issuer, client_id, reason, actor_issuer,
       'target' AS role
  FROM admin_actions
 WHERE token_subject = $1 AND token_subject IS NOT NULL AND token_subject <> ''
   AND ($2::text IS NULL OR token_issuer = $2)
UNION ALL
SELECT id, action, scope, acted_at, token_issuer, client_id, reason, actor_issuer,
       'actor' AS role
  FROM admin_actions
 WHERE actor_subject = $1 AND actor_subject <> '' AND ($2::text IS NULL OR actor_issuer = $2)
 ORDER BY acted_at
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


@dataclass(frozen=True)
class Purged:
    """What one purge turned into tombstones."""

    records: int
    approval_requests: int
    approval_decisions: int
    admin_actions: int
    web_requests: int = 0


@dataclass(frozen=True)
class SubjectApprovalRequest:
    """A batch request the person made that was held for approval (issue 7)."""

    id: str
    status: str
    created_at: datetime
    ended_at: datetime | None
    issuer: str
    client_id: str | None
    approver_group: str
    approvals_required: int
    digest_count: int
    labels: tuple[str, ...]
    reason: str | None
    record_serial: str | None


@dataclass(frozen=True)
class SubjectDecision:
    """An approval or denial the person made as an approver; ``log_index`` is its entry."""

    id: str
    approval_request: str
    decision: str
    decided_at: datetime
    issuer: str
    email: str | None
    log_index: int


@dataclass(frozen=True)
class SubjectAdminAction:
    """A suspend / resume of which the person was the target or the actor (``role``)."""

    id: str
    role: str
    action: str
    scope: str
    acted_at: datetime
    issuer: str | None
    client_id: str | None
    reason: str | None
    actor_issuer: str | None


class RetentionStore(PoolStore):
    """Purge and data-subject lookups; the pool belongs to the caller."""

    async def purge(
        self,
        before: datetime,
        now: datetime,
        act: Callable[[Purged], LoggedAction] | None = None,
    ) -> Purged:
        """Turn every record, ended approval request (with its decisions) and admin action
        from before ``before`` into a tombstone and delete the web-signing requests that ended
        before it (:mod:`signer.storage.request_retention`); how many of each were. ``act``
        makes the purge's own admin-action entry from those counts, written in the same
        transaction: no purge without its entry, no entry without the purge."""
        async with transaction(self._pool, "purge personal data") as conn:
            row = await conn.fetchrow(PURGE, before, now)
            web = await conn.fetchval(PURGE_FINISHED, before)
            done = Purged(row["records"], row["requests"], row["decisions"], row["actions"], web)
            if act is not None:
                await record_action(conn, act(done))
        return done

    async def subject_approvals(
        self, subject: str, issuer: str | None
    ) -> tuple[list[SubjectApprovalRequest], list[SubjectDecision], list[SubjectAdminAction]]:
        """The person's approval requests, decisions and admin actions (index lookups)."""
        async with guard("find a subject's approvals and admin actions"):
            requests = await self._pool.fetch(SUBJECT_APPROVAL_REQUESTS, subject, issuer)
            decisions = await self._pool.fetch(SUBJECT_DECISIONS, subject, issuer)
            actions = await self._pool.fetch(SUBJECT_ADMIN_ACTIONS, subject, issuer)
        return (
            [
                SubjectApprovalRequest(
                    str(r["id"]), r["status"], r["created_at"], r["ended_at"], r["token_issuer"],
                    r["client_id"], r["approver_group"], r["approvals_required"],
                    r["digest_count"], tuple(r["labels"]), r["reason"], r["record_serial"],
                )
                for r in requests
            ],
            [
                SubjectDecision(
                    str(r["id"]), str(r["approval_request"]), r["decision"], r["decided_at"],
                    r["token_issuer"], r["email"], r["log_index"],
                )
                for r in decisions
            ],
            [
                SubjectAdminAction(
                    str(r["id"]), r["role"], r["action"], r["scope"], r["acted_at"],
                    r["token_issuer"], r["client_id"], r["reason"], r["actor_issuer"],
                )
                for r in actions
            ],
        )  # fmt: skip

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
