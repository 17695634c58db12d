"""The transparency log's tables: integration, checkpoints, proofs and entries (issue 5).

Entries are *sequenced* by the statements of :mod:`signer.storage.records` (in the same
statement that finishes a record). This module *integrates* them, as Trillian and Tessera do:
one integrator at a time (``pg_try_advisory_xact_lock``; every process tries, the others skip)
reads the sequenced entries past ``log_tree.integrated`` in index order, extends the stored
compact range (:class:`ca.merkle.CompactRange`) and stores every completed perfect subtree in
``log_nodes``, so that any RFC 9162 §2.1.3/§2.1.4 proof is one primary-key query. In the same
transaction it stores a signed checkpoint (C2SP tlog-checkpoint) of the new size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from ca.checkpoint import Checkpoint
from ca.merkle import (
    CompactRange,
    ConsistencyProof,
    InclusionProof,
    NodeId,
    NodeMap,
    consistency_node_ids,
    consistency_proof,
    frontier_ids,
    inclusion_node_ids,
    inclusion_proof,
)
from signer.storage.records import guard, transaction

# pg_try_advisory_xact_lock key of the integrator: the bytes of "qes-log" as a bigint.
INTEGRATOR_LOCK = 0x7165732D6C6F67
INTEGRATE_BATCH = 10_000

_NODES = (
    "SELECT n.level, n.index, n.hash FROM log_nodes AS n"
    " JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, index)"
    " ON n.level = w.level AND n.index = w.index"
)


@dataclass(frozen=True)
class StoredCheckpoint:
    """A published checkpoint: its size, root hash and signed note text."""

    size: int
    root: bytes
    note: str
    created_at: datetime


@dataclass(frozen=True)
class StoredEntry:
    idx: int
    kind: str
    record_id: str | None
    entry: bytes
    leaf_hash: bytes
    created_at: datetime


@dataclass(frozen=True)
class LoggedEntry:
    """An entry with the clear fields of the signing record it commits to (issuance only).

    Refusals have no record, so their record fields are None; a purged record (retention,
    GDPR Art. 17) has ``purged`` set and its personal fields blanked.
    """

    idx: int
    kind: str
    entry: bytes
    serial: str | None
    token_issuer: str | None
    token_subject: str | None
    client_id: str | None
    purged: bool


#: Entries in an index window with their records' clear identifiers (one query). A record is
#: a tombstone when its certificate was erased by `qes audit purge` (see signer.translog.retention).
_ENTRIES_WINDOW = """
SELECT e.idx, e.kind, e.entry, r.serial, r.token_issuer, r.token_subject, r.client_id,
       coalesce(octet_length(r.certificate) = 0, false) AS purged
  FROM log_entries AS e LEFT JOIN signing_records AS r ON r.id = e.record_id
 WHERE e.idx >= $1 AND e.idx < $2 ORDER BY e.idx
"""


#: Refusal entries newest first in a time range (append time), below index $3 (keyset
#: pagination), through log_entries_refusals: never the issuance entries in between. The
#: second form takes only those of some subject index keys ($5), through log_entries_subject.
_REFUSALS_PAGE = """
SELECT idx, entry FROM log_entries
 WHERE kind = 'refusal' AND created_at >= $1 AND created_at < $2 AND idx < $3
 ORDER BY idx DESC LIMIT $4
"""
_SUBJECT_REFUSALS_PAGE = """
SELECT idx, entry FROM log_entries
 WHERE kind = 'refusal' AND created_at >= $1 AND created_at < $2 AND idx < $3
   AND subject_key = ANY($5::bytea[])
 ORDER BY idx DESC LIMIT $4
