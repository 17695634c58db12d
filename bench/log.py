"""The transparency log at scale (issue 5): search and proofs at 1,000 against 1,000,000
records, and log-append capacity against batch signing, in one run.

    .venv/bin/python bench/log.py [--workers 2] [--large 1000000] [--rounds 3]

Same throwaway setup as ``bench/run.py`` (SoftHSM2 token, scratch PostgreSQL, dev IdP,
``qes init``), with two scratch databases, each served by its own ``qes serve`` (N workers):

1. each database gets one real signature (a real record, certificate and log entry), then
   ``size - 1`` generated records, server-side (``generate_series``), shaped like that one:
   distinct serials, 10,000 people and a few batch accounts behind seven clients, a year of
   ``created_at``; their log entries are the real entry with the record id and times put in
   (the first 1,000 are encoded for real with ``ca.logentry``); the service's own integrator
   builds the tree and signs the checkpoint (``POST /api/v1/log/checkpoints``); then
   ``VACUUM ANALYZE``. Each step is timed, and inclusion proofs are checked against the signed
   checkpoint with ``ca.merkle``;
2. latency of the auditor search API (``GET /api/v1/certificates``: by subject, by client over
   30 days, by serial, newest page; 50 per page) and of inclusion proofs at random indexes,
   from a client process, rounds alternating between the two databases; p50/p99 each and the
   ratios large/small, rows per page, and the plan of each search (and the one its prepared
   statement settles on, when that differs);
3. on the large database, rounds alternating (a) log appends alone: N processes of
   ``RecordStore.refuse`` (one-entry sequenced appends, the worst case: no batching) and
   (b) batch signing end to end, one digest per request, as ``bench/run.py`` measures it;
   prints both, (a)/(b), and how many sequencing statements (b) needed for its entries (the
   pipeline completes a whole HSM hop in one statement); then what the log costs inside the
   completion statement: ``RecordStore.complete`` against the same record update without the
   log (both committed), and EXPLAIN ANALYZE of the statement.

Everything started is stopped on exit (also on Ctrl-C); the databases are dropped; the token is
listed afterwards from a separate process: nothing but the long-lived keys may be left (exit
code 2 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
from cryptography import x509
from formats import in_child
from run import (
    DEV_CONFIG,
    LONG_LIVED_LABELS,
    BenchError,
    SignerProcess,
    _alarm,
    _measured_load,
    _terminate,
    check_one_signature,
    child_main,
    clean_up,
    ensure_wrk,
    free_port,
    machine_busy,
    machine_facts,
    pids_named,
    qes_init,
    run_aiohttp,
    run_processes,
    run_wrk,
    service_env,
    step,
    stop_signer,
    table,
    wait_all_workers,
)

from ca.checkpoint import NoteVerifier, open_checkpoint
from ca.logentry import PrivacyKey, RefusalEntry, Requester, RequestSummary
from ca.merkle import InclusionProof, leaf_hash, verify_inclusion
from signer.storage.db import create_pool, migrate
from signer.storage.records import Completion, RecordFilter, RecordStore, record_from_row
from signer.translog.log import issuance_entry
from tests.support.idp import DEMO_SECRETS, start_idp
from tests.support.pg import admin_url, scratch_database
from tests.support.softhsm import SoftHsmToken

SEARCH = "/api/v1/certificates"
PROOF = "/api/v1/log/proof/inclusion"
PAGE = 50
IDENTITIES = 10_000  # people behind the web clients; batch accounts come on top
REAL_SAMPLE = 1_000  # generated entries encoded for real with ca.logentry
KINDS = ("by subject", "by client, 30 days", "by serial", "newest, no filter", "inclusion proof")

# ``size - 1`` records shaped like the real one (t). 30 % batch (three clients, the client is
# the subject, three digests each), 70 % people (four web clients, IDENTITIES subjects, skewed:
# a tenth of the people sign a third of the documents); 0.5 % failed; a year of created_at.
_RECORDS = """
WITH t AS (SELECT * FROM signing_records WHERE id = $5::uuid),
s AS MATERIALIZED (
    SELECT g, u < 0.3 AS batch, v, floor($6::int * w * w)::int AS person, random() AS x,
           $3::timestamptz + make_interval(secs => $4::float8 * (g - 1 + random()) / $1::int) AS at
      FROM (SELECT g, random() AS u, random() AS v, random() AS w
              FROM generate_series(1, $1::int) AS g) AS r
), c AS (
    SELECT s.*, x > 0.995 AS failed,
           CASE WHEN batch THEN CASE WHEN v < 0.6 THEN coalesce(t.client_id, 'demo-batch')
                                     WHEN v < 0.85 THEN 'invoice-batch' ELSE 'payroll-batch' END
                WHEN v < 0.4 THEN 'demo-web' WHEN v < 0.65 THEN 'hr-portal'
                WHEN v < 0.85 THEN 'contracts-portal' ELSE 'procurement-portal' END AS client
      FROM s, t
)
INSERT INTO signing_records (id, serial, status, request_id, created_at, completed_at,
    token_issuer, issuer_name, token_subject, client_id, profile, subject_type, subject_dn,
    not_before, not_after, certificate, key_evidence, hash_algorithm, digests, signed_count,
    destruction, failure, signature_format)
