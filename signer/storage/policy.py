"""Policy state shared by every replica: rate-limit windows, suspensions, admin actions.

Rate limits count in fixed UTC windows (the minute, the day) per identity. One statement
(``policy_rate_take``) upserts the windows (the row lock serializes concurrent requests of the
same identity, on any replica) and undoes its counts when a limit is exceeded, so a refused
request consumes nothing.

A suspend or resume is one transaction: the action row, the change to ``suspensions``, the
version bump that pollers see, the log entry (``ca.logentry`` kind 0x04, sequenced like the
other entries) and ``pg_notify('qes_suspensions')`` (delivered at commit, PostgreSQL NOTIFY).
Every other admin act (an RP client changed, a CA certificate revoked or replaced) writes its
action row and log entry with :func:`record_action` in the transaction of the act itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from signer.storage.records import PoolStore, guard, transaction
from signer.storage.sql import Columns, sql

NOTIFY_CHANNEL = "qes_suspensions"
SPANS = ("minute", "day")

_LOG_ADMIN = """
WITH seq AS (UPDATE log_state SET size = size + 1 WHERE id = 1 RETURNING size - 1 AS base)
INSERT INTO log_entries (idx, kind, record_id, entry, leaf_hash)
SELECT seq.base, 'admin', NULL, $1::bytea, sha256('\\x00'::bytea || $1::bytea) FROM seq
RETURNING idx
"""
_ACTION_COLUMNS = Columns.of(
    "id, request_id, action, scope, token_issuer, token_subject, client_id, reason,"
    " actor_issuer, actor_subject, acted_at, detail, certificate_serial, target_sha256"
)
_INSERT_ACTION = sql(
    "INSERT INTO admin_actions (", _ACTION_COLUMNS, ")",
    "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
)  # fmt: skip
_ACTIONS_BY_ID = sql(
    "SELECT", _ACTION_COLUMNS + Columns(("purged_at",)), "FROM admin_actions",
    "WHERE id = ANY($1::uuid[])",
)  # fmt: skip


@dataclass(frozen=True)
class Window:
    span: str  # 'minute' | 'day'
    starts_at: datetime
    limit: int


#: Scopes whose target is only a SHA-256: a policy file's content, a key-ceremony step
#: (:mod:`ca.ceremony`).
_DIGEST_SCOPES = ("policy", "ceremony")


@dataclass(frozen=True)
class Target:
    """What an admin act applies to: an identity, an RP client, or everything (what a
    suspension applies to), a CA certificate (serial and SHA-256 of its DER), a policy
    file's content or a key-ceremony step (its SHA-256)."""

    scope: str  # 'identity' | 'client' | 'all' | 'certificate' | 'policy' | 'ceremony'
    token_issuer: str | None = None
    token_subject: str | None = None
    client_id: str | None = None
    certificate_serial: int | None = None
    target_sha256: bytes | None = None

    def __post_init__(self) -> None:
        identity = self.token_issuer is not None and self.token_subject is not None
        certificate = self.certificate_serial is not None and self.target_sha256 is not None
        if self.scope not in ("identity", "client", "all", "certificate", *_DIGEST_SCOPES):
            raise ValueError(f"unknown scope {self.scope!r}")
        given = {"identity": identity, "client": self.client_id is not None}
        given["certificate"] = certificate
        given["digest"] = self.target_sha256 is not None and self.certificate_serial is None
        scope = "digest" if self.scope in _DIGEST_SCOPES else self.scope
        if any(v != (scope == name) for name, v in given.items()):
            raise ValueError(f"scope {self.scope}: target fields do not match")

    def describe(self) -> str:
        if self.scope == "identity":
            return f"identity {self.token_issuer} {self.token_subject}"
        if self.scope == "client":
            return f"client {self.client_id}"
        if self.scope == "certificate":
            return f"certificate {self.certificate_serial:x}"
        if self.scope in _DIGEST_SCOPES and self.target_sha256 is not None:
            return f"{self.scope} {self.target_sha256.hex()}"
        return "the whole signer"


@dataclass(frozen=True)
class AdminAction:
    id: uuid.UUID
    request_id: str
    action: str  # one of ca.logentry.ADMIN_ACTIONS
    target: Target
    reason: str | None
    actor_issuer: str | None
    actor_subject: str
    acted_at: datetime
    #: A tombstone of ``qes audit purge``: subjects, client id and reason are erased.
    purged: bool = False
    #: A code the service writes (scopes, grace, role and RFC 5280 reason), never free text.
    detail: str | None = None


@dataclass(frozen=True)
class LoggedAction:
    """An admin act's row and its encoded log entry, written together by
    :func:`record_action`."""

    action: AdminAction
    entry: bytes


@dataclass(frozen=True)
class Suspension:
    target: Target
    action: AdminAction  # the suspend that is in force


def _action(row: asyncpg.Record) -> AdminAction:
    serial = row.get("certificate_serial")
    target = Target(
        row["scope"],
        row["token_issuer"],
        row["token_subject"],
        row["client_id"],
        None if serial is None else int(serial, 16),
        None if row.get("target_sha256") is None else bytes(row["target_sha256"]),
    )
    return AdminAction(
        id=row["id"],
        request_id=row["request_id"],
        action=row["action"],
        target=target,
        reason=row["reason"],
        actor_issuer=row["actor_issuer"],
        actor_subject=row["actor_subject"],
        acted_at=row["acted_at"],
        purged=row.get("purged_at") is not None,
        detail=row.get("detail"),
    )