"""
_NO_TIME = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


async def fetch_nodes(conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[NodeId]) -> NodeMap:
    """The stored hashes of ``ids`` in one query, as a :class:`ca.merkle.NodeMap`."""
    if not ids:
        return NodeMap({})
    rows = await conn.fetch(_NODES, [n.level for n in ids], [n.index for n in ids])
    return NodeMap({NodeId(r["level"], r["index"]): bytes(r["hash"]) for r in rows})


#: Every entry with its signing record and the record's time-stamp tokens (`qes audit verify`).
_ENTRIES = """
SELECT e.idx, e.kind, e.record_id, e.entry, e.leaf_hash, r.*, ts.tokens AS time_stamp_tokens
  FROM log_entries AS e LEFT JOIN signing_records AS r ON r.id = e.record_id
  LEFT JOIN LATERAL (
      SELECT array_agg(t.token ORDER BY t.position) AS tokens
        FROM signature_time_stamps AS t WHERE t.record_id = e.record_id
  ) AS ts ON true
 WHERE e.idx >= $1 ORDER BY e.idx LIMIT $2
"""


async def fetch_checkpoints(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every stored checkpoint (size, root, note), smallest first."""
    return list(await conn.fetch("SELECT size, root, note FROM log_checkpoints ORDER BY size"))


async def fetch_sizes(conn: asyncpg.Connection) -> tuple[int, int]:
    """(entries sequenced, entries integrated into the tree)."""
    sequenced = await conn.fetchval("SELECT size FROM log_state WHERE id = 1")
    integrated = await conn.fetchval("SELECT integrated FROM log_tree WHERE id = 1")
    return sequenced, integrated


async def fetch_entries(conn: asyncpg.Connection, start: int, limit: int) -> list[asyncpg.Record]:
    """Up to ``limit`` entries from index ``start``, each with its signing record's columns
    and the record's time-stamp tokens in order (``qes audit verify``)."""
    return list(await conn.fetch(_ENTRIES, start, limit))


def _checkpoint(row: asyncpg.Record | None) -> StoredCheckpoint | None:
    if row is None:
        return None
    return StoredCheckpoint(row["size"], bytes(row["root"]), row["note"], row["created_at"])


SignCheckpoint = Callable[[Checkpoint], Awaitable[str]]


