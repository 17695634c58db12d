"""PostgreSQL failover under load: a primary with a synchronous streaming standby, the service
on a two-host URL with ``target_session_attrs=read-write``. The primary is killed and the
standby promoted while clients sign: every signature released has its completed record on the
new primary, signing resumes without a restart, and every checkpoint published before the
failover is consistent (RFC 9162 §2.1.4 consistency proof, checked with ca.merkle) with the new
primary's log, which the checkpoint anchor confirms too."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from ca.merkle import TreeHead, verify_consistency
from signer.keys.session import EPHEMERAL_LABEL
from signer.storage.log import LogStore
from tests.integration.faults.test_faults import copy_ca_certificates, post, statuses
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.pg import private_cluster_dir
from tests.support.pgpair import PgPair
from tests.support.service import SignerProcess, free_port, service_env
from tests.support.softhsm import SoftHsmToken

ORIGIN = "qes-signer.test/log"


@pytest.fixture
def pg_pair() -> Iterator[PgPair]:
    root = private_cluster_dir()
    pair = PgPair.create(root)
    try:
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(300)
async def test_primary_killed_and_standby_promoted_under_load(
    softhsm_token: SoftHsmToken,
    database_url: str,
    pg_pair: PgPair,
    idp: RunningIdp,
    settings: Any,
    ca_ready: None,
    tmp_path: Path,
) -> None:
    labels = (settings.ca.root_label, settings.ca.issuing_label, settings.tsa.label)
    await copy_ca_certificates(database_url, pg_pair.url_of(pg_pair.primary_port), labels)
    anchor = tmp_path / "anchor.json"
    port = free_port()
    env = service_env(
        token=softhsm_token,
        database_url=pg_pair.url,
        idp=idp,
        port=port,
        data_dir=tmp_path,
        QES__LOG__ANCHOR_FILE=f'"{anchor}"',
        QES__LOG__CHECKPOINT_INTERVAL_SECONDS="0.2",
        QES__DATABASE__COMMAND_TIMEOUT="3",
    )
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    signer = SignerProcess(env, port, tmp_path / "signer.log").start()
    published: dict[int, bytes] = {}  # checkpoints seen in the anchor before the failover
    results: list[tuple[int, Any]] = []
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:

            async def client() -> None:
                while not stop.is_set():
                    results.append(await post(session, signer.url, token))

            async def watch_anchor() -> None:
                while not stop.is_set():
                    if anchor.exists():
                        raw = json.loads(anchor.read_text())
                        published[int(raw["size"])] = bytes.fromhex(raw["root"])
                    await asyncio.sleep(0.05)

            clients = [asyncio.create_task(client()) for _ in range(8)]
            watcher = asyncio.create_task(watch_anchor())
            await asyncio.sleep(3)
            before = dict(published)
            watcher.cancel()
            failed_at = time.monotonic()
            await asyncio.to_thread(pg_pair.fail_over)
            while True:  # until a request sent after the promotion is signed
                code, _ = await post(session, signer.url, token)
                if code == 201:
                    break
                assert time.monotonic() - failed_at < 60, "signing did not resume"
                await asyncio.sleep(0.1)
            resumed = time.monotonic() - failed_at
            await asyncio.sleep(1)
            stop.set()
            await asyncio.gather(*clients)
            async with session.get(f"{signer.url}/readyz") as resp:
                assert resp.status == 200, await resp.text()
    finally:
        signer.stop()
    print(f"signing resumed {resumed:.2f} s after the primary was killed")

    new_primary = pg_pair.url_of(pg_pair.standby_port)
    codes = [code for code, _ in results]
    assert set(codes) <= {201, 503}, codes
    assert codes.count(201) > 20
    for code, payload in results:
        if code == 503:
            assert payload["type"] in (
                "/problems/database-unavailable",
                "/problems/hsm-unavailable",
            ), payload
    recorded = await statuses(new_primary)
    released = [payload["serial"] for code, payload in results if code == 201]
    missing = [s for s in released if recorded.get(s) != "completed"]
    assert missing == [], f"signatures released without a completed record: {missing}"

    assert len(before) >= 2, before
    pool = await asyncpg.create_pool(new_primary, min_size=1, max_size=1)
    try:
        store = LogStore(pool, ORIGIN)
        latest = await store.latest_checkpoint()
        assert latest is not None and latest.size >= max(before)
        new = TreeHead(latest.size, latest.root)
        for size, root in sorted(before.items()):
            proof = await store.consistency_proof(size, latest.size)
            verify_consistency(proof, TreeHead(size, root), new)
    finally:
        await pool.close()
    leftovers = [o for o in softhsm_token.list_objects() if o.label in ("", EPHEMERAL_LABEL)]
    assert leftovers == []
