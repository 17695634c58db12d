"""CSC API state (issue 6): one-shot credentials and their single-use authorizations.

A credential spans several HTTP requests that may reach different replicas, so everything about
it is here, in PostgreSQL (DESIGN.md, "State lives in PostgreSQL"); its key is a token object in
the HSM named by ``key_label``. Authorization secrets (the CSC ``SAD``, or the v2 credential
token) are stored only as SHA-256.

Consumption of an authorization (:meth:`CscStore.take_authorization`) happens in one
transaction holding the row locks of the authorization and its credential: the caller's check
sees both rows, and only when it passes are the authorization marked consumed and the
credential moved to 'signing' (CEN EN 419 241-1 sole control; ETSI TS 119 431-1 SAD checks).
A check that fails rolls back: nothing is consumed, nothing signs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from signer.storage.records import (
    IssuedRecord,
    PoolStore,
    SigningRecord,
    _issued_args,
    guard,
    record_from_row,
    transaction,
)
from signer.storage.sql import Columns, sql

#: Columns of ``csc_credentials`` (aliased ``c``) read with the record row (aliased ``r``).
_CREDENTIAL_COLUMNS = Columns.of(
    "c.id AS credential_id, c.token_issuer AS owner_issuer, c.token_subject AS owner_subject,"
    " c.key_label, c.state, c.created_at AS credential_created_at,"
    " c.expires_at AS credential_expires_at, c.ended_at, c.end_reason"
)
_RECORD_COLUMNS = Columns.of(
    "r.id, r.serial, r.status, r.request_id, r.created_at, r.completed_at, r.token_issuer,"
    " r.issuer_name, r.token_subject, r.client_id, r.profile, r.subject_type, r.subject_dn,"
    " r.not_before, r.not_after, r.certificate, r.key_evidence, r.hash_algorithm, r.digests,"
    " r.signed_count, r.destruction, r.failure, r.signature_format, r.email"
)
_AUTH_COLUMNS = Columns.of(
    "a.credential_id AS auth_credential_id, a.token_issuer AS auth_issuer,"
    " a.token_subject AS auth_subject, a.hash_algorithm AS auth_hash_algorithm,"
    " a.digests AS auth_digests, a.num_signatures, a.acr, a.amr, a.auth_time,"
    " a.expires_at AS auth_expires_at, a.consumed_at"
)
_SELECT_CREDENTIAL = sql(
    "SELECT", _CREDENTIAL_COLUMNS + _RECORD_COLUMNS, "FROM csc_credentials c",
    "JOIN signing_records r ON r.id = c.record_id",
)  # fmt: skip
_FIND_AUTHORIZATION = sql(
    "SELECT", _AUTH_COLUMNS, "FROM csc_authorizations a WHERE a.secret_hash=$1"
)
_TAKE_AUTHORIZATION = sql(
    "SELECT", _AUTH_COLUMNS + _CREDENTIAL_COLUMNS + _RECORD_COLUMNS,
    "FROM csc_authorizations a",
    "JOIN csc_credentials c ON c.id = a.credential_id",
    "JOIN signing_records r ON r.id = c.record_id",
    "WHERE a.secret_hash=$1 FOR UPDATE OF a, c",
)  # fmt: skip
_INSERT_ISSUED = (
    "INSERT INTO signing_records (id, serial, status, request_id, created_at, token_issuer,"
    " issuer_name, token_subject, client_id, profile, subject_type, subject_dn, not_before,"
    " not_after, certificate, key_evidence, hash_algorithm, digests, signature_format, email)"
    " VALUES ($1,$2,'issued',$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)"
)
# How both ends of a credential finish (a CTE ``cred`` has ended the credential, ``done`` begins
# updating its still-'issued' record): the record's issuance entry ($7) is sequenced in the log,
# all in one statement (the same sequencing as records._COMPLETE).
_RECORD_LOGGED = """
      FROM cred
     WHERE r.id = cred.record_id AND r.status = 'issued'
    RETURNING r.id
), seq AS (
    UPDATE log_state SET size = size + 1 WHERE id = 1 AND EXISTS (SELECT 1 FROM done)
    RETURNING size - 1 AS base
)
INSERT INTO log_entries (idx, kind, record_id, entry, leaf_hash)
SELECT seq.base, 'issuance', done.id, $7::bytea, sha256('\\x00'::bytea || $7::bytea)
  FROM done, seq
RETURNING idx
"""
# The signatures exist and the key is destroyed: the credential ends 'signed', its record is
# completed with the digests that were signed.
_COMPLETE = sql(
    """
