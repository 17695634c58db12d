"""Batch requests held for m-of-n approval, and the approvers' decisions (issue 7).

The state machine is in the SQL (see the migration): :meth:`ApprovalStore.decide` takes the
request's row lock, lets the caller check the decision against the locked row, and in the same
transaction records the decision, appends its log entry (kind ``approval``) and moves the
request on: to ``denied`` on a denial, to ``signing`` when this approval is the m-th. Only the
transaction that moved it to ``signing`` gets ``sign=True`` back, so with any number of
replicas the signature is made exactly once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from signer.storage.records import PoolStore, guard
from signer.storage.sql import Columns, sql
from signer.storage.webhook_attempts import record_attempt

ENDED = ("completed", "failed", "denied", "expired")


@dataclass(frozen=True, kw_only=True)
class NewApprovalRequest:
    """A batch request to hold; ``principal`` is the requester as JSON-able data."""

    id: uuid.UUID
    kind: str
    request_id: str
    created_at: datetime
    expires_at: datetime
    token_issuer: str
    issuer_name: str
    token_subject: str
    client_id: str | None
    display_name: str
    principal: Mapping[str, Any]
    format: str
    profile: str | None
    hash_algorithm: str
    digests: tuple[bytes, ...]
    labels: tuple[str, ...]
    reason: str | None
    approver_group: str
    approvals_required: int
    pdf: bytes | None = None
    pdf_reserved: tuple[int, int] | None = None
    webhook_url: str | None = None
    webhook_secret_hash: bytes | None = None
    #: Kind 'pdf': the baseline level of the signed PDF (EN 319 142-1 §6.3).
    pades_level: str = "b-t"


@dataclass(frozen=True, kw_only=True)
class StoredApprovalRequest(NewApprovalRequest):
    """A held request as stored: what was asked, how it stands, and its decisions so far."""

    status: str
    ended_at: datetime | None
    signed_pdf: bytes | None
    record_serial: str | None
    result: Mapping[str, Any] | None
    error: str | None
    webhook_attempts: int
    webhook_result: str | None
    webhook_attempted_at: datetime | None
    webhook_delivered_at: datetime | None
    decisions: tuple[StoredDecision, ...] = ()

    @property
    def approvals(self) -> int:
        return sum(d.decision == "approved" for d in self.decisions)


@dataclass(frozen=True, kw_only=True)
class NewDecision:
    """One approver's decision; ``entry`` is built by the caller from the locked request."""

    id: uuid.UUID
    decision: str
    request_id: str
    decided_at: datetime
    issuer_name: str
    token_issuer: str
    token_subject: str
    email: str | None
    display_name: str


@dataclass(frozen=True, kw_only=True)
class StoredDecision(NewDecision):
    log_index: int


@dataclass(frozen=True)
class Decided:
    """What :meth:`ApprovalStore.decide` did: the request after the decision, the decision's
    log index, and whether this caller must now sign (it moved the request to 'signing')."""

    request: StoredApprovalRequest
    log_index: int
    sign: bool


#: Called with the locked row (before the decision is stored): raises to refuse, or returns
#: the canonical log entry of the decision.
CheckDecision = Callable[[StoredApprovalRequest], bytes]