class LogStore:
    """SQL of the log; the pool belongs to the caller."""

    def __init__(self, pool: asyncpg.Pool, origin: str) -> None:
        self._pool = pool
        self._origin = origin

    async def integrate(
        self, sign: SignCheckpoint, at: datetime, *, force: bool = False
    ) -> StoredCheckpoint | None:
        """Integrate every sequenced entry and publish a checkpoint when the tree grew (or
        when none exists yet). Returns the checkpoint published, or None when nothing was
        published (no growth, or another process holds the integrator lock).

        ``force`` waits for the lock instead of skipping (an on-demand checkpoint)."""
        async with transaction(self._pool, "integrate log") as conn:
            if force:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", INTEGRATOR_LOCK)
            elif not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", INTEGRATOR_LOCK):
                return None
            start = await conn.fetchval("SELECT integrated FROM log_tree WHERE id = 1 FOR UPDATE")
            tree = CompactRange.from_reader(await fetch_nodes(conn, frontier_ids(start)), start)
            while True:
                rows = await conn.fetch(
                    "SELECT idx, leaf_hash FROM log_entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
                    tree.size,
                    INTEGRATE_BATCH,
                )
                # Sequenced entries commit in index order (the log_state row lock), so the
                # visible ones are a prefix; stop at the first gap all the same.
                leaves = []
                for expected, row in enumerate(rows, start=tree.size):
                    if row["idx"] != expected:
                        break
                    leaves.append(bytes(row["leaf_hash"]))
                if not leaves:
                    break
                tree, nodes = tree.extend(leaves)
                await conn.execute(
                    "INSERT INTO log_nodes (level, index, hash)"
                    " SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])",
                    [n.id.level for n in nodes],
                    [n.id.index for n in nodes],
                    [n.hash for n in nodes],
                )
                if len(leaves) < INTEGRATE_BATCH:
                    break
            if tree.size != start:
                await conn.execute("UPDATE log_tree SET integrated = $1 WHERE id = 1", tree.size)
            latest = await conn.fetchval("SELECT max(size) FROM log_checkpoints")
            if latest is not None and latest >= tree.size:
                return None
            checkpoint = Checkpoint.from_tree_head(self._origin, tree.tree_head())
            note = await sign(checkpoint)
            row = await conn.fetchrow(
                "INSERT INTO log_checkpoints (size, root, note, created_at)"
                " VALUES ($1, $2, $3, $4) RETURNING size, root, note, created_at",
                checkpoint.size,
                checkpoint.root_hash,
                note,
                at,
            )
        return _checkpoint(row)

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        async with guard("read checkpoint"):
            row = await self._pool.fetchrow(
                "SELECT size, root, note, created_at FROM log_checkpoints"
                " ORDER BY size DESC LIMIT 1"
            )
        return _checkpoint(row)

    async def checkpoints(self) -> list[StoredCheckpoint]:
        """Every stored checkpoint, smallest size first."""
        async with guard("read checkpoints"):
            rows = await self._pool.fetch(
                "SELECT size, root, note, created_at FROM log_checkpoints ORDER BY size"
            )
        return [c for c in map(_checkpoint, rows) if c is not None]

    async def integrated_size(self) -> int:
        async with guard("read log size"):
            size: int = await self._pool.fetchval("SELECT integrated FROM log_tree WHERE id = 1")
        return size

    async def inclusion_proof(self, index: int, size: int) -> InclusionProof:
        """``PATH(index, D[size])`` (RFC 9162 §2.1.3.1) from stored nodes, one query; the
        caller checks ``index < size <= integrated size``."""
        async with guard("read inclusion proof nodes"):
            nodes = await fetch_nodes(self._pool, inclusion_node_ids(index, size))
        return inclusion_proof(nodes, index, size)

    async def consistency_proof(self, old: int, new: int) -> ConsistencyProof:
        """``PROOF(old, D[new])`` (RFC 9162 §2.1.4.1) from stored nodes, one query."""
        async with guard("read consistency proof nodes"):
            nodes = await fetch_nodes(self._pool, consistency_node_ids(old, new))
        return consistency_proof(nodes, old, new)

    async def entries_window(self, start: int, end: int) -> list[LoggedEntry]:
        """Entries ``start <= idx < end`` in index order, joined with their records."""
        async with guard("read log entries"):
            rows = await self._pool.fetch(_ENTRIES_WINDOW, start, end)
        return [
            LoggedEntry(
                r["idx"],
                r["kind"],
                bytes(r["entry"]),
                r["serial"],
                r["token_issuer"],
                r["token_subject"],
                r["client_id"],
                r["purged"],
            )
            for r in rows
        ]

    async def refusals(
        self,
        *,
        subject_keys: Sequence[bytes] | None,
        since: datetime | None,
        until: datetime | None,
        before: int | None,
        limit: int,
    ) -> list[LoggedEntry]:
        """Refusal entries, newest first (see ``_REFUSALS_PAGE``)."""
        args: list[object] = [since or _NO_TIME[0], until or _NO_TIME[1], before, limit]
        if before is None:
            args[2] = 2**63 - 1
        sql = _REFUSALS_PAGE
        if subject_keys is not None:
            sql, args = _SUBJECT_REFUSALS_PAGE, [*args, list(subject_keys)]
        async with guard("read refusal entries"):
            rows = await self._pool.fetch(sql, *args)
        return [
            LoggedEntry(r["idx"], "refusal", bytes(r["entry"]), None, None, None, None, False)
            for r in rows
        ]

    async def entry(self, idx: int) -> StoredEntry | None:
        async with guard("read log entry"):
            row = await self._pool.fetchrow(
                "SELECT idx, kind, record_id, entry, leaf_hash, created_at FROM log_entries"
                " WHERE idx = $1",
                idx,
            )
        if row is None:
            return None
        record_id = str(row["record_id"]) if row["record_id"] is not None else None
        return StoredEntry(
            row["idx"],
            row["kind"],
            record_id,
            bytes(row["entry"]),
            bytes(row["leaf_hash"]),
            row["created_at"],
        )
