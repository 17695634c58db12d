"""Many writers, one history: 4 OS processes append concurrently (completions of signing
records and refusals, through the production SQL) to one scratch database; the log has
consecutive indexes with no gap or duplicate, and the integrated root equals pymerkle's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import asyncpg
from pymerkle import InmemoryTree

from signer.storage.db import create_pool
from signer.storage.log import LogStore
from tests.support.pg import scratch_database
from tests.support.service import ROOT

WRITERS = 4
ROUNDS = 25

WRITER = textwrap.dedent(
    """
    import asyncio, os, sys, uuid
    from datetime import UTC, datetime
    from signer.storage.db import create_pool
    from signer.storage.records import Completion, IssuedRecord, RecordStore
    from signer.storage.refusals import RefusalStore

    async def main(url, n):
        pool = await create_pool(url, min_size=1, max_size=2, command_timeout=30)
        store, refusals = RecordStore(pool), RefusalStore(pool)
        now = datetime.now(UTC)
        for _ in range(n):
            records = [IssuedRecord(
                id=uuid.uuid4(), serial=os.urandom(8).hex(), request_id="r", created_at=now,
                token_issuer="i", issuer_name="n", token_subject="s", client_id=None,
                profile="qes", subject_type="natural", subject_dn="CN=x", not_before=now,
                not_after=now, certificate_der=b"x", key_evidence={}, hash_algorithm="sha256",
                digests=(b"d",)) for _ in range(2)]
            await store.record_issued(records)
            done = await store.complete([Completion(record_id=r.id, at=now, signed_count=1,
                destruction={}, entry=os.urandom(40)) for r in records])
            assert len(done) == 2, done
            await refusals.append(os.urandom(30), None)
        await pool.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def _unsigned(_: object) -> str:
    return "unsigned test note\n"


def test_four_processes_append_one_history(pg_admin: str) -> None:
    with scratch_database(pg_admin) as url:

        async def migrate() -> None:
            pool = await create_pool(url, min_size=1, max_size=1, command_timeout=30)
            await pool.close()

        asyncio.run(migrate())  # once, so the writers do not all wait on the migration lock
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, url, str(ROUNDS)], cwd=ROOT)
            for _ in range(WRITERS)
        ]
        assert [w.wait(timeout=300) for w in writers] == [0] * WRITERS

        async def check() -> None:
            expected = WRITERS * ROUNDS * 3
            conn = await asyncpg.connect(url)
            try:
                size = await conn.fetchval("SELECT size FROM log_state")
                rows = await conn.fetch("SELECT idx, entry, leaf_hash, record_id FROM log_entries")
            finally:
                await conn.close()
            assert size == expected
            assert sorted(r["idx"] for r in rows) == list(range(expected))
            issued = [r["record_id"] for r in rows if r["record_id"] is not None]
            assert len(issued) == len(set(issued)) == WRITERS * ROUNDS * 2
            reference = InmemoryTree(algorithm="sha256")
            for row in sorted(rows, key=lambda r: r["idx"]):
                reference.append_entry(bytes(row["entry"]))
            pool = await create_pool(url, min_size=1, max_size=1, command_timeout=30)
            try:
                published = await LogStore(pool, "test/log").integrate(
                    _unsigned, datetime.now(UTC), force=True
                )
            finally:
                await pool.close()
            assert published is not None and published.size == expected
            assert published.root == reference.get_root(expected)

        asyncio.run(check())