SELECT gen_random_uuid(),
       '3' || substr(encode(sha256(convert_to($2::text || c.g::text, 'UTF8')), 'hex'), 2, 39),
       CASE WHEN c.failed THEN 'failed' ELSE 'completed' END,
       md5($2::text || 'request' || c.g::text),
       c.at, c.at + make_interval(secs => 0.03 + 0.2 * c.x),
       t.token_issuer,
       CASE WHEN c.batch THEN t.issuer_name ELSE 'demo_people' END,
       CASE WHEN NOT c.batch THEN 'p-' || substr(md5('person ' || c.person::text), 1, 20)
            WHEN c.client = t.client_id THEN t.token_subject ELSE c.client END,
       c.client,
       CASE WHEN c.x < 0.85 THEN t.profile WHEN c.x < 0.95 THEN 'qualified' ELSE 'advanced' END,
       CASE WHEN c.batch THEN t.subject_type ELSE 'natural' END,
       CASE WHEN c.batch THEN t.subject_dn
            ELSE format('serialNumber=PNODE-%s,CN=Person %s,SN=Person,GN=P%s,C=DE',
                        lpad(c.person::text, 8, '0'), c.person, c.person) END,
       c.at + (t.not_before - t.created_at), c.at + (t.not_after - t.created_at),
       t.certificate, t.key_evidence, t.hash_algorithm,
       CASE WHEN c.batch THEN ARRAY[sha256(int8send(c.g) || '\\x01'::bytea),
                                    sha256(int8send(c.g) || '\\x02'::bytea),
                                    sha256(int8send(c.g) || '\\x03'::bytea)]
            ELSE ARRAY[sha256(int8send(c.g))] END,
       CASE WHEN c.failed THEN 0 WHEN c.batch THEN 3 ELSE 1 END,
       t.destruction,
       CASE WHEN c.failed THEN 'hsm-unavailable' END,
       CASE WHEN c.batch OR c.g % 10 < 5 THEN 'raw' WHEN c.g % 10 < 8 THEN 'pades' ELSE 'cades' END
  FROM c, t
"""
# Their entries, in completion order after the real one: the real entry ($2) with each
# record's id, issued_at and completed_at put in at their offsets (1-based: $3, $4, $5).
_ENTRIES = """
INSERT INTO log_entries (idx, kind, record_id, entry, leaf_hash, created_at)
SELECT e.idx, 'issuance', e.id, e.entry, sha256('\\x00'::bytea || e.entry), e.completed_at
  FROM (SELECT $1::bigint + row_number() OVER (ORDER BY r.completed_at, r.id) - 1 AS idx,
               r.id, r.completed_at,
               overlay(overlay(overlay($2::bytea
                   PLACING convert_to(r.id::text, 'UTF8') FROM $3::int)
                   PLACING int8send((extract(epoch FROM r.created_at) * 1000000)::bigint)
                   FROM $4::int)
                   PLACING int8send((extract(epoch FROM r.completed_at) * 1000000)::bigint)
                   FROM $5::int) AS entry
          FROM signing_records AS r
         WHERE r.id <> $6::uuid) AS e
"""
_SAMPLE = """
SELECT r.*, e.idx FROM log_entries AS e JOIN signing_records AS r ON r.id = e.record_id
 WHERE e.idx BETWEEN 1 AND $1 ORDER BY e.idx
"""
_REAL_ENTRIES = """
UPDATE log_entries AS e SET entry = u.entry, leaf_hash = sha256('\\x00'::bytea || u.entry)
  FROM unnest($1::bigint[], $2::bytea[]) AS u(idx, entry) WHERE e.idx = u.idx
"""
# The record half of the completion statement alone (the baseline of the log's share).
_COMPLETE_RECORD_ONLY = """
UPDATE signing_records SET status = 'completed', completed_at = $2, signed_count = $3,
       destruction = $4::jsonb
 WHERE id = $1 AND status = 'issued'