_COLUMNS = Columns.of(
    "id, status, kind, request_id, created_at, expires_at, ended_at, token_issuer, issuer_name,"
    " token_subject, client_id, display_name, principal, format, profile, hash_algorithm,"
    " digests, labels, reason, approver_group, approvals_required, pdf, pdf_reserved_start,"
    " pdf_reserved_end, signed_pdf, record_serial, result, error, webhook_url,"
    " webhook_secret_hash, webhook_attempts, webhook_result, webhook_attempted_at,"
    " webhook_delivered_at, pades_level"
)
_DECISION_COLUMNS = Columns.of(
    "id, decision, request_id, decided_at, issuer_name, token_issuer, token_subject, email,"
    " display_name, log_index"
)
_INSERT = sql(
    "INSERT INTO approval_requests (", _COLUMNS.without("ended_at"), ")",
    "VALUES ($1,'pending',$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,"
    "$20,$21,$22,NULL,NULL,NULL,NULL,$23,$24,0,NULL,NULL,NULL,$25)",
)  # fmt: skip
_SELECT = sql("SELECT", _COLUMNS, "FROM approval_requests")
_RETURNING = sql("RETURNING", _COLUMNS)
_EXPIRE = sql(
    "UPDATE approval_requests SET status='expired', ended_at=$1"
    " WHERE status='pending' AND expires_at <= $1", _RETURNING,
)  # fmt: skip
_COMPLETE = sql(
    "UPDATE approval_requests SET status='completed', ended_at=$2, record_serial=$3, result=$4,"
    " signed_pdf=$5 WHERE id=$1 AND status='signing'", _RETURNING,
)  # fmt: skip
_FAIL = sql(
    "UPDATE approval_requests SET status='failed', ended_at=$2, error=$3"
    " WHERE id=$1 AND status='signing'", _RETURNING,
)  # fmt: skip
_INSERT_DECISION = sql(
    "INSERT INTO approval_decisions (", _DECISION_COLUMNS, ", approval_request)",
    "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
)  # fmt: skip
_DECISIONS = sql(
    "SELECT", _DECISION_COLUMNS, "FROM approval_decisions",
    "WHERE approval_request=$1 ORDER BY decided_at, id",
)  # fmt: skip
# The decision's log entry, sequenced like every other (records.py: the log_state row lock).
_APPEND = """
WITH seq AS (UPDATE log_state SET size = size + 1 WHERE id = 1 RETURNING size - 1 AS base)
INSERT INTO log_entries (idx, kind, record_id, entry, leaf_hash)
SELECT seq.base, 'approval', NULL, $1::bytea, sha256('\\x00'::bytea || $1::bytea) FROM seq
RETURNING idx
"""


def _decision(row: asyncpg.Record) -> StoredDecision:
    return StoredDecision(**dict(row))


def _request(row: asyncpg.Record, decisions: Sequence[StoredDecision]) -> StoredApprovalRequest:
    r = dict(row)
    start, end = r.pop("pdf_reserved_start"), r.pop("pdf_reserved_end")
    r["pdf_reserved"] = None if start is None else (start, end)
    r["principal"] = json.loads(r["principal"])
    r["result"] = json.loads(r["result"]) if r["result"] is not None else None
    r["digests"] = tuple(bytes(d) for d in r["digests"])
    r["labels"] = tuple(r["labels"])
    for name in ("pdf", "signed_pdf", "webhook_secret_hash"):
        r[name] = bytes(r[name]) if r[name] is not None else None
    return StoredApprovalRequest(**r, decisions=tuple(decisions))


