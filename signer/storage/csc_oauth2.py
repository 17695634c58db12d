"""The CSC v2 OAuth2 credential flow's state (table ``csc_oauth2_requests``).

One row per ``oauth2/authorize`` request, moving ``login`` → ``consent`` → ``approved`` →
``redeemed`` (or ``denied``/``failed``). Each browser-held value (login-flow cookie, consent
cookie) and the authorization code is stored as SHA-256 only and cleared by the one statement
that uses it, so each step happens at most once whichever replica serves it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from signer.storage.records import PoolStore, guard, transaction
from signer.storage.sql import Columns, sql


@dataclass(frozen=True)
class NewAuthorization:
    """A validated ``oauth2/authorize`` request (CSC API v2 §8.4.2, ``scope=credential``)."""

    id: uuid.UUID
    client_id: str
    redirect_uri: str
    state: str | None
    credential_id: str
    num_signatures: int
    hash_algorithm_oid: str
    hashes: tuple[bytes, ...]
    code_challenge: str
    description: str | None
    lang: str | None
    created_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        if not self.hashes or len(self.hashes) != self.num_signatures:
            raise ValueError("one hash per authorised signature, at least one")


@dataclass(frozen=True, kw_only=True)
class StoredAuthorization(NewAuthorization):
    status: str
    principal: Mapping[str, Any] | None
    signer_issuer: str | None
    signer_subject: str | None
    csrf_token: str | None
    redeemed_at: datetime | None
    token_ref: str | None
    error: str | None


_COLUMNS = Columns.of(
    "id, client_id, redirect_uri, state, credential_id, num_signatures, hash_algorithm_oid,"
    " hashes, code_challenge, description, lang, created_at, expires_at, status, principal,"
    " signer_issuer, signer_subject, csrf_token, redeemed_at, token_ref, error"
)

#: Ended rows keep no browser handle, OIDC secret or verified login (data minimisation).
_CLEARED = "session_hash=NULL, csrf_token=NULL, principal=NULL"
_EXPIRE = sql(
    "UPDATE csc_oauth2_requests SET status='expired', error='expired', ended_at=$1,", _CLEARED,
    "WHERE (status IN ('login', 'consent') AND expires_at <= $1)"
    " OR (status='approved' AND code_expires_at <= $1)",
)  # fmt: skip
_RETURNING = sql("RETURNING", _COLUMNS)
_SELECT = sql("SELECT", _COLUMNS, "FROM csc_oauth2_requests")


def _row(row: asyncpg.Record) -> StoredAuthorization:
    values = {k: row[k] for k in _COLUMNS.names}
    values["hashes"] = tuple(values["hashes"])
    principal = values["principal"]
    values["principal"] = None if principal is None else json.loads(principal)
    return StoredAuthorization(**values)


class CscOAuth2Store(PoolStore):
    """The pool is owned by the caller."""

    async def _one(self, what: str, statement: str, *args: object) -> StoredAuthorization | None:
        """The request that ``statement`` reads or changes (one row at most), under :func:`guard`
        (``what`` names the operation in the error)."""
        async with guard(what):
            row = await self._pool.fetchrow(statement, *args)
        return None if row is None else _row(row)

    async def create(self, new: NewAuthorization) -> None:
        """Store the request (status ``login``: its login is in :mod:`signer.storage.login_flows`);
        open requests past their expiry (and approved ones whose code expired) end as
        ``expired`` on the way."""
        async with transaction(self._pool, "create CSC OAuth2 authorization") as conn:
            await conn.execute(_EXPIRE, new.created_at)
            await conn.execute(
                "INSERT INTO csc_oauth2_requests (id, client_id, redirect_uri, state,"
                " credential_id, num_signatures, hash_algorithm_oid, hashes, code_challenge,"
                " description, lang, status, created_at, expires_at) VALUES"
                " ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,'login',$12,$13)",
                new.id,
                new.client_id,
                new.redirect_uri,
                new.state,
                new.credential_id,
                new.num_signatures,
                new.hash_algorithm_oid,
                list(new.hashes),
                new.code_challenge,
                new.description,
                new.lang,
                new.created_at,
                new.expires_at,
            )

    async def logging_in(self, request_id: uuid.UUID, now: datetime) -> StoredAuthorization | None:
        """The request whose login the callback finishes: still in ``login`` and unexpired.
        The login flow itself was used up (single use) by its own table."""
        return await self._one(
            "read CSC OAuth2 login",
            sql(_SELECT, "WHERE id=$1 AND status='login' AND expires_at > $2"),
            request_id,
            now,
        )

    async def open_consent(
        self,
        request_id: uuid.UUID,
        session_hash: bytes,
        csrf_token: str,
        principal: Mapping[str, Any],
        now: datetime,
    ) -> bool:
        """The credential owner logged in: the consent session opens (``login`` → ``consent``)."""
        async with guard("open CSC OAuth2 consent"):
            done = await self._pool.fetchval(
                "UPDATE csc_oauth2_requests SET status='consent', session_hash=$2,"
                " csrf_token=$3, principal=$4::jsonb, signer_issuer=$5, signer_subject=$6"
                " WHERE id=$1 AND status='login' AND expires_at > $7 RETURNING true",
                request_id,
                session_hash,
                csrf_token,
                json.dumps(dict(principal)),
                principal["issuer"],
                principal["subject"],
                now,
            )
        return bool(done)

    async def consent(
        self, request_id: uuid.UUID, session_hash: bytes, now: datetime
    ) -> StoredAuthorization | None:
        """The request awaiting this browser's decision, if it still does."""
        return await self._one(
            "read CSC OAuth2 consent",
            sql(
                _SELECT,
                "WHERE id=$1 AND session_hash=$2 AND status='consent' AND expires_at > $3",
            ),
            request_id,
            session_hash,
            now,
        )

    async def approve(
        self,
        request_id: uuid.UUID,
        session_hash: bytes,
        code_hash: bytes,
        code_expires_at: datetime,
        now: datetime,
    ) -> StoredAuthorization | None:
        """The owner chose Sign: the consent session is used up and the code is issued."""
        return await self._one(
            "approve CSC OAuth2 authorization",
            sql(
                "UPDATE csc_oauth2_requests SET status='approved', session_hash=NULL,"
                " csrf_token=NULL, code_hash=$3, code_expires_at=$4"
                " WHERE id=$1 AND session_hash=$2 AND status='consent' AND expires_at > $5",
                _RETURNING,
            ),
            request_id,
            session_hash,
            code_hash,
            code_expires_at,
            now,
        )

    async def end(
        self,
        request_id: uuid.UUID,
        now: datetime,
        *,
        status: str,
        error: str,
        session_hash: bytes | None = None,
    ) -> StoredAuthorization | None:
        """End a request still in ``login`` or ``consent`` as ``denied`` or ``failed``; with
        ``session_hash``, only the consent this browser holds (its Cancel)."""
        return await self._one(
            "end CSC OAuth2 authorization",
            sql(
                "UPDATE csc_oauth2_requests SET status=$3, error=$4, ended_at=$2,",
                _CLEARED,
                "WHERE id=$1 AND status IN ('login', 'consent')"
                " AND ($5::bytea IS NULL OR session_hash=$5)",
                _RETURNING,
            ),
            request_id,
            now,
            status,
            error,
            session_hash,
        )

    async def redeem(
        self, code_hash: bytes, client_id: str, now: datetime
    ) -> StoredAuthorization | None:
        """Use up an unexpired, unused code issued to ``client_id`` (RFC 6749 §4.1.3).
        Another client's attempt leaves the code alone."""
        return await self._one(
            "redeem CSC OAuth2 code",
            sql(
                "UPDATE csc_oauth2_requests SET status='redeemed', redeemed_at=$3"
                " WHERE code_hash=$1 AND client_id=$2 AND status='approved'"
                " AND code_expires_at > $3",
                _RETURNING,
            ),
            code_hash,
            client_id,
            now,
        )

    async def mark_reused(
        self, code_hash: bytes, client_id: str, now: datetime
    ) -> tuple[uuid.UUID, str | None] | None:
        """A code of ``client_id`` that was already redeemed is presented again: record it
        and return the request and the handle of the token issued for it, if any."""
        async with guard("record CSC OAuth2 code reuse"):
            row = await self._pool.fetchrow(
                "UPDATE csc_oauth2_requests SET reused_at=coalesce(reused_at, $3)"
                " WHERE code_hash=$1 AND client_id=$2 AND redeemed_at IS NOT NULL"
                " RETURNING id, token_ref",
                code_hash,
                client_id,
                now,
            )
        return None if row is None else (row["id"], row["token_ref"])

    async def attach_token(self, request_id: uuid.UUID, token_ref: str, now: datetime) -> bool:
        """Remember the issued token's handle; False when the code was presented again
        meanwhile (the caller then revokes the token: RFC 6749 §4.1.2)."""
        async with guard("attach CSC OAuth2 token"):
            done = await self._pool.fetchval(
                sql(
                    "UPDATE csc_oauth2_requests SET token_ref=$2, ended_at=$3,",
                    _CLEARED,
                    "WHERE id=$1 AND status='redeemed' AND reused_at IS NULL RETURNING true",
                ),
                request_id,
                token_ref,
                now,
            )
        return bool(done)

    async def fail_redeemed(self, request_id: uuid.UUID, now: datetime, error: str) -> None:
        """A redeemed code that yielded no token (wrong verifier, credential gone)."""
        async with guard("fail CSC OAuth2 code"):
            await self._pool.execute(
                sql(
                    "UPDATE csc_oauth2_requests SET status='failed', error=$3, ended_at=$2,",
                    _CLEARED,
                    "WHERE id=$1 AND status='redeemed' AND token_ref IS NULL",
                ),
                request_id,
                now,
                error,
            )

    async def get(self, request_id: uuid.UUID) -> StoredAuthorization | None:
        return await self._one(
            "read CSC OAuth2 authorization", sql(_SELECT, "WHERE id=$1"), request_id
        )

    async def revoke_authorization(self, secret_hash: bytes, now: datetime) -> bool:
        """Revoke an unconsumed CSC authorization (a credential token) by ending its life now:
        ``signHash`` then refuses it as expired. False when it is unknown or already used."""
        async with guard("revoke CSC authorization"):
            done = await self._pool.fetchval(
                "UPDATE csc_authorizations SET expires_at=least(expires_at, $2)"
                " WHERE secret_hash=$1 AND consumed_at IS NULL RETURNING true",
                secret_hash,
                now,
            )
        return bool(done)