"""


@dataclass
class Site:
    """One scratch database, its size and its signer."""

    name: str
    size: int
    db_url: str
    signer: SignerProcess
    timings: list[tuple[str, str]] = field(default_factory=list)
    paths: list[dict[str, list[str]]] = field(default_factory=list)
    latency: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    items: dict[str, list[float]] = field(default_factory=dict)  # rows per page answered
    failures: Counter[str] = field(default_factory=Counter)
    plans: dict[str, str] = field(default_factory=dict)
    probe: Any = None  # the record behind the first request of each kind (EXPLAIN)


# ------------------------------------------------------------------ HTTP helpers


def http(
    url: str, *, token: str | None = None, method: str = "GET", timeout: float = 30
) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers, method=method)  # noqa: S310 - 127.0.0.1
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def note_size(note: bytes) -> int:
    """The tree size of a C2SP checkpoint note (its second line)."""
    return int(note.decode().split("\n")[1])


# ------------------------------------------------------------------ 1. the databases


def _micros(at: datetime) -> bytes:
    return ((at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)).to_bytes(8, "big")


def _offsets(entry: bytes, record: asyncpg.Record) -> list[int]:
    """1-based offsets in the real entry of its record id, issued_at and completed_at values."""
    marks = [str(record["id"]).encode(), _micros(record["created_at"])]
    marks.append(_micros(record["completed_at"]))
    if any(entry.count(m) != 1 for m in marks):
        raise BenchError("the real log entry does not hold its record id and times once each")
    return [entry.index(m) + 1 for m in marks]


async def populate(site: Site, key: PrivacyKey) -> None:
    """Grow the database from its one real record to ``site.size`` records and entries."""
    n = site.size - 1
    conn = await asyncpg.connect(site.db_url)
    try:
        real = await conn.fetch("SELECT * FROM signing_records")
        entry0 = await conn.fetchval("SELECT entry FROM log_entries WHERE idx = 0")
        if len(real) != 1 or entry0 is None:
            raise BenchError(f"{site.name}: expected exactly one real record and entry")
        tmpl = real[0]
        t0 = time.perf_counter()
        async with conn.transaction():
            await conn.execute("SET LOCAL work_mem = '256MB'")
            await conn.execute("SELECT setseed(0.42)")
            span = timedelta(days=365).total_seconds() - 3600  # a year, before the real one
            start = tmpl["created_at"] - timedelta(days=365)
            salt = secrets.token_hex(4)
            await conn.execute(_RECORDS, n, salt, start, span, tmpl["id"], IDENTITIES)
            t1 = time.perf_counter()
            await conn.execute(_ENTRIES, 1, entry0, *_offsets(entry0, tmpl), tmpl["id"])
            t2 = time.perf_counter()
            cert = None
            idxs, entries = [], []
            for row in await conn.fetch(_SAMPLE, min(n, REAL_SAMPLE)):
                rec = record_from_row(row)
                if cert is None:
                    cert = x509.load_der_x509_certificate(rec.certificate_der)
                assert rec.completed_at is not None and rec.signed_count is not None
                entry = issuance_entry(
                    rec,
                    completed_at=rec.completed_at,
                    destruction=rec.destruction,
                    signed_count=rec.signed_count,
                    failure=rec.failure,
                    certificate=cert,
                )
                idxs.append(row["idx"])
                entries.append(entry.encode(key))
            await conn.execute(_REAL_ENTRIES, idxs, entries)
            size = await conn.fetchval(
                "UPDATE log_state SET size = size + $1 WHERE id = 1 RETURNING size", n
            )
            if size != site.size:
                raise BenchError(f"{site.name}: log size {size}, expected {site.size}")
        t3 = time.perf_counter()
    finally:
        await conn.close()
    site.timings += [
        (f"{n:,} records (generate_series)", f"{t1 - t0:.1f} s"),
        (f"{n:,} log entries ({len(idxs):,} real)", f"{t2 - t1:.1f} s + {t3 - t2:.1f} s"),
    ]


async def vacuum(site: Site) -> None:
    conn = await asyncpg.connect(site.db_url)
    try:
        t0 = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE)")
        elapsed = time.perf_counter() - t0
        db_size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        nodes = await conn.fetchval("SELECT count(*) FROM log_nodes")
    finally:
        await conn.close()
    site.timings += [
        ("VACUUM ANALYZE", f"{elapsed:.1f} s"),
        ("database size", f"{db_size}, {nodes:,} tree nodes"),
    ]


def integrate(site: Site, auditor: str, timeout: float = 900) -> None:
    """Have the service integrate everything and sign a checkpoint of ``site.size``.

    POST /api/v1/log/checkpoints waits for the integrator lock; when the periodic publisher of
    a worker holds it longer than the pool's command timeout, the POST fails (503): retry."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        status, body = http(
            site.signer.url + "/api/v1/log/checkpoints", token=auditor, method="POST", timeout=600
        )
        if status in (200, 201) and note_size(body) >= site.size:
            elapsed = time.perf_counter() - t0
            rate = site.size / elapsed
            site.timings.append(("integration + checkpoint", f"{elapsed:.1f} s ({rate:,.0f}/s)"))
            return
        if status not in (200, 201, 503):
            raise BenchError(f"{site.name}: POST checkpoint: HTTP {status} {body[:300]!r}")
        time.sleep(0.5)
    raise BenchError(f"{site.name}: no checkpoint of size {site.size} after {timeout:g} s")


async def check_proofs(site: Site, count: int) -> None:
    """Inclusion proofs from the API verify (ca.merkle) against the signed checkpoint, for
    the first, last and random entries, their leaf being SHA-256(0x00 || stored entry)."""
    _, raw = http(site.signer.url + "/api/v1/trust-bundle")
    bundle = json.loads(raw)["log"]
    _, note = http(site.signer.url + "/api/v1/log/checkpoint")
    verifier = NoteVerifier.from_vkey(bundle["verifier_key"])
    head = open_checkpoint(note, verifier, bundle["origin"]).tree_head
    if head.size != site.size:
        raise BenchError(f"{site.name}: checkpoint size {head.size}")
    indexes = [0, 1, site.size - 1, *random.sample(range(site.size), count)]
    conn = await asyncpg.connect(site.db_url)
    try:
        for idx in indexes:
            entry = await conn.fetchval("SELECT entry FROM log_entries WHERE idx = $1", idx)
            _, raw = http(f"{site.signer.url}{PROOF}?index={idx}")
            body = json.loads(raw)
            path = tuple(base64.b64decode(h) for h in body["hashes"])
            proof = InclusionProof(idx, body["tree_size"], path)
            verify_inclusion(leaf_hash(bytes(entry)), proof, head)
    finally:
        await conn.close()
    site.timings.append(("proofs checked", f"{len(indexes)} against the signed checkpoint"))


