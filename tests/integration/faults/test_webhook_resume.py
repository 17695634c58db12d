"""Webhooks that were due are resumed after a crash, and requests the sweeper ends tell their
webhooks (issue 14, item 6).

A request ends while its RP's receiver is down; `qes serve` is killed (SIGKILL) while its live
delivery is still retrying. With the receiver back, the next start sends that webhook, and
those of a web-signing and an approval request its sweeper ends, once each, with a MAC the RP
verifies with the standard library only; the RP's GET shows it delivered. Two replicas (two
workers each) sending the same due webhooks send each once: every replica claims deliveries
under a lease (signer.storage.webhook_outbox)."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signer.keys.session import EPHEMERAL_LABEL
from tests.integration.faults.test_faults import copy_ca_certificates
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.pg import sql
from tests.support.rp import Rp, add_rp
from tests.support.service import SignerProcess, free_port, service_env
from tests.support.softhsm import SoftHsmToken
from tests.support.webhooks import Receiver, receiving, verified_with

REDIRECT = "https://rp.example/cb"
#: The resumer every half second; a webhook is due 1 s after its end or its last attempt.
RESUMING = {
    "QES__SWEEPER__INTERVAL_SECONDS": "0.5",
    "QES__SWEEPER__SIGNING_AFTER_SECONDS": "1",
    "QES__SWEEPER__WEBHOOK_RETRY_AFTER_SECONDS": "1",
}


@pytest.fixture
async def env(
    softhsm_token: SoftHsmToken,
    database_url: str,
    own_database: str,
    idp: RunningIdp,
    settings: Any,
    ca_ready: None,
    tmp_path: Path,
) -> dict[str, str]:
    """A web-signing service on its own database (the session's CA copied in)."""
    await copy_ca_certificates(
        database_url,
        own_database,
        (settings.ca.root_label, settings.ca.issuing_label, settings.tsa.label),
    )
    return service_env(
        token=softhsm_token,
        database_url=own_database,
        idp=idp,
        port=free_port(),
        data_dir=tmp_path,
        QES__WEB_SIGNING__CLIENT_ID="demo-signer-web",
        QES__WEB_SIGNING__ISSUER="demo_people",
        QES_WEB_SIGNING_CLIENT_SECRET=DEMO_SECRETS["demo-signer-web"],
    )


async def create(url: str, rp: Rp, webhook_url: str) -> str:
    body = {
        "documents": [{"label": "a.pdf", "digest": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}],
        "format": "cades",
        "redirect_uri": REDIRECT,
        "state": "rp-state",
        "webhook_url": webhook_url,
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/api/v1/signing-requests", json=body, headers=rp.auth) as r,
    ):
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])


async def fetch(url: str, rp: Rp, request_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/v1/signing-requests/{request_id}", headers=rp.auth) as r,
    ):
        assert r.status == 200, await r.text()
        result: dict[str, Any] = await r.json()
        return result


async def stuck_with_webhooks(
    url: str, rp: Rp, hook: str, approval_secret_hash: bytes
) -> tuple[uuid.UUID, uuid.UUID]:
    """A web-signing and an approval request left 'signing' by a crash an hour ago, each with
    a webhook: the sweeper ends them."""
    past = datetime.now(UTC) - timedelta(hours=1)
    web_id, approval_id = uuid.uuid4(), uuid.uuid4()
    await sql(
        url,
        "INSERT INTO signing_requests (id, client_id, status, format, hash_algorithm, labels,"
        " digests, redirect_uri, state, created_at, expires_at, webhook_url)"
        " VALUES ($1, $2, 'signing', 'raw', 'sha256', ARRAY['a'], ARRAY[$3::bytea], $4, 's',"
        " $5, $5, $6)",
        web_id, rp.client_id, bytes(32), REDIRECT, past, hook,
    )  # fmt: skip
    await sql(
        url,
        "INSERT INTO approval_requests (id, status, kind, request_id, created_at, expires_at,"
        " token_issuer, issuer_name, token_subject, display_name, principal, format,"
        " hash_algorithm, digests, labels, approver_group, approvals_required, webhook_url,"
        " webhook_secret_hash)"
        " VALUES ($1, 'signing', 'digests', 'r', $2, $2, 'https://idp.example', 'demo',"
        " 'svc', 'Service', '{}'::jsonb, 'raw', 'sha256', ARRAY[$3::bytea], ARRAY['a'],"
        " 'g', 1, $4, $5)",
        approval_id, past, bytes(32), hook, approval_secret_hash,
    )  # fmt: skip
    return web_id, approval_id


