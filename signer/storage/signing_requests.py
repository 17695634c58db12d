"""Relying parties, their signing requests and the web signing flow's state (migration 0005).

Everything a second replica needs to serve the next step lives here: the OIDC login in
progress, the consent session and the signature activation. Browser-held values and RP
secrets are stored only as SHA-256 hashes. Login flows, consent sessions and activations are
single-use: the statement that uses one also deletes or consumes it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from signer.storage.policy import LoggedAction, record_action
from signer.storage.records import PoolStore, guard, transaction
from signer.storage.sql import Columns, sql
from signer.storage.webhook_attempts import record_attempt


@dataclass(frozen=True)
class RpClient:
    """A registered relying party; ``redirect_uris`` are matched exactly (RFC 6749 §3.1.2.3).

    ``scopes`` are the registry's tokens (``signer.flows.registry.Scopes`` reads them). The
    previous secret, kept after a rotation, works until ``previous_secret_until``; each
    secret's last use is recorded (to the minute)."""

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    created_at: datetime
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None
    scopes: tuple[str, ...] = ("*",)
    secret_last_used_at: datetime | None = None
    previous_secret_until: datetime | None = None
    previous_secret_last_used_at: datetime | None = None


@dataclass(frozen=True)
class ClientSecrets:
    """What authenticating a client compares against: the current secret's hash and, during a
    rotation's grace period only, the previous one's."""

    client: RpClient
    current: bytes
    previous: bytes | None


@dataclass(frozen=True)
class NewRequest:
    id: uuid.UUID
    client_id: str
    format: str
    profile: str | None
    hash_algorithm: str
    labels: tuple[str, ...]
    digests: tuple[bytes, ...]
    redirect_uri: str
    state: str
    acr: str | None
    acr_accepted: tuple[str, ...] | None
    expected_subject: str | None
    expected_email: str | None
    created_at: datetime
    expires_at: datetime
    #: Where the RP wants to be told that the request ended (``webflow.webhooks``).
    webhook_url: str | None = None
    #: Format 'pades': the baseline level of the signed PDFs (EN 319 142-1 §6.3).
    pades_level: str = "b-t"

    def __post_init__(self) -> None:
        if not self.digests or len(self.labels) != len(self.digests):
            raise ValueError("one label per digest, at least one")


@dataclass(frozen=True, kw_only=True)
class StoredRequest(NewRequest):
    status: str
    ended_at: datetime | None
    signer_subject: str | None
    record_serial: str | None
    result: Mapping[str, Any] | None
    error: str | None
    webhook_attempts: int = 0
    webhook_result: str | None = None
    webhook_attempted_at: datetime | None = None
    webhook_delivered_at: datetime | None = None


@dataclass(frozen=True)
class RequestPdf:
    """A PDF of a 'pades' request: as sent, as prepared (signature field with a zero-filled
    ``/Contents`` at ``[reserved_start, reserved_end)``), and signed once done."""

    original: bytes
    prepared: bytes
    reserved_start: int
    reserved_end: int
    signed: bytes | None = None


@dataclass(frozen=True)
class ConsentSession:
    request_id: uuid.UUID
    csrf_token: str
    principal: Mapping[str, Any]
    expires_at: datetime


@dataclass(frozen=True)
class Activation:
    """Signature activation data (ETSI TS 119 432 SAD; CEN EN 419 241-1 sole control): who
    consented, how they authenticated, to which digests, until when. Single-use."""

    id: uuid.UUID
    request_id: uuid.UUID
    token_issuer: str
    token_subject: str
    email: str | None
    acr: str | None
    auth_time: datetime | None
    hash_algorithm: str
    digests: tuple[bytes, ...]
    created_at: datetime
    expires_at: datetime


