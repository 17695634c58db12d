"""The audit web UI's sessions in PostgreSQL (migration 0004; the login flows are the one
table of :mod:`signer.storage.login_flows`).

The approvers' UI (``signer.http.approvals``) uses the same tables: each session belongs to one
``realm`` (``audit`` or ``approvals``) and is only found in its own, and it keeps the verified
principal as JSON so that group membership can be checked per action.

Keys are SHA-256 hashes of the browser-held random values; the values themselves are never
stored or logged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from signer.storage.records import PoolStore, guard


@dataclass(frozen=True)
class UiSession:
    csrf_token: str
    token_issuer: str
    token_subject: str
    display_name: str
    created_at: datetime
    expires_at: datetime
    realm: str = "audit"
    #: The verified principal (``signer.flows.websign.principal_json``), if kept.
    principal: Mapping[str, Any] | None = None


def _session(row: asyncpg.Record) -> UiSession:
    data = dict(row)
    if data["principal"] is not None:
        data["principal"] = json.loads(data["principal"])
    return UiSession(**data)


class AuditSessionStore(PoolStore):
    """The pool is owned by the caller (the app's cleanup_ctx)."""

    async def create_session(self, id_hash: bytes, session: UiSession, now: datetime) -> None:
        """Store a new session; expired sessions are dropped on the way."""
        async with guard("create audit UI session"), self._pool.acquire() as conn:
            await conn.execute("DELETE FROM audit_ui_sessions WHERE expires_at < $1", now)
            await conn.execute(
                "INSERT INTO audit_ui_sessions (id_hash, csrf_token, token_issuer, token_subject,"
                " display_name, created_at, last_seen, expires_at, realm, principal)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                id_hash,
                session.csrf_token,
                session.token_issuer,
                session.token_subject,
                session.display_name,
                session.created_at,
                now,
                session.expires_at,
                session.realm,
                None if session.principal is None else json.dumps(dict(session.principal)),
            )

    async def touch(
        self, id_hash: bytes, now: datetime, idle: timedelta, realm: str = "audit"
    ) -> UiSession | None:
        """The live session of ``realm`` (seen within ``idle``, before its absolute expiry),
        marked seen."""
        async with guard("read audit UI session"):
            row = await self._pool.fetchrow(
                "UPDATE audit_ui_sessions SET last_seen=$2 WHERE id_hash=$1"
                " AND last_seen > $3 AND expires_at > $2 AND realm=$4 RETURNING csrf_token,"
                " token_issuer, token_subject, display_name, created_at, expires_at, realm,"
                " principal",
                id_hash,
                now,
                now - idle,
                realm,
            )
        return None if row is None else _session(row)

    async def end(self, id_hash: bytes) -> None:
        async with guard("end audit UI session"):
            await self._pool.execute("DELETE FROM audit_ui_sessions WHERE id_hash=$1", id_hash)