async def sample_paths(site: Site, per_kind: int, rounds: int) -> None:
    """Request paths per round and kind, from records drawn at random from the database."""
    wanted = per_kind * (rounds + 1)  # + a warm-up round
    pct = min(100.0, 300.0 * wanted / site.size)
    conn = await asyncpg.connect(site.db_url)
    try:
        rows = await conn.fetch(
            "SELECT token_subject, client_id, serial, created_at FROM signing_records"
            " TABLESAMPLE BERNOULLI ($1::real) ORDER BY random() LIMIT $2",
            pct,
            wanted,
        )
    finally:
        await conn.close()
    rows = (rows * (wanted // max(1, len(rows)) + 1))[:wanted]
    site.probe = rows[per_kind]  # the first of the first measured round
    for n in range(rounds + 1):
        part = rows[n * per_kind : (n + 1) * per_kind]

        def search(**query: Any) -> str:
            return f"{SEARCH}?{urlencode({**query, 'limit': PAGE})}"

        def month(at: datetime, sign: int) -> str:
            return (at + sign * timedelta(days=15)).isoformat()

        site.paths.append(
            {
                "by subject": [search(subject=r["token_subject"]) for r in part],
                "by client, 30 days": [
                    search(
                        client_id=r["client_id"],
                        since=month(r["created_at"], -1),
                        until=month(r["created_at"], 1),
                    )
                    for r in part
                ],
                "by serial": [search(serial=r["serial"]) for r in part],
                "newest, no filter": [search()] * len(part),
                "inclusion proof": [
                    f"{PROOF}?index={random.randrange(site.size)}" for _ in range(len(part))
                ],
            }
        )


# ------------------------------------------------------------------ 2. API latency


async def _api_load(url: str, token: str, paths: dict[str, list[str]], concurrency: int) -> dict:
    """Child process: each kind's paths in turn, ``concurrency`` requests in flight."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    result: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(
            todo: list[str], latencies: list[float], sizes: list[int], bad: Counter[str]
        ) -> None:
            while todo:
                path = todo.pop()
                t0 = time.perf_counter()
                async with session.get(url + path, headers=headers) as resp:
                    body = await resp.read()
                elapsed = time.perf_counter() - t0
                if resp.status != 200:
                    bad[f"HTTP {resp.status}"] += 1
                elif path.startswith(SEARCH) and not (items := len(json.loads(body)["items"])):
                    bad["empty page"] += 1
                else:
                    latencies.append(elapsed)
                    sizes.append(items if path.startswith(SEARCH) else 1)

        for kind, kind_paths in paths.items():
            todo, latencies, sizes, bad = list(reversed(kind_paths)), [], [], Counter[str]()
            clients = (client(todo, latencies, sizes, bad) for _ in range(concurrency))
            await asyncio.gather(*clients)
            items = sum(sizes) / max(1, len(sizes))
            result[kind] = {"latencies": latencies, "items": items, "bad": dict(bad)}
    return result


def p50_p99(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0] * 1e3, values[0] * 1e3) if values else (0.0, 0.0)
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49] * 1e3, q[98] * 1e3


def api_round(site: Site, token: str, n: int, concurrency: int, *, record: bool) -> None:
    paths = site.paths[n]
    r = in_child(_api_load, site.signer.url, token, paths, concurrency, timeout=900)
    for kind in KINDS:
        site.failures.update(r[kind]["bad"])
        if record:
            site.latency.setdefault(kind, []).append(p50_p99(r[kind]["latencies"]))
            site.items.setdefault(kind, []).append(r[kind]["items"])


class _Explain:
    """Stands in for a store's pool: runs EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of the
    store's own statement, so the plan is that of the service's SQL and arguments.

    With ``cached``, also the plan a prepared statement ends up with (the service's statements
    are prepared, asyncpg caches them): PostgreSQL may switch to a generic plan, blind to the
    arguments, after five executions (``plan_cache_mode = auto``)."""

    def __init__(self, conn: asyncpg.Connection, *, cached: bool = False) -> None:
        self.conn = conn
        self.cached = cached
        self.plan: dict[str, Any] = {}
        self.cached_plan: dict[str, Any] = {}

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
        self.plan = json.loads(await self.conn.fetchval(explain + sql, *args))[0]
        if self.cached:
            # EXECUTE takes no bind parameters: literals (our own values), typed by PREPARE.
            literals = ", ".join("'" + str(a).replace("'", "''") + "'" for a in args)
            execute = f"EXECUTE bench_q({literals})" if args else "EXECUTE bench_q"
            await self.conn.execute(f"PREPARE bench_q AS {sql}")
            try:
                for _ in range(6):
                    await self.conn.execute(execute)
                text = await self.conn.fetchval(explain + execute)
                self.cached_plan = json.loads(text)[0]
            finally:
                await self.conn.execute("DEALLOCATE bench_q")
        return []


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]


def plan_line(plan: dict[str, Any]) -> str:
    """The plan's nodes top-down, its execution time and buffers; SEQ SCAN shouted."""
    parts = []
    for node in _nodes(plan["Plan"]):
        label = node["Node Type"]
        if "Index Name" in node:
            label += f" ({node['Index Name']})"
        elif node["Node Type"] == "Seq Scan":
            label = f"SEQ SCAN on {node['Relation Name']}"
        if node.get("Rows Removed by Filter"):
            label += f" [{node['Rows Removed by Filter']:,} rows read and dropped]"
        parts.append(label)
    top = plan["Plan"]
    buffers = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
    return f"{' > '.join(parts)}; {plan['Execution Time']:.2f} ms, {buffers} buffers"


async def explain_searches(site: Site) -> None:
    """EXPLAIN ANALYZE of RecordStore.search for one request of each kind (the first of the
    first measured round), with the service's statement text and arguments."""
    row = site.probe
    at = row["created_at"]
    conn = await asyncpg.connect(site.db_url)
    try:
        filters = {
            "by subject": RecordFilter(subject=row["token_subject"]),
            "by client, 30 days": RecordFilter(
                client_id=row["client_id"],
                since=at - timedelta(days=15),
                until=at + timedelta(days=15),
            ),
            "by serial": RecordFilter(serial=row["serial"]),
            "newest, no filter": RecordFilter(),
        }
        for kind, flt in filters.items():
            explain = _Explain(conn, cached=True)
            await RecordStore(explain).search(flt, limit=PAGE + 1)  # type: ignore[arg-type]
            site.plans[kind] = plan_line(explain.plan)
            cached = plan_line(explain.cached_plan)
            if cached.split(";")[0] != site.plans[kind].split(";")[0]:
                site.plans[f"{kind}, prepared"] = cached
    finally:
        await conn.close()


# ------------------------------------------------------------------ 3. log appends vs signing


def _refusals(key: PrivacyKey, count: int) -> list[bytes]:
    """Real refusal entries (ca.logentry), distinct, of a batch client."""
    requester = Requester(
        "demo_organisations", "http://127.0.0.1:9400", "demo-batch", client_id="demo-batch"
    )
    return [
        RefusalEntry(
            record_id=str(uuid.uuid4()),
            request_id=uuid.uuid4().hex,
            refused_at=datetime.now(UTC),
            requester=requester,
            request=RequestSummary("qes", "legal", "sha256", (secrets.token_bytes(32),)),
            reason="policy.profile_not_allowed",
        ).encode(key)
        for _ in range(count)
    ]


async def _appends(
    db_url: str, key: PrivacyKey, seconds: float, concurrency: int, ready: Any, start: Any
) -> dict:
    pool = await create_pool(db_url, min_size=concurrency, max_size=concurrency, command_timeout=10)
    try:
        store = RecordStore(pool)
        entries = _refusals(key, 1000)
        latencies: list[float] = []

        async def run_for(duration: float) -> tuple[int, float]:
            t0 = time.perf_counter()
            deadline = t0 + duration
            done = 0

            async def loop() -> None:
                nonlocal done
                while (started := time.perf_counter()) < deadline:
                    await store.refuse(entries[done % len(entries)])
                    latencies.append(time.perf_counter() - started)
                    done += 1

            await asyncio.gather(*(loop() for _ in range(concurrency)))
            return done, time.perf_counter() - t0

        await run_for(1.0)  # warm-up: connections, prepared statements
        latencies.clear()
        ready.put(os.getpid())
        if not await asyncio.to_thread(start.wait, 120):
            raise BenchError("start signal never came")
        appends, elapsed = await run_for(seconds)
    finally:
        await pool.close()
    p50, p99 = p50_p99(latencies)
    return {"appends": appends, "elapsed": elapsed, "p50_ms": p50, "p99_ms": p99}


def append_worker(
    db_url: str, key: PrivacyKey, seconds: float, concurrency: int, *queues: Any
) -> None:
    """Child process of (a): ``concurrency`` connections appending one entry per statement."""
    child_main(_appends, (db_url, key, seconds, concurrency), *queues)


async def sequenced(db_url: str, since: int | None = None) -> tuple[int, int]:
    """(log size, 0), or with ``since``: (entries appended from index ``since`` on, the
    statements that appended them): the entries of one statement share their ``created_at``
    (``now()``, the transaction's start)."""
    conn = await asyncpg.connect(db_url)
    try:
        if since is None:
            return await conn.fetchval("SELECT size FROM log_state WHERE id = 1"), 0
        row = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT created_at) FROM log_entries WHERE idx >= $1", since
        )
    finally:
        await conn.close()
    return row[0], row[1]