#: The columns of a :class:`StoredRequest` (:func:`request_from_row` reads them).
REQUEST_COLUMNS = Columns.of(
    "id, client_id, format, profile, hash_algorithm, labels, digests, redirect_uri, state,"
    " acr, acr_accepted, expected_subject, expected_email, created_at, expires_at, status,"
    " ended_at, signer_subject, record_serial, result, error, webhook_url, webhook_attempts,"
    " webhook_result, webhook_attempted_at, webhook_delivered_at, pades_level"
)
_SELECT_REQUEST = sql("SELECT", REQUEST_COLUMNS, "FROM signing_requests WHERE id=$1")
# One statement consumes the activation and moves its request to 'signing' (see activate()).
_ACTIVATE = (
    "WITH act AS ("
    "  UPDATE signature_activations SET consumed_at=$2"
    "  WHERE id=$1 AND consumed_at IS NULL AND expires_at > $2"
    "  RETURNING request_id, token_issuer, token_subject, email, acr, auth_time,"
    "   hash_algorithm, digests)"
    " UPDATE signing_requests r SET status='signing', signer_issuer=act.token_issuer,"
    "  signer_subject=act.token_subject"
    " FROM act WHERE r.id=act.request_id AND r.status='pending' AND r.expires_at > $2"
    "  AND act.token_issuer=$3"
    "  AND r.hash_algorithm=act.hash_algorithm AND r.digests=act.digests"
    "  AND (r.expected_subject IS NULL OR r.expected_subject=act.token_subject)"
    "  AND (r.expected_email IS NULL OR lower(r.expected_email)=lower(act.email))"
    "  AND (r.acr_accepted IS NULL OR act.acr=ANY(r.acr_accepted))"
    "  AND act.auth_time IS NOT NULL AND act.auth_time >= r.created_at - $4::interval"
    " RETURNING r.id, r.client_id, r.format, r.profile, r.hash_algorithm, r.labels, r.digests,"
    "  r.redirect_uri, r.state, r.acr, r.acr_accepted, r.expected_subject, r.expected_email,"
    "  r.created_at, r.expires_at, r.status, r.ended_at, r.signer_subject, r.record_serial,"
    "  r.result, r.error, r.webhook_url, r.webhook_attempts, r.webhook_result,"
    "  r.webhook_attempted_at, r.webhook_delivered_at, r.pades_level"
)


def _request(row: asyncpg.Record) -> StoredRequest:
    values = dict(row)
    values["labels"] = tuple(values["labels"])
    values["digests"] = tuple(values["digests"])
    accepted = values["acr_accepted"]
    values["acr_accepted"] = None if accepted is None else tuple(accepted)
    values["result"] = None if values["result"] is None else json.loads(values["result"])
    return StoredRequest(**values)


#: A :class:`StoredRequest` from a row of :data:`REQUEST_COLUMNS` (the sweeper's expiry).
request_from_row = _request


_CLIENT_COLUMNS = Columns.of(
    "client_id, name, redirect_uris, created_at, rotated_at, revoked_at, scopes,"
    " secret_last_used_at, previous_secret_until, previous_secret_last_used_at"
)
_GET_CLIENT = sql("SELECT", _CLIENT_COLUMNS, ", secret_hash FROM rp_clients WHERE client_id=$1")
_CLIENT_SECRETS = sql(
    "SELECT", _CLIENT_COLUMNS, ", secret_hash,"
    " CASE WHEN previous_secret_until > $2 THEN previous_secret_hash END AS previous"
    " FROM rp_clients WHERE client_id=$1",
)  # fmt: skip
_ALL_CLIENTS = sql("SELECT", _CLIENT_COLUMNS, "FROM rp_clients ORDER BY created_at, client_id")
# After a rotation the old hash stays valid until $4 (no grace: $4 <= $3, it is dropped at
# once); a rotation within a grace period drops the older one (at most two secrets at once).
_ROTATE = (
    "UPDATE rp_clients SET"
    " previous_secret_hash = CASE WHEN $4::timestamptz > $3 THEN secret_hash END,"
    " previous_secret_until = CASE WHEN $4::timestamptz > $3 THEN $4::timestamptz END,"
    " previous_secret_last_used_at = CASE WHEN $4::timestamptz > $3"
    "  THEN secret_last_used_at END,"
    " secret_hash=$2, secret_last_used_at=NULL, rotated_at=$3"
    " WHERE client_id=$1 AND revoked_at IS NULL RETURNING true"
)
# A use is written at most once a minute per secret, so authentication rarely writes.
_USED = {
    False: "UPDATE rp_clients SET secret_last_used_at=$2 WHERE client_id=$1"
    " AND (secret_last_used_at IS NULL"
    "  OR secret_last_used_at < $2::timestamptz - interval '1 minute')",
    True: "UPDATE rp_clients SET previous_secret_last_used_at=$2 WHERE client_id=$1"
    " AND (previous_secret_last_used_at IS NULL"
    "  OR previous_secret_last_used_at < $2::timestamptz - interval '1 minute')",
}


