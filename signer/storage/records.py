"""Signing records, idempotency keys and token replay records in PostgreSQL.

All SQL of the service lives in this package. Every database failure surfaces as
:class:`~signer.errors.DatabaseUnavailable`, which the pipeline treats as "release nothing".
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from signer.errors import DatabaseUnavailable
from signer.storage.sql import Columns, sql


@asynccontextmanager
async def guard(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


@asynccontextmanager
async def transaction(pool: asyncpg.Pool, what: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of ``pool`` inside one transaction, under :func:`guard` (``what`` names the
    operation in the error): committed when the block ends, rolled back when it raises."""
    async with guard(what), pool.acquire() as conn, conn.transaction():
        yield conn


class PoolStore:
    """A store: SQL statements run on a pool that belongs to the caller (DESIGN.md rule 5)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _take_unexpired(
        self, what: str, statement: str, *args: object, now: datetime
    ) -> asyncpg.Record | None:
        """The row a single-use ``DELETE … RETURNING …, expires_at`` statement took, or None
        when there was none or it had expired at ``now`` (gone either way: used once)."""
        async with guard(what):
            row = await self._pool.fetchrow(statement, *args)
        return None if row is None or row["expires_at"] <= now else row


# A request holds its Idempotency-Key at most this long; longer means its process died.
ABANDONED_AFTER = timedelta(minutes=2)


@dataclass(frozen=True)
class IssuedRecord:
    """What is known when the certificate exists and before the key signs anything."""

    id: uuid.UUID
    serial: str
    request_id: str
    created_at: datetime
    token_issuer: str
    issuer_name: str
    token_subject: str
    client_id: str | None
    profile: str
    subject_type: str
    subject_dn: str
    not_before: datetime
    not_after: datetime
    certificate_der: bytes
    key_evidence: Mapping[str, bool]
    hash_algorithm: str
    digests: tuple[bytes, ...]
    signature_format: str = "raw"
    #: The certificate's subjectAltName e-mail (natural persons), for search.
    email: str | None = None


@dataclass(frozen=True)
class Completion:
    """How a record ends well: its signatures exist and its key is destroyed."""

    record_id: uuid.UUID
    at: datetime
    signed_count: int
    destruction: Mapping[str, bool]
    idempotency: IdempotencyKey | None = None
    response: Mapping[str, Any] | None = None
    time_stamps: Sequence[bytes] = ()
    #: The canonical log entry (:class:`ca.logentry.IssuanceEntry`) appended with the record.
    entry: bytes = b""
    #: The entry's keyed subject index (:func:`signer.translog.log.subject_index`).
    subject_key: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class SigningRecord(IssuedRecord):
    """A row as auditors see it: the issued record plus how the request ended."""

    status: str
    completed_at: datetime | None
    signed_count: int | None
    destruction: Mapping[str, bool] | None
    failure: str | None
    time_stamps: tuple[bytes, ...] = ()

    @property
    def purged(self) -> bool:
        """A tombstone: `qes audit purge` erased the personal payload (translog.retention)."""
        return not self.certificate_der


@dataclass(frozen=True)
class RecordFilter:
    subject: str | None = None
    issuer: str | None = None
    client_id: str | None = None
    serial: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str | None = None
    digest: bytes | None = None
    subject_dn_contains: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Cursor:
    """Keyset position: the (created_at, id) of the last row of the previous page."""

    created_at: datetime
    id: uuid.UUID


class IdempotencyOutcome(enum.Enum):
    NEW = "new"
    REPLAY = "replay"
    MISMATCH = "mismatch"
    IN_PROGRESS = "in_progress"


@dataclass(frozen=True)
class IdempotencyClaim:
    outcome: IdempotencyOutcome
    response: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class IdempotencyKey:
    token_issuer: str
    token_subject: str
    key: str
    body_sha256: bytes


_COLUMNS = Columns.of(
    "id, serial, status, request_id, created_at, completed_at, token_issuer, issuer_name,"
    " token_subject, client_id, profile, subject_type, subject_dn, not_before, not_after,"
    " certificate, key_evidence, hash_algorithm, digests, signed_count, destruction, failure,"
    " signature_format, email"
)


_INSERT_ISSUED = (
    "INSERT INTO signing_records (id, serial, status, request_id, created_at, token_issuer,"
    " issuer_name, token_subject, client_id, profile, subject_type, subject_dn, not_before,"
    " not_after, certificate, key_evidence, hash_algorithm, digests, signature_format, email)"
    " VALUES ($1,$2,'issued',$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)"
)
# One statement: data-modifying CTEs run exactly once and commit together (PostgreSQL docs,
# "Data-Modifying Statements in WITH"); an idempotency response is stored only with its record,
# and each completed record's log entry is sequenced with it. `seq` takes the row lock of
# log_state (UPDATE ... SET size = size + n): a writer from any process waits for the previous
# one to commit and then re-reads the row (READ COMMITTED re-check of the updated row), so
# indexes are consecutive, committed in index order, never duplicated. RFC 9162 §2.1.1 leaf:
# SHA-256(0x00 || entry).
_COMPLETE_STEPS = """
WITH done AS (
    UPDATE signing_records AS r
       SET status = 'completed', completed_at = c.at, signed_count = c.n, destruction = c.d
      FROM unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::jsonb[], $10::bytea[],
                  $11::bytea[])
           WITH ORDINALITY AS c(id, at, n, d, entry, subject_key, ord)
     WHERE r.id = c.id AND r.status = 'issued'
    RETURNING r.id, c.entry, c.subject_key, c.ord
), seq AS (
    UPDATE log_state SET size = size + (SELECT count(*) FROM done)
     WHERE id = 1 AND EXISTS (SELECT 1 FROM done)
    RETURNING size - (SELECT count(*) FROM done) AS base
), appended AS (
    INSERT INTO log_entries (idx, kind, record_id, entry, leaf_hash, subject_key)
    SELECT seq.base + row_number() OVER (ORDER BY done.ord) - 1, 'issuance', done.id,
           done.entry, sha256('\\x00'::bytea || done.entry), done.subject_key
      FROM done, seq
    RETURNING idx, record_id
), responses AS (
    UPDATE idempotency_keys AS k
       SET record_id = i.record_id,
           response = i.response || jsonb_build_object('log', jsonb_build_object('index', a.idx))
      FROM unnest($5::text[], $6::text[], $7::text[], $8::uuid[], $9::jsonb[])
           AS i(token_issuer, token_subject, key, record_id, response)
      JOIN appended AS a ON a.record_id = i.record_id
     WHERE k.token_issuer = i.token_issuer AND k.token_subject = i.token_subject
       AND k.key = i.key
)
"""
_COMPLETE_RESULT = "SELECT record_id AS id, idx FROM appended\n"
_COMPLETE = sql(_COMPLETE_STEPS, _COMPLETE_RESULT)
# The failure path: same sequencing for one record (an issuance entry with outcome 'failed').
_FAIL = """
WITH done AS (
    UPDATE signing_records SET status = 'failed', completed_at = $2, failure = $3,
           destruction = $4, signed_count = 0
     WHERE id = $1 AND status = 'issued'
    RETURNING id
), seq AS (
    UPDATE log_state SET size = size + 1 WHERE id = 1 AND EXISTS (SELECT 1 FROM done)
    RETURNING size - 1 AS base
)
INSERT INTO log_entries (idx, kind, record_id, entry, leaf_hash, subject_key)
SELECT seq.base, 'issuance', done.id, $5::bytea, sha256('\\x00'::bytea || $5::bytea), $6::bytea
  FROM done, seq