def measure_appends(site: Site, key: PrivacyKey, args: argparse.Namespace) -> dict[str, Any]:
    results, meter = run_processes(
        append_worker,
        (site.db_url, key, args.seconds, args.append_concurrency),
        args.workers,
        args.seconds,
        "append processes",
        lambda: {"postgres": pids_named("postgres")},
    )
    return {
        "rate": sum(r["appends"] / r["elapsed"] for r in results),
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "cpu": meter,
    }


async def completion_cost(site: Site, key: PrivacyKey, samples: int) -> list[tuple[str, str]]:
    """What the log adds to the completion statement: ``RecordStore.complete`` of one record
    (record update + sequencing + entry insert, committed) against the record update alone
    (committed), alternating on fresh 'issued' copies of the real record; then EXPLAIN ANALYZE
    of one completion statement, server time per CTE."""
    pool = await asyncpg.create_pool(site.db_url, min_size=1, max_size=1)
    try:
        store = RecordStore(pool)
        real = record_from_row(
            await pool.fetchrow("SELECT * FROM signing_records ORDER BY created_at DESC LIMIT 1")
        )
        now = datetime.now(UTC)
        copies = [
            dataclasses.replace(real, id=uuid.uuid4(), serial=secrets.token_hex(20), created_at=now)
            for _ in range(2 * samples + 1)
        ]
        await store.record_issued(copies)
        destruction = dict(real.destruction or {})
        at = now + timedelta(milliseconds=100)

        def completion(rec: Any) -> Completion:
            entry = issuance_entry(
                rec, completed_at=at, destruction=destruction, signed_count=1, failure=None
            )
            return Completion(rec.id, at, 1, destruction, entry=entry.encode(key))

        full, bare = [], []
        for a, b in zip(copies[0:-1:2], copies[1:-1:2], strict=True):
            done = completion(a)
            t0 = time.perf_counter()
            await store.complete([done])
            t1 = time.perf_counter()
            await pool.execute(_COMPLETE_RECORD_ONLY, b.id, at, 1, json.dumps(destruction))
            full.append(t1 - t0)
            bare.append(time.perf_counter() - t1)
        async with pool.acquire() as conn:
            explain = _Explain(conn)
            await RecordStore(explain).complete([completion(copies[-1])])  # type: ignore[arg-type]
    finally:
        await pool.close()
    f, b = statistics.median(full) * 1e3, statistics.median(bare) * 1e3
    return [
        (
            "complete() of 1 record",
            f"{f:.2f} ms median; the record update alone {b:.2f} ms ({samples} each, committed)",
        ),
        ("log share of it", f"{f - b:.2f} ms = {(f - b) / f:.0%}"),
        ("EXPLAIN ANALYZE (server)", cte_times(explain.plan)),
    ]