def _client(row: Mapping[str, Any]) -> RpClient:
    values = {k: row[k] for k in _CLIENT_COLUMNS.names}
    values["redirect_uris"] = tuple(values["redirect_uris"])
    values["scopes"] = tuple(values["scopes"])
    return RpClient(**values)


class RpClientStore(PoolStore):
    """The relying-party registry; the pool is owned by the caller."""

    async def _change(
        self, what: str, logged: LoggedAction | None, query: str, *args: object
    ) -> bool:
        """Run one change; with ``logged`` (the act as an admin action, issue 15 item 5) its
        row and log entry are written in the same transaction, and only when it changed a
        row. Whether it did."""
        async with transaction(self._pool, what) as conn:
            done = await conn.fetchval(query, *args)
            if done and logged is not None:
                await record_action(conn, logged)
        return bool(done)

    async def add(
        self, client: RpClient, secret_hash: bytes, logged: LoggedAction | None = None
    ) -> None:
        await self._change(
            "register relying party",
            logged,
            "INSERT INTO rp_clients (client_id, name, secret_hash, redirect_uris, created_at,"
            " scopes) VALUES ($1,$2,$3,$4,$5,$6) RETURNING true",
            client.client_id,
            client.name,
            secret_hash,
            list(client.redirect_uris),
            client.created_at,
            list(client.scopes),
        )

    async def get(self, client_id: str) -> tuple[RpClient, bytes] | None:
        """The client and its secret hash, revoked ones included (the caller decides)."""
        async with guard("read relying party"):
            row = await self._pool.fetchrow(_GET_CLIENT, client_id)
        return None if row is None else (_client(row), row["secret_hash"])

    async def secrets(self, client_id: str, now: datetime) -> ClientSecrets | None:
        """The client, its secret hash and the previous one while its grace lasts."""
        async with guard("read relying party"):
            row = await self._pool.fetchrow(_CLIENT_SECRETS, client_id, now)
        if row is None:
            return None
        return ClientSecrets(_client(row), row["secret_hash"], row["previous"])

    async def used(self, client_id: str, *, previous: bool, now: datetime) -> None:
        """Record a use of the current (or the previous) secret."""
        async with guard("record relying-party secret use"):
            await self._pool.execute(_USED[previous], client_id, now)

    async def all(self) -> list[RpClient]:
        async with guard("list relying parties"):
            rows = await self._pool.fetch(_ALL_CLIENTS)
        return [_client(r) for r in rows]

    async def rotate(
        self,
        client_id: str,
        secret_hash: bytes,
        now: datetime,
        grace_until: datetime,
        logged: LoggedAction | None = None,
    ) -> bool:
        """Replace the secret of a client that is not revoked; the old one keeps working until
        ``grace_until`` (not at all when that is not after ``now``)."""
        return await self._change(
            "rotate relying-party secret", logged, _ROTATE, client_id, secret_hash, now,
            grace_until,
        )  # fmt: skip

    async def set_scopes(
        self, client_id: str, scopes: Sequence[str], logged: LoggedAction | None = None
    ) -> bool:
        return await self._change(
            "change relying-party scopes",
            logged,
            "UPDATE rp_clients SET scopes=$2 WHERE client_id=$1 AND revoked_at IS NULL"
            " RETURNING true",
            client_id,
            list(scopes),
        )

    async def revoke(
        self, client_id: str, now: datetime, logged: LoggedAction | None = None
    ) -> bool:
        return await self._change(
            "revoke relying party",
            logged,
            "UPDATE rp_clients SET revoked_at=$2, previous_secret_hash=NULL,"
            " previous_secret_until=NULL"
            " WHERE client_id=$1 AND revoked_at IS NULL RETURNING true",
            client_id,
            now,
        )