async def until(check: Any, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(240)
async def test_a_webhook_due_at_a_crash_and_those_of_swept_requests_arrive_once(
    env: dict[str, str], softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    db, port = env["QES_DATABASE_URL"], int(env["QES__SERVER__PORT"])
    rp = await add_rp(env, "Webhook RP", REDIRECT)
    hook_port = free_port()
    hook = f"http://127.0.0.1:{hook_port}/hook"  # nobody listens yet: the RP is down
    first = SignerProcess(env, port, tmp_path / "first.log").start()
    try:
        request_id = await create(first.url, rp, hook)
        # The request's lifetime passes (moved back rather than waited for); the RP's GET
        # finds it expired, which ends it and starts the live delivery.
        await sql(
            db,
            "UPDATE signing_requests SET expires_at = now() - interval '1 second' WHERE id = $1",
            uuid.UUID(request_id),
        )
        assert (await fetch(first.url, rp, request_id))["status"] == "expired"

        async def attempted() -> bool:
            rows = await sql(
                db,
                "SELECT webhook_attempts FROM signing_requests WHERE id = $1",
                uuid.UUID(request_id),
            )
            return bool(rows[0]["webhook_attempts"] >= 1)

        await until(attempted)
    finally:
        first.kill()  # SIGKILL while the live delivery is still retrying
    before = (await sql(db, "SELECT * FROM signing_requests WHERE id = $1", uuid.UUID(request_id)))[
        0
    ]
    assert before["webhook_delivered_at"] is None
    assert 1 <= before["webhook_attempts"] < 6, before["webhook_attempts"]
    approval_hash = hashlib.sha256(b"approval webhook secret").digest()
    web_id, approval_id = await stuck_with_webhooks(db, rp, hook, approval_hash)

    async with receiving(Receiver(hook), hook_port) as receiver:
        second = SignerProcess({**env, **RESUMING}, port, tmp_path / "second.log").start()
        try:

            async def all_three() -> bool:
                return len(receiver.seen) >= 3

            await until(all_three)
            await asyncio.sleep(3)  # six more resumer rounds: nothing is sent again
            shown = await fetch(second.url, rp, request_id)
        finally:
            second.stop()

    by_id = {}
    for headers, body, status in receiver.seen:
        assert status == 200
        key_hash = approval_hash if str(approval_id) in body.decode() else rp.secret_hash
        payload = verified_with(key_hash, headers, body)
        assert payload["id"] not in by_id, "sent twice"
        by_id[payload["id"]] = payload
    assert by_id == {
        request_id: {"id": request_id, "state": "rp-state", "status": "expired"},
        str(web_id): {"id": str(web_id), "state": "s", "status": "failed"},
        str(approval_id): {"id": str(approval_id), "status": "failed"},
    }
    assert shown["webhook"]["delivered_at"] is not None
    assert shown["webhook"]["attempts"] == before["webhook_attempts"] + 1
    assert shown["webhook"]["last_result"] == "HTTP 200"
    swept = await sql(
        db,
        "SELECT webhook_attempts, webhook_delivered_at FROM approval_requests WHERE id = $1",
        approval_id,
    )
    assert swept[0]["webhook_attempts"] == 1 and swept[0]["webhook_delivered_at"] is not None
    leftovers = [o for o in softhsm_token.list_objects() if o.label in ("", EPHEMERAL_LABEL)]
    assert leftovers == []


async def ended_requests(url: str, rp: Rp, hook: str, count: int) -> set[str]:
    """``count`` requests cancelled just now whose webhooks were never sent (their process
    died at the end): due one retry period from now."""
    ids = [uuid.uuid4() for _ in range(count)]
    now = datetime.now(UTC)
    for request_id in ids:
        await sql(
            url,
            "INSERT INTO signing_requests (id, client_id, status, format, hash_algorithm,"
            " labels, digests, redirect_uri, state, created_at, expires_at, ended_at,"
            " webhook_url)"
            " VALUES ($1, $2, 'cancelled', 'raw', 'sha256', ARRAY['a'], ARRAY[$3::bytea], $4,"
            " 's', $5, $5, $5, $6)",
            request_id, rp.client_id, bytes(32), REDIRECT, now, hook,
        )  # fmt: skip
    return {str(i) for i in ids}


@pytest.mark.timeout(240)
async def test_two_replicas_send_each_due_webhook_once(env: dict[str, str], tmp_path: Path) -> None:
    db = env["QES_DATABASE_URL"]
    rp = await add_rp(env, "Webhook RP", REDIRECT)
    hook_port = free_port()
    hook = f"http://127.0.0.1:{hook_port}/hook"
    replicas = [
        SignerProcess(
            {**env, **RESUMING, "QES__SERVER__WORKERS": "2", "QES__SERVER__PORT": str(port)},
            port,
            tmp_path / f"replica{n}.log",
        )
        for n, port in enumerate((free_port(), free_port()))
    ]
    # A slow receiver: each POST is in flight while the other replicas' loops come round.
    async with receiving(Receiver(hook, delay=0.3), hook_port) as receiver:
        await asyncio.gather(*(asyncio.to_thread(r.start) for r in replicas))
        try:
            ids = await ended_requests(db, rp, hook, 20)

            async def all_sent() -> bool:
                return len(receiver.seen) >= len(ids)

            async def all_recorded() -> bool:
                recorded = [r for r in await attempts() if r["webhook_delivered_at"] is not None]
                return len(recorded) >= len(ids)

            async def attempts() -> list[Any]:
                return await sql(
                    db,
                    "SELECT webhook_attempts, webhook_delivered_at FROM signing_requests"
                    " WHERE id = ANY($1::uuid[])",
                    [uuid.UUID(i) for i in ids],
                )

            await until(all_sent)
            # each delivery is recorded after its answer (a full suite once stopped the
            # replicas before that): wait for the records, then let every replica's loop
            # come round several more times
            await until(all_recorded, within=20)
            await asyncio.sleep(3)
        finally:
            for replica in replicas:
                replica.stop()

    sent = [verified_with(rp.secret_hash, h, b)["id"] for h, b, _ in receiver.seen]
    assert sorted(sent) == sorted(ids)  # each once
    rows = await attempts()
    assert all(r["webhook_attempts"] == 1 and r["webhook_delivered_at"] for r in rows), rows
    loggers = [r.log.read_text().count("webhook_resumed") for r in replicas]
    assert sum(loggers) == len(ids), loggers


async def open_authorization(url: str, rp: Rp) -> uuid.UUID:
    """A CSC OAuth2 authorization at its consent page (a verified login held) that expired a
    second ago: nobody comes back to it."""
    auth_id = uuid.uuid4()
    past = datetime.now(UTC) - timedelta(seconds=1)
    await sql(
        url,
        "INSERT INTO csc_oauth2_requests (id, client_id, redirect_uri, credential_id,"
        " num_signatures, hash_algorithm_oid, hashes, code_challenge, status, created_at,"
        " expires_at, csrf_token, principal)"
        " VALUES ($1, $2, $3, 'cred', 1, '2.16.840.1.101.3.4.2.1', ARRAY[$4::bytea], 'c',"
        " 'consent', $5, $5, 'csrf', '{\"sub\": \"alice\"}'::jsonb)",
        auth_id, rp.client_id, REDIRECT, bytes(32), past,
    )  # fmt: skip
    return auth_id


def scraped(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


@pytest.mark.timeout(180)
async def test_the_sweeper_expires_pending_requests_in_the_background(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 14, item 6: a pending web-signing request nobody opens again ends 'expired' at
    its expiry, by the sweeper, and its RP is told at once (the resumer, set to wait ten
    minutes, cannot be the sender); an expired CSC OAuth2 authorization ends and drops its
    login. Logged, and counted in ``qes_sweeper_ended_total``."""
    db, port, metrics_port = env["QES_DATABASE_URL"], int(env["QES__SERVER__PORT"]), free_port()
    rp = await add_rp(env, "Expiry RP", REDIRECT)
    hook_port = free_port()
    hook = f"http://127.0.0.1:{hook_port}/hook"
    sweeping = {
        **env,
        "QES__SWEEPER__INTERVAL_SECONDS": "0.5",
        "QES__SWEEPER__WEBHOOK_RETRY_AFTER_SECONDS": "600",
        "QES__METRICS__ENABLED": "true",
        "QES__METRICS__PORT": str(metrics_port),
    }
    async with receiving(Receiver(hook), hook_port) as receiver:
        signer = SignerProcess(sweeping, port, tmp_path / "signer.log").start()
        try:
            request_id = await create(signer.url, rp, hook)
            auth_id = await open_authorization(db, rp)
            await asyncio.sleep(1.5)  # three sweeps: the request is not yet due
            assert receiver.seen == []
            # Its lifetime passes (moved back rather than waited for); nobody opens it.
            await sql(
                db,
                "UPDATE signing_requests SET expires_at = now() - interval '1 second'"
                " WHERE id = $1",
                uuid.UUID(request_id),
            )

            async def told() -> bool:
                return len(receiver.seen) >= 1

            await until(told)
            await asyncio.sleep(1.5)  # more sweeps: nothing is expired or sent twice
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{metrics_port}/metrics") as r,
            ):
                exported = await r.text()
        finally:
            signer.stop()

    [(headers, body, status)] = receiver.seen
    assert status == 200
    assert verified_with(rp.secret_hash, headers, body) == {
        "id": request_id,
        "state": "rp-state",
        "status": "expired",
    }
    [row] = await sql(db, "SELECT * FROM signing_requests WHERE id = $1", uuid.UUID(request_id))
    assert row["status"] == "expired" and row["ended_at"] is not None
    assert row["webhook_attempts"] == 1 and row["webhook_delivered_at"] is not None
    [auth] = await sql(db, "SELECT * FROM csc_oauth2_requests WHERE id = $1", auth_id)
    assert (auth["status"], auth["error"], auth["principal"]) == ("expired", "expired", None)
    logged = (tmp_path / "signer.log").read_text()
    [line] = [x for x in logged.splitlines() if "sweeper_expired_web_request" in x]
    assert request_id in line
    assert logged.count("sweeper_expired_csc_authorization") == 1
    name = "qes_sweeper_ended_total"
    assert scraped(exported, name, kind="expired_web_request") == 1
    assert scraped(exported, name, kind="expired_csc_authorization") == 1