def cte_times(plan: dict[str, Any]) -> str:
    """Server time of one completion statement per CTE (node self times summed; a CTE Scan's
    time is its CTE's, counted there) and per table's constraint triggers."""
    per: Counter[str] = Counter()

    def walk(node: dict[str, Any], cte: str) -> None:
        name = node.get("Subplan Name", "")
        cte = name.removeprefix("CTE ") if name.startswith("CTE ") else cte
        total = node.get("Actual Total Time", 0.0) * node.get("Actual Loops", 1)
        children = node.get("Plans", [])
        inner = sum(c.get("Actual Total Time", 0.0) * c.get("Actual Loops", 1) for c in children)
        if node["Node Type"] != "CTE Scan":
            per[cte] += max(0.0, total - inner)
        for child in children:
            walk(child, cte)

    walk(plan["Plan"], "result")
    for trigger in plan.get("Triggers", []):
        per[f"FK triggers on {trigger['Relation']}"] += trigger["Time"]
    parts = ", ".join(f"{k} {v:.3f}" for k, v in per.items())
    return f"{parts} ms; execution {plan['Execution Time']:.3f} ms"


# ------------------------------------------------------------------ orchestration


def pg_settings(db_url: str) -> str:
    async def fetch() -> str:
        conn = await asyncpg.connect(db_url)
        try:
            names = ["server_version", "shared_buffers", "fsync", "synchronous_commit"]
            values = [await conn.fetchval("SELECT current_setting($1)", n) for n in names]
        finally:
            await conn.close()
        return ", ".join(f"{n} {v}" for n, v in zip(names, values, strict=True))

    return asyncio.run(fetch())


async def share_ca(source_url: str, target_url: str) -> None:
    """Migrate the second database and give it the CA certificates ``qes init`` stored in the
    first: one CA (one token) serving two databases."""
    source, target = await asyncpg.connect(source_url), await asyncpg.connect(target_url)
    try:
        await migrate(target)
        rows = await source.fetch("SELECT label, certificate, created_at FROM ca_certificates")
        await target.executemany(
            "INSERT INTO ca_certificates (label, certificate, created_at) VALUES ($1, $2, $3)",
            [tuple(r) for r in rows],
        )
    finally:
        await source.close()
        await target.close()


def build(site: Site, batch: str, auditor: str, key: PrivacyKey, args: argparse.Namespace) -> None:
    with step(f"{site.name}: one real signature, then {site.size - 1:,} generated records"):
        check_one_signature(site.signer.url, batch)
        asyncio.run(populate(site, key))
    with step(f"{site.name}: integration by the service, checkpoint"):
        integrate(site, auditor)
    with step(f"{site.name}: VACUUM ANALYZE, proofs checked, request sample"):
        asyncio.run(vacuum(site))
        asyncio.run(check_proofs(site, 20))
        asyncio.run(sample_paths(site, args.requests, args.rounds))