class SigningRequestStore(PoolStore):
    """Signing requests and the flow state of the browser steps."""

    async def create(self, req: NewRequest, pdfs: Sequence[RequestPdf] = ()) -> None:
        """Store the request (and its prepared PDFs, format 'pades') in one transaction."""
        async with transaction(self._pool, "create signing request") as conn:
            await conn.execute(
                "INSERT INTO signing_requests (id, client_id, status, format, profile,"
                " hash_algorithm, labels, digests, redirect_uri, state, acr, acr_accepted,"
                " expected_subject, expected_email, created_at, expires_at, webhook_url,"
                " pades_level)"
                " VALUES ($1,$2,'pending',$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)",
                req.id,
                req.client_id,
                req.format,
                req.profile,
                req.hash_algorithm,
                list(req.labels),
                list(req.digests),
                req.redirect_uri,
                req.state,
                req.acr,
                None if req.acr_accepted is None else list(req.acr_accepted),
                req.expected_subject,
                req.expected_email,
                req.created_at,
                req.expires_at,
                req.webhook_url,
                req.pades_level,
            )
            if not pdfs:
                return
            await conn.executemany(
                "INSERT INTO signing_request_pdfs (request_id, position, original, prepared,"
                " reserved_start, reserved_end) VALUES ($1,$2,$3,$4,$5,$6)",
                [
                    (req.id, i, p.original, p.prepared, p.reserved_start, p.reserved_end)
                    for i, p in enumerate(pdfs)
                ],
            )

    async def pdfs(self, request_id: uuid.UUID) -> list[RequestPdf]:
        async with guard("read request PDFs"):
            rows = await self._pool.fetch(
                "SELECT original, prepared, reserved_start, reserved_end, signed"
                " FROM signing_request_pdfs WHERE request_id=$1 ORDER BY position",
                request_id,
            )
        return [RequestPdf(**dict(r)) for r in rows]

    async def expire(self, request_id: uuid.UUID, now: datetime) -> bool:
        """Mark a pending request past its expiry 'expired'; True if this call did it."""
        async with guard("expire signing request"):
            done = await self._pool.fetchval(
                "UPDATE signing_requests SET status='expired', ended_at=$2"
                " WHERE id=$1 AND status='pending' AND expires_at <= $2 RETURNING true",
                request_id,
                now,
            )
        return bool(done)

    async def record_webhook(
        self, request_id: uuid.UUID, now: datetime, *, result: str, delivered: bool
    ) -> None:
        """One delivery attempt of the request's completion webhook and how it went."""
        await record_attempt(
            self._pool, "signing_requests", request_id, now, result=result, delivered=delivered
        )

    async def get(self, request_id: uuid.UUID, now: datetime) -> StoredRequest | None:
        """The request; a pending one past its expiry is marked 'expired' on the way."""
        async with guard("read signing request"):
            await self._pool.execute(
                "UPDATE signing_requests SET status='expired', ended_at=$2"
                " WHERE id=$1 AND status='pending' AND expires_at <= $2",
                request_id,
                now,
            )
            row = await self._pool.fetchrow(_SELECT_REQUEST, request_id)
        return None if row is None else _request(row)

    async def create_session(self, id_hash: bytes, session: ConsentSession, now: datetime) -> None:
        """Store a consent session; expired ones are dropped on the way."""
        async with guard("create consent session"), self._pool.acquire() as conn:
            await conn.execute("DELETE FROM signing_consent_sessions WHERE expires_at < $1", now)
            await conn.execute(
                "INSERT INTO signing_consent_sessions (id_hash, request_id, csrf_token,"
                " principal, expires_at) VALUES ($1,$2,$3,$4::jsonb,$5)",
                id_hash,
                session.request_id,
                session.csrf_token,
                json.dumps(dict(session.principal)),
                session.expires_at,
            )

    async def session(
        self, id_hash: bytes, request_id: uuid.UUID, now: datetime
    ) -> ConsentSession | None:
        async with guard("read consent session"):
            row = await self._pool.fetchrow(
                "SELECT request_id, csrf_token, principal, expires_at"
                " FROM signing_consent_sessions"
                " WHERE id_hash=$1 AND request_id=$2 AND expires_at > $3",
                id_hash,
                request_id,
                now,
            )
        return None if row is None else _session(row)

    async def take_session(
        self, id_hash: bytes, request_id: uuid.UUID, now: datetime
    ) -> ConsentSession | None:
        """The consent session, deleted in the same statement: one decision per login."""
        row = await self._take_unexpired(
            "take consent session",
            "DELETE FROM signing_consent_sessions WHERE id_hash=$1 AND request_id=$2"
            " RETURNING request_id, csrf_token, principal, expires_at",
            id_hash,
            request_id,
            now=now,
        )
        return None if row is None else _session(row)

    async def add_activation(self, act: Activation) -> None:
        async with guard("create signature activation"):
            await self._pool.execute(
                "INSERT INTO signature_activations (id, request_id, token_issuer, token_subject,"
                " email, acr, auth_time, hash_algorithm, digests, created_at, expires_at)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                act.id,
                act.request_id,
                act.token_issuer,
                act.token_subject,
                act.email,
                act.acr,
                act.auth_time,
                act.hash_algorithm,
                list(act.digests),
                act.created_at,
                act.expires_at,
            )

    async def activate(
        self, activation_id: uuid.UUID, issuer: str, now: datetime, skew: timedelta
    ) -> StoredRequest | None:
        """Consume the activation and move its request from 'pending' to 'signing', in one
        statement that checks everything sole control needs (ETSI TS 119 432 SAD checks):

        the activation is unused and unexpired; its request is pending and unexpired; the
        digests and hash algorithm are exactly the request's; the subject is the request's
        expected signer (``sub`` or verified e-mail) when one was named; the ``acr`` is one
        the request accepts; the login happened after the request was created (``auth_time``
        no earlier than ``created_at - skew``) and the token came from ``issuer``.

        Returns the request (now 'signing'), or None when any check fails; the activation is
        used up either way.
        """
        async with guard("consume signature activation"):
            row = await self._pool.fetchrow(
                _ACTIVATE,
                activation_id,
                now,
                issuer,
                skew,
            )
        return None if row is None else _request(row)

    async def finish(
        self,
        request_id: uuid.UUID,
        now: datetime,
        *,
        status: str,
        serial: str | None = None,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        signed_pdfs: Sequence[bytes] = (),
    ) -> bool:
        """End a request that is 'signing' (completed or failed), with its signed PDFs."""
        async with transaction(self._pool, "finish signing request") as conn:
            done = await conn.fetchval(
                "UPDATE signing_requests SET status=$2, ended_at=$3, record_serial=$4,"
                " result=$5::jsonb, error=$6 WHERE id=$1 AND status='signing' RETURNING true",
                request_id,
                status,
                now,
                serial,
                None if result is None else json.dumps(dict(result)),
                error,
            )
            if done and signed_pdfs:
                await conn.executemany(
                    "UPDATE signing_request_pdfs SET signed=$3 WHERE request_id=$1 AND position=$2",
                    [(request_id, i, pdf) for i, pdf in enumerate(signed_pdfs)],
                )
        return bool(done)

    async def cancel(
        self,
        request_id: uuid.UUID,
        now: datetime,
        *,
        status: str = "cancelled",
        error: str | None = None,
    ) -> bool:
        """The signer declined (or the IdP refused the login): a pending request becomes
        'cancelled', or 'failed' with ``error`` when the IdP reported a failure."""
        async with guard("cancel signing request"):
            done = await self._pool.fetchval(
                "UPDATE signing_requests SET status=$3, ended_at=$2, error=$4"
                " WHERE id=$1 AND status='pending' RETURNING true",
                request_id,
                now,
                status,
                error,
            )
        return bool(done)

    async def require_acr(self, request_id: uuid.UUID, accepted: Sequence[str]) -> bool:
        """The signing policy needs a stronger login (issue 7): from now on the request accepts
        only ``accepted`` (weakest first), at login and when the activation is consumed."""
        async with guard("require acr"):
            done = await self._pool.fetchval(
                "UPDATE signing_requests SET acr=$2, acr_accepted=$3"
                " WHERE id=$1 AND status='pending' RETURNING true",
                request_id,
                accepted[0],
                list(accepted),
            )
        return bool(done)


def _session(row: asyncpg.Record) -> ConsentSession:
    return ConsentSession(
        request_id=row["request_id"],
        csrf_token=row["csrf_token"],
        principal=json.loads(row["principal"]),
        expires_at=row["expires_at"],
    )
