"""Nothing stays half-done after a crash: `qes serve` killed (SIGKILL) under load leaves
records 'issued'; the next start's sweeper ends them as failed 'abandoned' with an issuance log
entry each (outcome failed, nothing signed), once, under its advisory lock; a web-signing or
approval request left 'signing' past its expiry is ended too; `qes audit verify` passes."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from signer.keys.session import EPHEMERAL_LABEL
from signer.signing.sweeper import ENDED_WITH_SESSION
from tests.integration.faults.test_faults import (
    copy_ca_certificates,
    post,
    sign_then_sigkill,
    statuses,
)
from tests.integration.log.test_log_tamper import qes_audit_verify
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.service import SignerProcess, free_port, run_qes, service_env
from tests.support.softhsm import SoftHsmToken


async def stuck_requests(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A web-signing request and an approval request left 'signing' (as a crash while
    signing leaves them), both expired an hour ago."""
    conn = await asyncpg.connect(url)
    past = datetime.now(UTC) - timedelta(hours=1)
    web_id, approval_id = uuid.uuid4(), uuid.uuid4()
    try:
        await conn.execute(
            "INSERT INTO rp_clients (client_id, name, secret_hash, redirect_uris, created_at)"
            " VALUES ('sweep-rp', 'Sweep RP', '\\x00', ARRAY['https://rp.example/cb'], $1)",
            past,
        )
        await conn.execute(
            "INSERT INTO signing_requests (id, client_id, status, format, hash_algorithm, labels,"
            " digests, redirect_uri, state, created_at, expires_at)"
            " VALUES ($1, 'sweep-rp', 'signing', 'raw', 'sha256', ARRAY['a'], ARRAY[$2::bytea],"
            " 'https://rp.example/cb', 's', $3, $3)",
            web_id,
            bytes(32),
            past,
        )
        await conn.execute(
            "INSERT INTO approval_requests (id, status, kind, request_id, created_at, expires_at,"
            " token_issuer, issuer_name, token_subject, display_name, principal, format,"
            " hash_algorithm, digests, labels, approver_group, approvals_required)"
            " VALUES ($1, 'signing', 'digests', 'r', $2, $2, 'https://idp.example', 'demo',"
            " 'svc', 'Service', '{}'::jsonb, 'raw', 'sha256', ARRAY[$3::bytea], ARRAY['a'],"
            " 'g', 1)",
            approval_id,
            past,
            bytes(32),
        )
    finally:
        await conn.close()
    return web_id, approval_id


async def ended(url: str, table: str, row_id: uuid.UUID) -> tuple[str, str | None]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(f"SELECT status, error FROM {table} WHERE id = $1", row_id)  # noqa: S608
    finally:
        await conn.close()
    assert row is not None
    return row["status"], row["error"]


async def abandoned_entries(url: str) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return list(
            await conn.fetch(
                "SELECT r.id, r.failure, r.signed_count, r.destruction, e.idx"
                " FROM signing_records r JOIN log_entries e ON e.record_id = r.id"
                " WHERE r.failure = 'abandoned'"
            )
        )
    finally:
        await conn.close()


async def audit_show(url: str, token: str, serial: str, tmp_path: Path) -> dict[str, str]:
    """`qes audit show SERIAL` through the certificates API, as ``{field: value}``."""
    token_file = tmp_path / "auditor.token"
    token_file.write_text(token)
    code, out, err = await run_qes(
        "audit", "show", serial, "--url", url, "--token-file", str(token_file)
    )
    assert code == 0, err
    return dict(
        (name.strip(), value.strip())
        for name, value in (line.split("  ", 1) for line in out.splitlines() if "  " in line)
    )


@pytest.mark.timeout(300)
async def test_sigkill_mid_flow_then_the_sweeper_ends_what_was_left(
    softhsm_token: SoftHsmToken,
    database_url: str,
    own_database: str,
    idp: RunningIdp,
    settings: Any,
    ca_ready: None,
    auditor_token: str,
    tmp_path: Path,
) -> None:
    await copy_ca_certificates(
        database_url,
        own_database,
        (settings.ca.root_label, settings.ca.issuing_label, settings.tsa.label),
    )
    port = free_port()
    env = service_env(
        token=softhsm_token,
        database_url=own_database,
        idp=idp,
        port=port,
        data_dir=tmp_path,
        QES__SERVER__WORKERS="2",
    )
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    left_issued: list[str] = []
    for attempt in range(5):  # a kill lands between "issued" and "completed" in most runs
        signer = SignerProcess(env, port, tmp_path / f"signer{attempt}.log").start()
        await sign_then_sigkill(signer, token, signed=20)
        recorded = await statuses(own_database)
        left_issued = [s for s, status in recorded.items() if status == "issued"]
        if left_issued:
            break
    assert left_issued, "no kill landed between 'issued' and 'completed' in 5 tries"
    web_id, approval_id = await stuck_requests(own_database)

    sweeping = {
        **env,
        "QES__SWEEPER__INTERVAL_SECONDS": "0.5",
        "QES__SWEEPER__ISSUED_AFTER_SECONDS": "1",
        "QES__SWEEPER__SIGNING_AFTER_SECONDS": "1",
    }
    await asyncio.sleep(1.2)
    second = SignerProcess(sweeping, port, tmp_path / "sweeper.log").start()
    try:
        for _ in range(100):
            recorded = await statuses(own_database)
            if "issued" not in recorded.values():
                break
            await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as session:
            code, _ = await post(session, second.url, token)
        assert code == 201  # the restarted service signs as usual meanwhile
        shown = await audit_show(second.url, auditor_token, left_issued[0], tmp_path)
    finally:
        second.stop()
    # What an auditor sees: failed, the reason, and what became of the key.
    assert shown["status"] == "failed" and shown["failure"] == "abandoned"
    assert shown["key destroyed"] == (
        "with its HSM session when its process ended (a session object; not confirmed)"
    )

    recorded = await statuses(own_database)
    assert "issued" not in recorded.values(), recorded
    entries = await abandoned_entries(own_database)
    assert len(entries) == len(left_issued)
    assert len({e["idx"] for e in entries}) == len(entries)  # one log entry each, once
    assert all(e["signed_count"] == 0 for e in entries)
    # The key's fate, in the record (and its log entry, which verify rebuilds from it): a
    # session object gone with its session, not destroyed by a call, not confirmed absent.
    assert all(json.loads(e["destruction"]) == dict(ENDED_WITH_SESSION) for e in entries)
    for serial in left_issued:
        assert recorded[serial] == "failed"
    assert await ended(own_database, "signing_requests", web_id) == ("failed", "abandoned")
    assert await ended(own_database, "approval_requests", approval_id) == ("failed", "abandoned")

    verify_env = {**env, "QES_DATABASE_URL": own_database}
    result = await asyncio.to_thread(qes_audit_verify, verify_env)
    assert result.returncode == 0, result.stdout + result.stderr
    leftovers = [o for o in softhsm_token.list_objects() if o.label in ("", EPHEMERAL_LABEL)]
    assert leftovers == []