def run_all(
    sites: list[Site], batch: str, auditor: str, key: PrivacyKey, args: argparse.Namespace
) -> dict[str, Any]:
    for site in sites:
        build(site, batch, auditor, key, args)
    large = sites[-1]
    for site in sites:
        with step(f"{site.name}: warm-up requests"):
            api_round(site, auditor, 0, args.api_concurrency, record=False)
    for n in range(1, args.rounds + 1):
        for site in sites:
            with step(f"round {n}/{args.rounds}: {site.name}, {len(KINDS)} x {args.requests}"):
                api_round(site, auditor, n, args.api_concurrency, record=True)
    for site in sites:
        asyncio.run(explain_searches(site))
    worker_pids = wait_all_workers(large.signer, args.workers)
    wrk = None if args.loadgen == "aiohttp" else ensure_wrk()
    if wrk is None and args.loadgen == "wrk":
        raise BenchError("--loadgen wrk: wrk is not installed and cannot be installed")

    def load(seconds: float, on_start: Any = None) -> Any:
        if wrk is not None:
            return run_wrk(wrk, large.signer.url, batch, seconds, args.concurrency, on_start)
        return run_aiohttp(large.signer.url, batch, seconds, args.concurrency, on_start)

    load(min(3.0, args.seconds))  # warm-up
    idp_pid = args.idp_pid
    rounds = []
    for n in range(args.rounds):
        with step(f"round {n + 1}/{args.rounds}: (a) log appends, {args.workers} processes"):
            appends = measure_appends(large, key, args)
        with step(f"round {n + 1}/{args.rounds}: (b) batch signing, {args.workers} workers"):
            before, _ = asyncio.run(sequenced(large.db_url))
            signing, meter = _measured_load(load, worker_pids, idp_pid, args, None, False)
            entries, statements = asyncio.run(sequenced(large.db_url, before))
        rounds.append((appends, signing, meter, (entries, statements)))
    with step("completion statement: with and without the log"):
        completion = asyncio.run(completion_cost(large, key, args.samples))
    return {"rounds": rounds, "completion": completion, "pg": pg_settings(large.db_url)}


def latency_table(sites: list[Site]) -> str:
    small, large = sites
    head = f"{small.name} p50 / p99", f"{large.name} p50 / p99", "ratio p50 / p99", "rows"
    lines = [f"  {'':<26}{head[0]:>22}{head[1]:>24}{head[2]:>20}{head[3]:>14}"]
    for kind in KINDS:
        a = [statistics.median(v) for v in zip(*small.latency[kind], strict=True)]
        b = [statistics.median(v) for v in zip(*large.latency[kind], strict=True)]
        rows = [statistics.mean(site.items[kind]) for site in sites]
        lines.append(
            f"  {kind:<26}{a[0]:>10.1f} / {a[1]:>5.1f} ms{b[0]:>12.1f} / {b[1]:>5.1f} ms"
            f"{b[0] / a[0]:>12.2f} / {b[1] / a[1]:.2f}{rows[0]:>9.1f} / {rows[1]:.1f}"
        )
    return "\n".join(lines)


