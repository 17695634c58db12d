"""One webhook delivery attempt, recorded the same way on a signing request and on an approval
request: both tables have the same webhook columns (migrations 0007 and 0012)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import asyncpg

from signer.storage.records import guard
from signer.storage.sql import sql

Table = Literal["signing_requests", "approval_requests"]

# $1 request id, $2 attempted at, $3 result, $4 delivered.
_RECORD: dict[Table, str] = {
    table: sql(
        "UPDATE", table, "SET webhook_attempts = webhook_attempts + 1,"
        " webhook_result=$3, webhook_attempted_at=$2,"
        " webhook_delivered_at = CASE WHEN $4 THEN $2 ELSE webhook_delivered_at END"
        " WHERE id=$1",
    )
    for table in ("signing_requests", "approval_requests")
}  # fmt: skip


async def record_attempt(
    pool: asyncpg.Pool,
    table: Table,
    request_id: uuid.UUID,
    at: datetime,
    *,
    result: str,
    delivered: bool,
) -> None:
    """Count the attempt, keep its result, and mark the webhook delivered when it was."""
    async with guard(f"record webhook attempt ({table})"):
        await pool.execute(_RECORD[table], request_id, at, result, delivered)
