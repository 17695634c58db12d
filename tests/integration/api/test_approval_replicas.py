"""Approvals with two replicas (two `qes serve` processes on one database): when the last two
approvers of a 2-of-3 request approve at the same moment on different replicas, exactly one
approval counts as the m-th and the signature is made exactly once; the other is refused (409)
and recorded nowhere."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.approvals import SEAL_CLIENT
from tests.support.idp import DEMO_PASSWORDS, DEMO_SECRETS, RunningIdp
from tests.support.service import SignerProcess, api_headers, free_port, service_env
from tests.support.softhsm import SoftHsmToken


@pytest.fixture(scope="module")
def replicas(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SignerProcess, SignerProcess]]:
    work = tmp_path_factory.mktemp("approval-replicas")
    started: list[SignerProcess] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            env = service_env(
                token=softhsm_token, database_url=database_url, idp=idp, port=port, data_dir=work
            )
            started.append(SignerProcess(env, port, work / f"signer-{name}.log").start())
        yield started[0], started[1]
    finally:
        for process in started:
            process.stop()


async def call(
    http: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    async with http.request(method, url, json=body, headers=api_headers(token)) as resp:
        return resp.status, await resp.json()


async def test_the_last_approval_signs_exactly_once_across_replicas(
    replicas: tuple[SignerProcess, SignerProcess], idp: RunningIdp, database_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    a, b = replicas
    seal = await idp.client_token(SEAL_CLIENT, DEMO_SECRETS[SEAL_CLIENT])
    dana, erik, fiona = [
        await idp.user_token(u, DEMO_PASSWORDS[u], "demo-web") for u in ("dana", "erik", "fiona")
    ]
    conn = await asyncpg.connect(database_url)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(4):
                before = await conn.fetchval(
                    "SELECT count(*) FROM signing_records WHERE token_subject=$1", SEAL_CLIENT
                )
                body = {
                    "hash_algorithm": "sha256",
                    "hashes": [base64.b64encode(os.urandom(32)).decode()],
                }
                code, held = await call(http, "POST", f"{a.url}/api/v1/signatures", seal, body)
                assert code == 202, held
                path = f"/api/v1/approval-requests/{held['id']}"
                vote = {"digest_commitment": held["digest_commitment"]}
                assert (await call(http, "POST", f"{b.url}{path}/approve", dana, vote))[0] == 200
                (c1, r1), (c2, r2) = await asyncio.gather(
                    call(http, "POST", f"{a.url}{path}/approve", erik, vote),
                    call(http, "POST", f"{b.url}{path}/approve", fiona, vote),
                )
                assert sorted((c1, c2)) == [200, 409], (r1, r2)
                winner, loser = (r1, r2) if c1 == 200 else (r2, r1)
                assert winner["status"] == "completed", winner
                assert loser["type"] == "/problems/approval-not-pending"
                after = await conn.fetchval(
                    "SELECT count(*) FROM signing_records WHERE token_subject=$1", SEAL_CLIENT
                )
                assert after == before + 1
                decisions = await conn.fetchval(
                    "SELECT count(*) FROM approval_decisions WHERE approval_request=$1::uuid",
                    held["id"],
                )
                assert decisions == 2
                for replica in (a, b):
                    code, seen = await call(http, "GET", f"{replica.url}{path}", seal)
                    assert code == 200 and seen["serial"] == winner["serial"]
    finally:
        await conn.close()