def report(sites: list[Site], result: dict[str, Any], args: argparse.Namespace) -> str:
    out = []
    for site in sites:
        out.append(f"\n{site.name} database ({site.size:,} records):")
        out.append(table(site.timings))
    out.append(
        f"\nlatency, {args.requests} requests per kind per round, {args.api_concurrency} in"
        f" flight, medians of {args.rounds} rounds (page of {PAGE}; proof at a random index):"
    )
    out.append(latency_table(sites))
    for site in sites:
        failures = ", ".join(f"{k}: {v}" for k, v in site.failures.items()) or "none"
        out.append(f"  {site.name} non-200 or empty answers: {failures}")
    for site in sites:
        out.append(f"\nplans at {site.name} (EXPLAIN ANALYZE of RecordStore.search, one request):")
        out.append(table(list(site.plans.items())))
    seq = [kind for kind, plan in sites[-1].plans.items() if "SEQ SCAN" in plan]
    if seq:
        out.append(f"  SLOW at {sites[-1].name}: sequential scan for {', '.join(seq)}")
    rounds = result["rounds"]
    ratios = [a["rate"] / s.rate if s.rate else 0.0 for a, s, *_ in rounds]
    median = sorted(zip(ratios, range(len(rounds)), strict=True))[len(rounds) // 2][1]
    appends, signing, meter, (entries, statements) = rounds[median]
    per_round = ", ".join(f"{a['rate']:.0f}/{s.rate:.0f}={r:.1f}" for (a, s, *_), r in
                          zip(rounds, ratios, strict=True))  # fmt: skip
    rows = [
        ("rounds (a)/(b)=ratio", per_round),
        (
            "(a) log appends/s",
            f"{appends['rate']:.0f}  (RecordStore.refuse, one entry per statement;"
            f" {args.workers} processes x {args.append_concurrency} connections;"
            f" p50 {appends['p50_ms']:.1f} ms, p99 {appends['p99_ms']:.1f} ms)",
        ),
        (
            "(b) signatures/s",
            f"{signing.rate:.0f}  ({signing.created} x 201 in {signing.duration:.1f} s,"
            f" {args.concurrency} connections, {signing.tool}; p50 {signing.p50_ms:.1f} ms,"
            f" p99 {signing.p99_ms:.1f} ms; errors {signing.error_text()})",
        ),
        ("(a)/(b)", f"{ratios[median]:.1f}  (median of {len(rounds)} rounds)"),
        (
            "(b) log appends",
            f"{entries / signing.duration:.0f} entries/s in {statements / signing.duration:.0f}"
            f" sequencing statements/s ({entries / max(1, statements):.1f} entries each:"
            " the pipeline completes one HSM hop's records in one statement)",
        ),
        (
            "sequencer busy in (b)",
            f"{statements / signing.duration / appends['rate']:.0%} of the one-entry"
            " statements/s of (a)",
        ),
        ("(a) CPU, cores", appends["cpu"].text()),
        ("(b) CPU, cores", meter.text()),
        *result["completion"],
        ("PostgreSQL", result["pg"]),
    ]
    out.append(f"\nlog appends against batch signing, on the {sites[-1].name} database:")
    out.append(table(rows))
    return "\n".join(out)


def human(n: int) -> str:
    """1000 -> 1K, 1000000 -> 1M (the names of the two databases in the table)."""
    for unit, name in ((1_000_000, "M"), (1000, "K")):
        if n % unit == 0:
            return f"{n // unit}{name}"
    return f"{n:,}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2, help="signer workers and append processes")
    p.add_argument("--small", type=int, default=1_000, help="records of the baseline database")
    p.add_argument("--large", type=int, default=1_000_000, help="records of the large database")
    p.add_argument("--rounds", type=int, default=3, help="rounds of each comparison")
    p.add_argument("--requests", type=int, default=300, help="requests per kind per round")
    p.add_argument("--api-concurrency", type=int, default=4, help="API requests in flight")
    p.add_argument("--seconds", type=float, default=8.0, help="each of (a) and (b) per round")
    p.add_argument("--concurrency", type=int, default=32, help="HTTP connections in (b)")
    p.add_argument("--append-concurrency", type=int, default=8, help="connections per (a) proc")
    p.add_argument("--samples", type=int, default=200, help="completion statements timed")
    p.add_argument("--loadgen", choices=("auto", "wrk", "aiohttp"), default="auto")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, no secrets)")
    args = p.parse_args(argv)
    if not 2 <= args.small < args.large or not 1 <= args.workers <= 64 or args.rounds < 1:
        p.error("need 2 <= --small < --large, 1 <= --workers <= 64, --rounds >= 1")
    if args.requests < 1 or args.seconds < 1 or args.samples < 1:
        p.error("need --requests >= 1, --seconds >= 1, --samples >= 1")

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(3600)
    background = machine_busy(1.0)
    if background > 0.2:
        print(f"warning: {background:.2f} cores already busy before the run", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="qes-bench-log-"))
    token: SoftHsmToken | None = None
    leftover = -1
    t_start = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            with step("throwaway SoftHSM2 token, two scratch databases, dev IdP"):
                token = SoftHsmToken.create(tmp / "softhsm", label="qes-bench").with_offline_root()
                token.activate()  # this process never loads the module; children inherit
                admin = stack.enter_context(admin_url())
                urls = [stack.enter_context(scratch_database(admin)) for _ in range(2)]
                idp = stack.enter_context(start_idp(tmp / "idp"))
                args.idp_pid = idp.process.pid
            sites: list[Site] = []
            for url, size in zip(urls, (args.small, args.large), strict=True):
                port = free_port()
                env = service_env(
                    token=token,
                    database_url=url,
                    idp=idp,
                    port=port,
                    data_dir=tmp / f"data-{size}",
                    SOFTHSM2_CONF=str(token.conf),
                    QES__SERVER__WORKERS=str(args.workers),
                )
                if not sites:
                    with step("qes init"):
                        qes_init(env, tmp / "init.log", token)
                    key = privacy_key(env)
                else:
                    asyncio.run(share_ca(urls[0], url))
                signer = SignerProcess(env, port, tmp / f"signer-{size}.log")
                sites.append(Site(human(size), size, url, signer))
            with step(f"qes serve x 2 (one per database), {args.workers} workers each"):
                for site in sites:
                    stack.callback(stop_signer, site.signer, 5.0)
                    site.signer.start(timeout=60)
                    wait_all_workers(site.signer, args.workers)
                batch = asyncio.run(idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"]))
                auditor = asyncio.run(
                    idp.client_token("demo-auditor", DEMO_SECRETS["demo-auditor"])
                )
            result = run_all(sites, batch, auditor, key, args)
            shutdown = [f"{s.name}: {stop_signer(s.signer)}" for s in sites]
        with step("token objects, listed from a separate process"):
            objects = token.list_objects()
            leftover = sum(1 for o in objects if o.label not in LONG_LIVED_LABELS)
    except KeyboardInterrupt:
        print("interrupted: everything started has been stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        clean_up(tmp, keep=args.keep)
    print()
    print(
        f"qes-signer log bench: {args.workers} workers, {human(args.small)} against"
        f" {human(args.large)} records, {args.rounds} rounds, whole run"
        f" {time.perf_counter() - t_start:.0f} s"
    )
    print(report(sites, result, args))
    print()
    print(
        table(
            [
                ("busy before start", f"{background:.2f} cores (other users of the machine)"),
                ("signer shutdown", "; ".join(shutdown)),
                ("leftover non-CA objects", f"{leftover} (token listed from a separate process)"),
                *machine_facts(),
            ]
        )
    )
    return 0 if leftover == 0 else 2


def privacy_key(env: dict[str, str]) -> PrivacyKey:
    from signer.settings.config import load_settings
    from signer.translog.log import load_privacy_key

    return load_privacy_key(load_settings(DEV_CONFIG, env=env))


if __name__ == "__main__":
    sys.exit(main())
