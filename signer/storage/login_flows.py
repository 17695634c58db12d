"""The one table of browser logins in progress (migration 0014): every surface's OpenID
Connect authorization requests (RFC 6749 §4.1, RFC 7636, OIDC Core §3.1.2.1).

Keys are SHA-256 hashes of the browser-held flow id; the value itself is never stored. A flow
is single-use: :meth:`LoginFlowStore.take` deletes the row it returns, so a replayed callback
finds nothing, and a flow is only found by the surface (``purpose``) that started it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from signer.storage.records import PoolStore, transaction


@dataclass(frozen=True)
class LoginFlow:
    """One login in progress: what it is for and the values the callback must match."""

    purpose: str
    subject_id: uuid.UUID | None
    state: str
    nonce: str
    verifier: str
    return_to: str | None
    expires_at: datetime


class LoginFlowStore(PoolStore):
    """The pool is owned by the caller (the app's cleanup context)."""

    async def save(self, id_hash: bytes, flow: LoginFlow, now: datetime) -> None:
        """Store a new flow; expired flows of every surface are dropped on the way."""
        async with transaction(self._pool, "save login flow") as conn:
            await conn.execute("DELETE FROM login_flows WHERE expires_at < $1", now)
            await conn.execute(
                "INSERT INTO login_flows (id_hash, purpose, subject_id, state, nonce, verifier,"
                " return_to, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                id_hash,
                flow.purpose,
                flow.subject_id,
                flow.state,
                flow.nonce,
                flow.verifier,
                flow.return_to,
                flow.expires_at,
            )

    async def take(self, id_hash: bytes, purpose: str, now: datetime) -> LoginFlow | None:
        """The unexpired flow ``purpose`` started for this browser, deleted in the same
        statement (single use)."""
        row = await self._take_unexpired(
            "take login flow",
            "DELETE FROM login_flows WHERE id_hash=$1 AND purpose=$2 RETURNING purpose,"
            " subject_id, state, nonce, verifier, return_to, expires_at",
            id_hash,
            purpose,
            now=now,
        )
        return None if row is None else LoginFlow(**dict(row))
