"""SQL of the retention of finished web-signing requests (issue 17 item 9; migration 0017).

A web-signing request is working state, not evidence: its signing record and log entry stay
for the retention period (:mod:`signer.storage.retention`). Once ended ('completed',
'failed', 'cancelled', 'expired') it is deleted with everything that hangs on it (its PDFs,
as sent, prepared and signed; login flows, consent sessions and activations, all ``ON DELETE
CASCADE``). Requests still 'pending' or 'signing' are never touched here (the sweeper ends
those, :mod:`signer.signing.sweeper`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from signer.storage.records import PoolStore, guard

PURGE_FINISHED = (
    "WITH gone AS (DELETE FROM signing_requests"
    " WHERE status IN ('completed', 'failed', 'cancelled', 'expired') AND ended_at < $1"
    " RETURNING id) SELECT count(*) FROM gone"
)
#: A person's requests: as the signer who logged in, or as the signer an RP named.
_SUBJECT = (
    "SELECT r.id, r.client_id, r.status, r.format, r.created_at, r.ended_at, r.record_serial,"
    " (SELECT count(*) FROM signing_request_pdfs p WHERE p.request_id = r.id) AS pdfs"
    " FROM signing_requests r"
    " WHERE (r.signer_subject = $1 AND ($2::text IS NULL OR r.signer_issuer = $2))"
    "  OR r.expected_subject = $1 ORDER BY r.created_at"
)


@dataclass(frozen=True)
class SubjectWebRequest:
    """A web-signing request of the person, while it is kept."""

    id: str
    client_id: str
    status: str
    format: str
    created_at: datetime
    ended_at: datetime | None
    record_serial: str | None
    pdfs: int


class RequestRetentionStore(PoolStore):
    """Delete finished web-signing requests; find a person's. The pool is the caller's."""

    async def purge_finished(self, ended_before: datetime) -> int:
        """Delete requests that ended before ``ended_before`` (their PDFs go with them)."""
        async with guard("purge finished web-signing requests"):
            count: int = await self._pool.fetchval(PURGE_FINISHED, ended_before)
        return count

    async def subject_requests(self, subject: str, issuer: str | None) -> list[SubjectWebRequest]:
        async with guard("find a subject's web-signing requests"):
            rows = await self._pool.fetch(_SUBJECT, subject, issuer)
        return [
            SubjectWebRequest(
                str(uuid.UUID(str(r["id"]))), r["client_id"], r["status"], r["format"],
                r["created_at"], r["ended_at"], r["record_serial"], r["pdfs"],
            )
            for r in rows
        ]  # fmt: skip