RETURNING idx
"""
# The same, also keeping the signatures' time-stamp tokens (CAdES/PAdES B-T evidence).
_COMPLETE_WITH_TIME_STAMPS = sql(
    _COMPLETE_STEPS,
    """, stamps AS (
    INSERT INTO signature_time_stamps (record_id, position, token)
    SELECT t.record_id, t.position, t.token
      FROM unnest($12::uuid[], $13::int[], $14::bytea[]) AS t(record_id, position, token)
     WHERE t.record_id IN (SELECT id FROM done)
)
""",
    _COMPLETE_RESULT,
)
_SELECT = sql("SELECT", _COLUMNS, "FROM signing_records")


def _issued_args(r: IssuedRecord) -> tuple[Any, ...]:
    return (
        r.id,
        r.serial,
        r.request_id,
        r.created_at,
        r.token_issuer,
        r.issuer_name,
        r.token_subject,
        r.client_id,
        r.profile,
        r.subject_type,
        r.subject_dn,
        r.not_before,
        r.not_after,
        r.certificate_der,
        json.dumps(dict(r.key_evidence)),
        r.hash_algorithm,
        list(r.digests),
        r.signature_format,
        r.email,
    )


def record_from_row(r: asyncpg.Record) -> SigningRecord:
    return SigningRecord(
        id=r["id"],
        serial=r["serial"],
        status=r["status"],
        request_id=r["request_id"],
        created_at=r["created_at"],
        completed_at=r["completed_at"],
        token_issuer=r["token_issuer"],
        issuer_name=r["issuer_name"],
        token_subject=r["token_subject"],
        client_id=r["client_id"],
        profile=r["profile"],
        subject_type=r["subject_type"],
        subject_dn=r["subject_dn"],
        not_before=r["not_before"],
        not_after=r["not_after"],
        certificate_der=bytes(r["certificate"]),
        key_evidence=json.loads(r["key_evidence"]),
        hash_algorithm=r["hash_algorithm"],
        digests=tuple(bytes(d) for d in r["digests"]),
        signed_count=r["signed_count"],
        destruction=json.loads(r["destruction"]) if r["destruction"] else None,
        failure=r["failure"],
        signature_format=r["signature_format"],
        email=r["email"],
    )


class RecordStore:
    """The signer's PostgreSQL state. The pool is owned by the caller (the app's cleanup_ctx)."""

    def __init__(self, pool: asyncpg.Pool, *, abandoned_after: timedelta = ABANDONED_AFTER) -> None:
        self._pool = pool
        self._abandoned_after = abandoned_after

    async def ping(self) -> None:
        async with guard("ping"):
            await self._pool.fetchval("SELECT 1")

    async def record_issued(self, records: Sequence[IssuedRecord]) -> None:
        """Commit the 'issued' rows of one HSM hop, all or none (asyncpg's executemany is atomic
        and pipelined: one round trip). Must succeed before any of their keys signs anything."""
        async with guard("record issued certificates"):
            await self._pool.executemany(_INSERT_ISSUED, [_issued_args(r) for r in records])

    async def complete(self, completions: Sequence[Completion]) -> Mapping[uuid.UUID, int]:
        """Mark records completed, store their idempotent responses and append their log
        entries, in one statement (one transaction, one round trip). Returns the log index of
        each completed record; a record not in state 'issued' is left alone and missing from
        the result (its signatures must not be released). A stored idempotent response gets
        ``"log": {"index": N}`` added, as the live response does."""
        idem = [c for c in completions if c.idempotency is not None]
        stamps = [(c.record_id, i, t) for c in completions for i, t in enumerate(c.time_stamps)]
        extra: tuple[list[Any], ...] = ()
        if stamps:
            extra = tuple(list(column) for column in zip(*stamps, strict=True))
        async with guard("complete signing records"):
            rows = await self._pool.fetch(
                _COMPLETE_WITH_TIME_STAMPS if stamps else _COMPLETE,
                [c.record_id for c in completions],
                [c.at for c in completions],
                [c.signed_count for c in completions],
                [json.dumps(dict(c.destruction)) for c in completions],
                [c.idempotency.token_issuer for c in idem if c.idempotency],
                [c.idempotency.token_subject for c in idem if c.idempotency],
                [c.idempotency.key for c in idem if c.idempotency],
                [c.record_id for c in idem],
                [json.dumps(c.response) for c in idem],
                [c.entry for c in completions],
                [c.subject_key for c in completions],
                *extra,
            )
        return {r["id"]: r["idx"] for r in rows}

    async def fail(
        self,
        record_id: uuid.UUID,
        *,
        failure: str,
        destruction: Mapping[str, bool] | None,
        at: datetime,
        entry: bytes,
        subject_key: bytes | None = None,
    ) -> int | None:
        """Mark an issued record failed (the certificate exists but released no signature) and
        append its log entry in the same statement; returns the entry's index, or None when
        the record was not 'issued'."""
        async with guard("mark signing record failed"):
            idx: int | None = await self._pool.fetchval(
                _FAIL,
                record_id,
                at,
                failure,
                json.dumps(dict(destruction)) if destruction is not None else None,
                entry,
                subject_key,
            )
        return idx

    async def claim_idempotency(self, key: IdempotencyKey, at: datetime) -> IdempotencyClaim:
        """Reserve ``key`` for this request, or report the earlier request that holds it."""
        async with guard("claim idempotency key"):
            inserted = await self._pool.fetchval(
                "INSERT INTO idempotency_keys (token_issuer, token_subject, key, body_sha256,"
                " created_at) VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING RETURNING true",
                key.token_issuer,
                key.token_subject,
                key.key,
                key.body_sha256,
                at,
            )
            if inserted:
                return IdempotencyClaim(IdempotencyOutcome.NEW)
            row = await self._pool.fetchrow(
                "SELECT body_sha256, response, created_at FROM idempotency_keys"
                " WHERE token_issuer=$1 AND token_subject=$2 AND key=$3",
                key.token_issuer,
                key.token_subject,
                key.key,
            )
        if row is None:  # released between our insert and select: the caller may retry
            return IdempotencyClaim(IdempotencyOutcome.IN_PROGRESS)
        if bytes(row["body_sha256"]) != key.body_sha256:
            return IdempotencyClaim(IdempotencyOutcome.MISMATCH)
        if row["response"] is None:
            if row["created_at"] < at - self._abandoned_after and await self._take_over(
                key, row, at
            ):
                return IdempotencyClaim(IdempotencyOutcome.NEW)
            return IdempotencyClaim(IdempotencyOutcome.IN_PROGRESS)
        return IdempotencyClaim(IdempotencyOutcome.REPLAY, json.loads(row["response"]))

    async def _take_over(self, key: IdempotencyKey, row: asyncpg.Record, at: datetime) -> bool:
        """Claim a key whose request never finished (its process died); one claimant wins."""
        async with guard("take over idempotency key"):
            status = await self._pool.execute(
                "UPDATE idempotency_keys SET created_at=$5 WHERE token_issuer=$1"
                " AND token_subject=$2 AND key=$3 AND response IS NULL AND created_at=$4",
                key.token_issuer,
                key.token_subject,
                key.key,
                row["created_at"],
                at,
            )
        return bool(status == "UPDATE 1")

    async def keep_response(self, key: IdempotencyKey, response: Mapping[str, Any]) -> None:
        """Store the answer of a request that made no record (a batch request held for
        approval, signer.http.approvals), so a retry with the same key replays it."""
        async with guard("store idempotent response"):
            await self._pool.execute(
                "UPDATE idempotency_keys SET response=$4 WHERE token_issuer=$1"
                " AND token_subject=$2 AND key=$3 AND response IS NULL",
                key.token_issuer,
                key.token_subject,
                key.key,
                json.dumps(dict(response)),
            )

    async def release_idempotency(self, key: IdempotencyKey) -> None:
        """Free a key whose request failed, so that a retry can run it again."""
        async with guard("release idempotency key"):
            await self._pool.execute(
                "DELETE FROM idempotency_keys WHERE token_issuer=$1 AND token_subject=$2"
                " AND key=$3 AND response IS NULL",
                key.token_issuer,
                key.token_subject,
                key.key,
            )

    async def first_use(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """ReplayGuard for idp_adapter: True the first time (issuer, jti) is seen."""
        async with guard("record token id"):
            return bool(
                await self._pool.fetchval(
                    "INSERT INTO token_replay (issuer, jti, expires_at) VALUES ($1,$2,$3)"
                    " ON CONFLICT DO NOTHING RETURNING true",
                    issuer,
                    jti,
                    expires_at,
                )
            )

    async def purge_replay(self, before: datetime) -> int:
        async with guard("purge token ids"):
            status = await self._pool.execute(
                "DELETE FROM token_replay WHERE expires_at < $1", before
            )
        return int(status.split()[-1])

    async def get(self, serial: str) -> SigningRecord | None:
        async with guard("read signing record"):
            row = await self._pool.fetchrow(_SELECT + " WHERE serial=$1", serial)
            if row is None:
                return None
            tokens = await self._pool.fetch(
                "SELECT token FROM signature_time_stamps WHERE record_id=$1 ORDER BY position",
                row["id"],
            )
        return dataclasses.replace(
            record_from_row(row), time_stamps=tuple(bytes(t["token"]) for t in tokens)
        )

    async def emails_unknown_before(self) -> datetime | None:
        """Records created before this time may still lack their e-mail column (records made
        before it existed: :mod:`signer.translog.backfill` reads it from their certificates); None
        once that has run, so an e-mail search is complete."""
        async with guard("read e-mail backfill state"):
            row = await self._pool.fetchrow(
                "SELECT emails_before, emails_done FROM log_backfill WHERE id = 1"
            )
        return None if row is None or row["emails_done"] else row["emails_before"]

    async def search(
        self, f: RecordFilter, *, limit: int, after: Cursor | None = None
    ) -> Sequence[SigningRecord]:
        """Newest first, keyset-paginated on (created_at, id)."""
        where, args = _where(f, after)
        args.append(limit)
        sql = f"{_SELECT} {where} ORDER BY created_at DESC, id DESC LIMIT ${len(args)}"
        async with guard("search signing records"):
            rows = await self._pool.fetch(sql, *args)
        return [record_from_row(r) for r in rows]


def _where(f: RecordFilter, after: Cursor | None) -> tuple[str, list[Any]]:
    """WHERE clause with bind parameters only; column names come from this fixed table."""
    clauses: list[str] = []
    args: list[Any] = []

    def add(sql: str, *values: Any) -> None:
        placeholders = [f"${len(args) + i + 1}" for i in range(len(values))]
        args.extend(values)
        clauses.append(sql.format(*placeholders))

    for column, value in (
        ("token_subject", f.subject),
        ("token_issuer", f.issuer),
        ("client_id", f.client_id),
        ("serial", f.serial),
        ("status", f.status),
    ):
        if value is not None:
            add(column + " = {}", value)
    if f.digest is not None:
        add("digests @> ARRAY[{}]::bytea[]", f.digest)
    if f.email is not None:
        add("lower(email) = lower({})", f.email)
    if f.subject_dn_contains is not None:
        add("subject_dn ILIKE {} ESCAPE '\\'", "%" + _like_escape(f.subject_dn_contains) + "%")
    if f.since is not None:
        add("created_at >= {}", f.since)
    if f.until is not None:
        add("created_at < {}", f.until)
    if after is not None:
        add("(created_at, id) < ({}, {})", after.created_at, after.id)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def _like_escape(text: str) -> str:
    """Match ``text`` literally inside a LIKE pattern (its ``\\``, ``%`` and ``_``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