class ApprovalStore(PoolStore):
    """SQL of approvals; the pool belongs to the caller (the app's cleanup_ctx)."""

    async def create(self, new: NewApprovalRequest) -> None:
        start, end = new.pdf_reserved or (None, None)
        async with guard("store approval request"):
            await self._pool.execute(
                _INSERT,
                new.id, new.kind, new.request_id, new.created_at, new.expires_at,
                new.token_issuer, new.issuer_name, new.token_subject, new.client_id,
                new.display_name, json.dumps(dict(new.principal)), new.format, new.profile,
                new.hash_algorithm, list(new.digests), list(new.labels), new.reason,
                new.approver_group, new.approvals_required, new.pdf, start, end,
                new.webhook_url, new.webhook_secret_hash, new.pades_level,
            )  # fmt: skip

    async def get(self, request_id: uuid.UUID) -> StoredApprovalRequest | None:
        async with guard("read approval request"), self._pool.acquire() as conn:
            return await _load(conn, request_id)

    async def expire(self, now: datetime) -> list[StoredApprovalRequest]:
        """Mark every pending request past its expiry 'expired'; returns them (webhooks)."""
        async with guard("expire approval requests"), self._pool.acquire() as conn:
            rows = await conn.fetch(_EXPIRE, now)
            return [_request(r, await _decisions(conn, r["id"])) for r in rows]

    async def pending(self, limit: int = 200) -> list[StoredApprovalRequest]:
        """Pending requests, oldest first, with their decisions so far."""
        async with guard("list approval requests"), self._pool.acquire() as conn:
            rows = await conn.fetch(
                sql(_SELECT, "WHERE status='pending' ORDER BY created_at LIMIT $1"), limit
            )
            return [_request(r, await _decisions(conn, r["id"])) for r in rows]

    async def decide(
        self, request_id: uuid.UUID, decision: NewDecision, check: CheckDecision
    ) -> Decided | None:
        """Record ``decision`` on the locked request (None: no such request). ``check`` runs
        on the locked row and raises to refuse; nothing is written then."""
        async with guard("record approval decision"), self._pool.acquire() as conn:
            async with conn.transaction():
                row = await conn.fetchrow(sql(_SELECT, "WHERE id=$1 FOR UPDATE"), request_id)
                if row is None:
                    return None
                locked = _request(row, await _decisions(conn, request_id))
                entry = check(locked)
                index: int = await conn.fetchval(_APPEND, entry)
                await conn.execute(
                    _INSERT_DECISION,
                    decision.id, decision.decision, decision.request_id, decision.decided_at,
                    decision.issuer_name, decision.token_issuer, decision.token_subject,
                    decision.email, decision.display_name, index, request_id,
                )  # fmt: skip
                approvals = locked.approvals + (decision.decision == "approved")
                status = locked.status
                if decision.decision == "denied":
                    status = "denied"
                elif approvals >= locked.approvals_required:
                    status = "signing"
                if status != locked.status:
                    await conn.execute(
                        "UPDATE approval_requests SET status=$2,"
                        " ended_at=CASE WHEN $2='denied' THEN $3::timestamptz END WHERE id=$1",
                        request_id,
                        status,
                        decision.decided_at,
                    )
            after = await _load(conn, request_id)
        assert after is not None
        return Decided(after, index, sign=status == "signing" and locked.status == "pending")

    async def complete(
        self,
        request_id: uuid.UUID,
        *,
        at: datetime,
        serial: str,
        result: Mapping[str, Any],
        signed_pdf: bytes | None = None,
    ) -> StoredApprovalRequest | None:
        async with guard("complete approval request"), self._pool.acquire() as conn:
            row = await conn.fetchrow(
                _COMPLETE,
                request_id,
                at,
                serial,
                json.dumps(dict(result)),
                signed_pdf,
            )
            return None if row is None else _request(row, await _decisions(conn, request_id))

    async def fail(
        self, request_id: uuid.UUID, *, at: datetime, error: str
    ) -> StoredApprovalRequest | None:
        async with guard("fail approval request"), self._pool.acquire() as conn:
            row = await conn.fetchrow(_FAIL, request_id, at, error)
            return None if row is None else _request(row, await _decisions(conn, request_id))

    async def record_webhook(
        self, request_id: uuid.UUID, at: datetime, *, result: str, delivered: bool
    ) -> None:
        await record_attempt(
            self._pool, "approval_requests", request_id, at, result=result, delivered=delivered
        )

    async def decisions_by_id(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
        """Decisions with their requests' columns, for ``qes audit verify`` (one query)."""
        async with guard("read approval decisions"):
            return await fetch_decisions(self._pool, ids)


async def fetch_decisions(
    conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, asyncpg.Record]:
    """Each decision joined with what its log entry commits to from the request."""
    rows = await conn.fetch(
        "SELECT d.id, d.decision, d.request_id, d.decided_at, d.issuer_name, d.token_issuer,"
        " d.token_subject, d.email, d.approval_request, r.token_issuer AS requester_issuer,"
        " r.token_subject AS requester_subject, r.approver_group, r.approvals_required,"
        " r.hash_algorithm, r.digests, r.purged_at AS request_purged_at"
        " FROM approval_decisions AS d JOIN approval_requests AS r ON r.id = d.approval_request"
        " WHERE d.id = ANY($1::uuid[])",
        list(ids),
    )
    return {r["id"]: r for r in rows}


async def _decisions(conn: asyncpg.Connection, request_id: uuid.UUID) -> list[StoredDecision]:
    rows = await conn.fetch(_DECISIONS, request_id)
    return [_decision(r) for r in rows]


async def _load(conn: asyncpg.Connection, request_id: uuid.UUID) -> StoredApprovalRequest | None:
    row = await conn.fetchrow(sql(_SELECT, "WHERE id=$1 AND purged_at IS NULL"), request_id)
    return None if row is None else _request(row, await _decisions(conn, request_id))