async def record_action(
    conn: asyncpg.Connection, logged: LoggedAction, *, once: bool = False
) -> int | None:
    """Write an admin act's row and sequence its log entry, on the caller's connection (in
    the transaction of the act itself, so neither exists without the other); the entry's
    index. ``once``: nothing (None) when a unique index says the act is logged already
    (``admin_actions_policy_once``)."""
    a, t = logged.action, logged.action.target
    serial = None if t.certificate_serial is None else format(t.certificate_serial, "x")
    inserted = await conn.fetchval(
        _INSERT_ACTION + (" ON CONFLICT DO NOTHING RETURNING true" if once else " RETURNING true"),
        a.id,
        a.request_id,
        a.action,
        t.scope,
        t.token_issuer,
        t.token_subject,
        t.client_id,
        a.reason,
        a.actor_issuer,
        a.actor_subject,
        a.acted_at,
        a.detail,
        serial,
        t.target_sha256,
    )
    if not inserted:
        return None
    idx: int = await conn.fetchval(_LOG_ADMIN, logged.entry)
    return idx


def _key(t: Target) -> tuple[str, str, str, str]:
    return (t.scope, t.token_issuer or "", t.token_subject or "", t.client_id or "")


class PolicyStore(PoolStore):
    """SQL of the signing policy and the kill switch (no I/O in ``__init__``)."""

    async def count(self, issuer: str, subject: str, windows: Sequence[Window]) -> str | None:
        """Count one request in each window; the span whose limit it would pass (nothing is
        counted then), else None. One statement: ``policy_rate_take`` (migration)."""
        async with guard("count rate limit"):
            over: str | None = await self._pool.fetchval(
                "SELECT policy_rate_take($1, $2, $3::text[], $4::timestamptz[], $5::int[])",
                issuer,
                subject,
                [w.span for w in windows],
                [w.starts_at for w in windows],
                [w.limit for w in windows],
            )
        return over

    async def version(self) -> int:
        async with guard("read suspensions version"):
            version: int = await self._pool.fetchval(
                "SELECT version FROM suspensions_version WHERE id = 1"
            )
        return version

    async def suspensions(self) -> tuple[int, list[Suspension]]:
        """The version and every suspension in force (one snapshot)."""
        async with (
            guard("read suspensions"),
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            version = await conn.fetchval("SELECT version FROM suspensions_version WHERE id = 1")
            rows = await conn.fetch(
                "SELECT a.* FROM suspensions AS s JOIN admin_actions AS a"
                " ON a.id = s.action_id ORDER BY a.acted_at"
            )
        return version, [Suspension(a.target, a) for a in map(_action, rows)]

    async def act(self, action: AdminAction, entry: bytes) -> bool:
        """Apply a suspend or resume with its log entry; False (and nothing written) when it
        changes nothing (already suspended / not suspended)."""
        t = action.target
        async with transaction(self._pool, "record administrative action") as conn:
            await conn.execute("SELECT version FROM suspensions_version WHERE id = 1 FOR UPDATE")
            exists = await conn.fetchval(
                "SELECT true FROM suspensions WHERE scope = $1 AND token_issuer = $2"
                " AND token_subject = $3 AND client_id = $4",
                *_key(t),
            )
            if bool(exists) == (action.action == "suspend"):
                return False
            await record_action(conn, LoggedAction(action, entry))
            if action.action == "suspend":
                await conn.execute(
                    "INSERT INTO suspensions (scope, token_issuer, token_subject, client_id,"
                    " action_id) VALUES ($1,$2,$3,$4,$5)",
                    *_key(t),
                    action.id,
                )
            else:
                await conn.execute(
                    "DELETE FROM suspensions WHERE scope = $1 AND token_issuer = $2"
                    " AND token_subject = $3 AND client_id = $4",
                    *_key(t),
                )
            version = await conn.fetchval(
                "UPDATE suspensions_version SET version = version + 1 WHERE id = 1"
                " RETURNING version"
            )
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(version))
        return True

    async def record(self, acts: Sequence[LoggedAction]) -> None:
        """Admin acts that are not a change of this database's rows (a CA key replaced in the
        HSM): their rows and log entries, in one transaction."""
        async with transaction(self._pool, "record admin acts") as conn:
            for logged in acts:
                await record_action(conn, logged)

    async def record_once(self, logged: LoggedAction) -> bool:
        """An act logged at most once (a policy file's content): whether this call logged it."""
        async with transaction(self._pool, "record admin act") as conn:
            return await record_action(conn, logged, once=True) is not None

    async def recent_actions(
        self, *, before: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[AdminAction]:
        """Admin actions, newest first, each older than ``before`` (``acted_at``, ``id``: the
        last one of the page before); for the audit UI's Administration page."""
        after = "" if before is None else "WHERE (acted_at, id) < ($2, $3)"
        args = () if before is None else before
        async with guard("read admin actions"):
            rows = await self._pool.fetch(
                sql(
                    "SELECT", _ACTION_COLUMNS + Columns(("purged_at",)), "FROM admin_actions",
                    after, "ORDER BY acted_at DESC, id DESC LIMIT $1",
                ),
                limit,
                *args,
            )  # fmt: skip
        return [_action(r) for r in rows]

    @staticmethod
    async def actions_on(
        conn: asyncpg.Connection, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, AdminAction]:
        """Admin actions by id, on the caller's connection (``qes audit verify`` rebuilds
        their entries inside its snapshot)."""
        async with guard("read admin actions"):
            rows = await conn.fetch(
                _ACTIONS_BY_ID,
                list(ids),
            )
        return {r["id"]: _action(r) for r in rows}