WITH cred AS (
    UPDATE csc_credentials SET state = 'destroyed', ended_at = $2, end_reason = 'signed'
     WHERE id = $1 AND state = 'signing'
    RETURNING record_id
), done AS (
    UPDATE signing_records AS r
       SET status = 'completed', completed_at = $2, signed_count = $3, destruction = $4::jsonb,
           hash_algorithm = $5, digests = $6::bytea[]""",
    _RECORD_LOGGED,
)
# The key is gone without (all) signatures released: expired unused, or signing failed. The
# credential ends with ``end_reason``, its record fails with ``failure``.
_END = sql(
    """
WITH cred AS (
    UPDATE csc_credentials SET state = 'destroyed', ended_at = $2, end_reason = $3
     WHERE id = $1 AND state = ANY($4::text[])
    RETURNING record_id
), done AS (
    UPDATE signing_records AS r
       SET status = 'failed', completed_at = $2, failure = $5, destruction = $6::jsonb,
           signed_count = 0""",
    _RECORD_LOGGED,
)


@dataclass(frozen=True)
class Credential:
    """A CSC credential: its owner, its HSM key label, its state and its signing record."""

    id: str
    token_issuer: str
    token_subject: str
    key_label: str
    state: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    record: SigningRecord


@dataclass(frozen=True)
class Reservation:
    """A credential ID handed out by ``credentials/list`` before its key exists."""

    id: str
    token_issuer: str
    token_subject: str
    expires_at: datetime


#: One open reservation per identity: a live one is kept (and extended), an expired one
#: replaced. $1 new id, $2 issuer, $3 subject, $4 now, $5 expiry.
_RESERVE = (
    "INSERT INTO csc_reservations (id, token_issuer, token_subject, created_at, expires_at)"
    " VALUES ($1,$2,$3,$4,$5) ON CONFLICT (token_issuer, token_subject) DO UPDATE SET"
    " id = CASE WHEN csc_reservations.expires_at <= $4 THEN EXCLUDED.id"
    "  ELSE csc_reservations.id END,"
    " created_at = CASE WHEN csc_reservations.expires_at <= $4 THEN $4"
    "  ELSE csc_reservations.created_at END,"
    " expires_at = EXCLUDED.expires_at RETURNING id"
)


@dataclass(frozen=True)
class NewCredential:
    id: str
    token_issuer: str
    token_subject: str
    key_label: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class CredentialAuthorization:
    """What an authorization (SAD or v2 credential token) is bound to.

    ``hash_algorithm`` is the digest algorithm's OID (``2.16.840.1.101.3.4.2.1`` for SHA-256),
    ``digests`` the exact hashes in the order they were authorized, ``count`` how many
    signatures (equal to ``len(digests)``), ``acr``/``amr``/``auth_time`` how the owner
    authenticated (OIDC Core §2), ``expires_at`` when the secret stops working.
    """

    credential_id: str
    token_issuer: str
    token_subject: str
    hash_algorithm: str
    digests: tuple[bytes, ...]
    count: int
    expires_at: datetime
    acr: str | None = None
    amr: tuple[str, ...] = ()
    auth_time: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "digests", tuple(bytes(d) for d in self.digests))
        object.__setattr__(self, "amr", tuple(self.amr))
        if not self.digests or self.count != len(self.digests):
            raise ValueError("an authorization binds at least one digest, count = len(digests)")
        if self.expires_at.utcoffset() is None:
            raise ValueError("expires_at must be timezone-aware")


@dataclass(frozen=True)
class StoredAuthorization:
    """An authorization as stored, with whether (and when) it was consumed."""

    binding: CredentialAuthorization
    consumed_at: datetime | None


#: Raises (a RequestError) when the authorization may not be used with this credential.
AuthorizationCheck = Callable[[StoredAuthorization, Credential], None]


def _credential(row: asyncpg.Record) -> Credential:
    return Credential(
        id=row["credential_id"],
        token_issuer=row["owner_issuer"],
        token_subject=row["owner_subject"],
        key_label=row["key_label"],
        state=row["state"],
        created_at=row["credential_created_at"],
        expires_at=row["credential_expires_at"],
        ended_at=row["ended_at"],
        end_reason=row["end_reason"],
        record=record_from_row(row),
    )


def _authorization(row: asyncpg.Record) -> StoredAuthorization:
    return StoredAuthorization(
        binding=CredentialAuthorization(
            credential_id=row["auth_credential_id"],
            token_issuer=row["auth_issuer"],
            token_subject=row["auth_subject"],
            hash_algorithm=row["auth_hash_algorithm"],
            digests=tuple(bytes(d) for d in row["auth_digests"]),
            count=row["num_signatures"],
            expires_at=row["auth_expires_at"],
            acr=row["acr"],
            amr=tuple(row["amr"]),
            auth_time=row["auth_time"],
        ),
        consumed_at=row["consumed_at"],
    )


class CscStore(PoolStore):
    """CSC credentials and authorizations in PostgreSQL (pool owned by the app)."""

    async def create_credential(self, record: IssuedRecord, credential: NewCredential) -> None:
        """Commit the credential's 'issued' record and the credential, together. Must succeed
        before the credential's key may sign anything."""
        async with transaction(self._pool, "record CSC credential") as conn:
            await conn.execute(_INSERT_ISSUED, *_issued_args(record))
            await conn.execute("DELETE FROM csc_reservations WHERE id=$1", credential.id)
            await conn.execute(
                "INSERT INTO csc_credentials (id, record_id, token_issuer, token_subject,"
                " key_label, state, created_at, expires_at)"
                " VALUES ($1,$2,$3,$4,$5,'active',$6,$7)",
                credential.id,
                record.id,
                credential.token_issuer,
                credential.token_subject,
                credential.key_label,
                credential.created_at,
                credential.expires_at,
            )

    async def reserve(
        self, new_id: str, token_issuer: str, token_subject: str, now: datetime, until: datetime
    ) -> str:
        """The owner's open reservation (``new_id`` if there was none live), valid ``until``."""
        async with guard("reserve CSC credential"):
            found: str = await self._pool.fetchval(
                _RESERVE, new_id, token_issuer, token_subject, now, until
            )
        return found

    async def reservation(self, reservation_id: str, now: datetime) -> Reservation | None:
        """A live reservation (not yet made into a credential)."""
        async with guard("read CSC reservation"):
            row = await self._pool.fetchrow(
                "SELECT id, token_issuer, token_subject, expires_at FROM csc_reservations"
                " WHERE id=$1 AND expires_at > $2",
                reservation_id,
                now,
            )
        return None if row is None else Reservation(**dict(row))

    async def claim(self, reservation_id: str, now: datetime, until: datetime) -> bool:
        """Take the live reservation to make its credential (until ``until``); False when
        another request holds it."""
        async with guard("claim CSC reservation"):
            done = await self._pool.fetchval(
                "UPDATE csc_reservations SET claimed_until=$3 WHERE id=$1 AND expires_at > $2"
                " AND (claimed_until IS NULL OR claimed_until <= $2) RETURNING true",
                reservation_id,
                now,
                until,
            )
        return bool(done)

    async def release(self, reservation_id: str) -> None:
        """Give a claimed reservation back (its credential could not be made)."""
        async with guard("release CSC reservation"):
            await self._pool.execute(
                "UPDATE csc_reservations SET claimed_until=NULL WHERE id=$1", reservation_id
            )

    async def count_active(self, token_issuer: str, token_subject: str, now: datetime) -> int:
        """How many unexpired credentials the owner holds that have not signed yet."""
        async with guard("count CSC credentials"):
            n: int = await self._pool.fetchval(
                "SELECT count(*) FROM csc_credentials WHERE token_issuer=$1 AND token_subject=$2"
                " AND state <> 'destroyed' AND expires_at > $3",
                token_issuer,
                token_subject,
                now,
            )
        return n

    async def get(self, credential_id: str) -> Credential | None:
        async with guard("read CSC credential"):
            row = await self._pool.fetchrow(_SELECT_CREDENTIAL + " WHERE c.id=$1", credential_id)
        return None if row is None else _credential(row)

    async def add_authorization(
        self, secret_hash: bytes, grant: CredentialAuthorization, created_at: datetime
    ) -> None:
        """Store an authorization under the SHA-256 of its secret."""
        async with guard("record CSC authorization"):
            await self._pool.execute(
                "INSERT INTO csc_authorizations (secret_hash, credential_id, token_issuer,"
                " token_subject, hash_algorithm, digests, num_signatures, acr, amr, auth_time,"
                " created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
                secret_hash,
                grant.credential_id,
                grant.token_issuer,
                grant.token_subject,
                grant.hash_algorithm,
                list(grant.digests),
                grant.count,
                grant.acr,
                list(grant.amr),
                grant.auth_time,
                created_at,
                grant.expires_at,
            )

    async def find_authorization(self, secret_hash: bytes) -> StoredAuthorization | None:
        """The authorization stored under ``secret_hash`` (consumed or not), for diagnostics."""
        async with guard("read CSC authorization"):
            row = await self._pool.fetchrow(_FIND_AUTHORIZATION, secret_hash)
        return None if row is None else _authorization(row)

    async def take_authorization(
        self, secret_hash: bytes, now: datetime, check: AuthorizationCheck
    ) -> tuple[StoredAuthorization, Credential] | None:
        """Consume the authorization stored under ``secret_hash`` for its credential.

        In one transaction: lock the authorization and its credential (``FOR UPDATE``), run
        ``check`` on both (it raises to refuse: the transaction rolls back and nothing is
        consumed), then mark the authorization consumed and move the credential from 'active'
        to 'signing'. Two concurrent takers of one secret, or of two secrets of one credential,
        serialise on the row locks; the second sees the first's result and is refused by
        ``check``. None when no authorization has that hash.
        """
        async with transaction(self._pool, "consume CSC authorization") as conn:
            row = await conn.fetchrow(_TAKE_AUTHORIZATION, secret_hash)
            if row is None:
                return None
            auth, credential = _authorization(row), _credential(row)
            check(auth, credential)
            await conn.execute(
                "UPDATE csc_authorizations SET consumed_at=$2 WHERE secret_hash=$1",
                secret_hash,
                now,
            )
            await conn.execute(
                "UPDATE csc_credentials SET state='signing' WHERE id=$1", credential.id
            )
        return auth, credential

    async def complete(
        self,
        credential_id: str,
        *,
        at: datetime,
        signed_count: int,
        destruction: Mapping[str, bool],
        hash_algorithm: str,
        digests: Sequence[bytes],
        entry: bytes,
    ) -> int | None:
        """End a 'signing' credential as signed: record completed with the signed digests and
        its log entry appended, in one statement. Returns the entry's index, or None when the
        credential was not 'signing' (then nothing may be released)."""
        async with guard("complete CSC credential"):
            idx: int | None = await self._pool.fetchval(
                _COMPLETE,
                credential_id,
                at,
                signed_count,
                json.dumps(dict(destruction)),
                hash_algorithm,
                list(digests),
                entry,
            )
        return idx

    async def end(
        self,
        credential_id: str,
        *,
        from_states: Sequence[str],
        end_reason: str,
        failure: str,
        destruction: Mapping[str, bool] | None,
        at: datetime,
        entry: bytes,
    ) -> int | None:
        """End a credential whose key is destroyed without releasing signatures (expired
        unused, or signing failed): the record fails with ``failure`` and its entry is logged.
        Returns the entry's index, or None when the credential was not in ``from_states``
        (another process ended it first)."""
        async with guard("end CSC credential"):
            idx: int | None = await self._pool.fetchval(
                _END,
                credential_id,
                at,
                end_reason,
                list(from_states),
                failure,
                json.dumps(dict(destruction)) if destruction is not None else None,
                entry,
            )
        return idx

    async def expired(self, now: datetime, *, limit: int = 100) -> Sequence[Credential]:
        """Credentials whose certificate has expired and whose key may still exist."""
        async with guard("find expired CSC credentials"):
            rows = await self._pool.fetch(
                _SELECT_CREDENTIAL + " WHERE c.state <> 'destroyed' AND c.expires_at <= $1"
                " ORDER BY c.expires_at LIMIT $2",
                now,
                limit,
            )
        return [_credential(r) for r in rows]

    async def prune(self, ended_before: datetime) -> int:
        """Delete the working rows of credentials that ended before ``ended_before`` (their
        authorizations go with them, and the v2 OAuth2 requests that ended by then): the
        audit record is the signing record and its log entry, which stay; these rows only
        repeat who asked for which digests (data minimisation, GDPR Art. 5(1)(c)).
        Returns how many credentials were deleted."""
        async with transaction(self._pool, "prune ended CSC credentials") as conn:
            await conn.execute(
                "DELETE FROM csc_oauth2_requests WHERE ended_at < $1"
                " OR (ended_at IS NULL AND expires_at < $1"
                " AND coalesce(code_expires_at, expires_at) < $1)",
                ended_before,
            )
            await conn.execute("DELETE FROM csc_reservations WHERE expires_at < $1", ended_before)
            deleted: int = await conn.fetchval(
                "WITH gone AS (DELETE FROM csc_credentials"
                " WHERE state = 'destroyed' AND ended_at < $1 RETURNING 1)"
                " SELECT count(*) FROM gone",
                ended_before,
            )
        return deleted

    async def known_labels(self, labels: Sequence[str]) -> Mapping[str, str]:
        """Of ``labels``, those that name a credential not yet destroyed, with its state."""
        async with guard("read CSC credential labels"):
            rows = await self._pool.fetch(
                "SELECT key_label, state FROM csc_credentials WHERE key_label = ANY($1::text[])"
                " AND state <> 'destroyed'",
                list(labels),
            )
        return {r["key_label"]: r["state"] for r in rows}


__all__ = [
    "AuthorizationCheck",
    "Credential",
    "CredentialAuthorization",
    "CscStore",
    "NewCredential",
    "Reservation",
    "StoredAuthorization",
]
