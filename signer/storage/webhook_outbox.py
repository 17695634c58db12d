"""SQL of the webhook resumer (signer.flows.webhooks.WebhookResumer, issue 14; migration 0016).

An ended signing or approval request whose webhook is not delivered, has attempts left and was
not attempted recently (no live process is retrying it) is due. Every replica claims due rows
by setting ``webhook_claimed_until`` (a lease) in the statement that selects them ``FOR UPDATE
SKIP LOCKED``: a replica skips rows another is claiming and, once that commits, sees the lease,
so no two replicas send the same delivery at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from signer.storage.approvals import ApprovalStore
from signer.storage.records import PoolStore, guard
from signer.storage.signing_requests import SigningRequestStore
from signer.storage.sql import sql

Kind = Literal["signing", "approval"]

# $1 now, $2 lease end, $3 due before (ended and last attempted before it), $4 max attempts,
# $5 batch size.
_DUE = (
    "WHERE webhook_url IS NOT NULL AND webhook_delivered_at IS NULL AND ended_at IS NOT NULL"
    " AND ended_at < $3 AND (webhook_attempted_at IS NULL OR webhook_attempted_at < $3)"
    " AND webhook_attempts < $4"
    " AND (webhook_claimed_until IS NULL OR webhook_claimed_until < $1)"
)
_CLAIM_SIGNING = sql(
    "UPDATE signing_requests AS r SET webhook_claimed_until = $2 FROM rp_clients AS c"
    " WHERE c.client_id = r.client_id AND r.id IN (SELECT id FROM signing_requests", _DUE,
    "ORDER BY ended_at LIMIT $5 FOR UPDATE SKIP LOCKED)"
    " RETURNING r.id, r.status, r.state, r.webhook_url AS url, c.secret_hash",
)  # fmt: skip
_CLAIM_APPROVALS = sql(
    "UPDATE approval_requests AS r SET webhook_claimed_until = $2"
    " WHERE r.webhook_secret_hash IS NOT NULL AND r.id IN (SELECT id FROM approval_requests",
    _DUE, "ORDER BY ended_at LIMIT $5 FOR UPDATE SKIP LOCKED)"
    " RETURNING r.id, r.status, NULL::text AS state, r.webhook_url AS url,"
    " r.webhook_secret_hash AS secret_hash",
)  # fmt: skip


_CLAIMS: tuple[tuple[Kind, str], ...] = (
    ("signing", _CLAIM_SIGNING),
    ("approval", _CLAIM_APPROVALS),
)


@dataclass(frozen=True)
class DueWebhook:
    """A claimed delivery: which request, its end, where to, and the hash its key derives from
    (the RP's ``SHA-256(client_secret)``, or the approval request's webhook secret hash)."""

    kind: Kind
    id: uuid.UUID
    status: str
    state: str | None
    url: str
    secret_hash: bytes


class WebhookOutboxStore(PoolStore):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._signing = SigningRequestStore(pool)
        self._approvals = ApprovalStore(pool)

    async def claim(
        self,
        *,
        now: datetime,
        lease_until: datetime,
        due_before: datetime,
        max_attempts: int,
        limit: int,
    ) -> list[DueWebhook]:
        """Claim up to ``limit`` due deliveries of each kind until ``lease_until``."""
        due: list[DueWebhook] = []
        async with guard("claim due webhooks"), self._pool.acquire() as conn:
            for kind, sql in _CLAIMS:
                rows = await conn.fetch(sql, now, lease_until, due_before, max_attempts, limit)
                due.extend(DueWebhook(kind=kind, **dict(r)) for r in rows)
        return due

    async def record(self, item: DueWebhook, at: datetime, *, result: str, delivered: bool) -> None:
        """One attempt, recorded as the live deliveries record theirs."""
        store = self._signing if item.kind == "signing" else self._approvals
        await store.record_webhook(item.id, at, result=result, delivered=delivered)
