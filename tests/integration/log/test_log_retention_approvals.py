"""Retention and data-subject requests over the approval and admin rows (issue 5 item 6, for
the rows of issue 7): `qes audit subject` lists a person's approval requests, decisions and
admin actions (as target and as actor) and nothing of anyone else, through indexes; `qes audit
purge` turns them into tombstones in one transaction, leaving an admin action whose suspension
is in force; `qes audit verify` still verifies, counts them as purged and names an altered
tombstone. Real IdP tokens, the real HSM and PostgreSQL, the `qes` CLI as a child process."""

from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from signer.storage.retention import (
    SUBJECT_ADMIN_ACTIONS,
    SUBJECT_APPROVAL_REQUESTS,
    SUBJECT_DECISIONS,
    RetentionStore,
)
from signer.translog import retention
from tests.integration.log.test_log_retention import Snapshot
from tests.support.approvals import SEAL_CLIENT
from tests.support.idp import DEMO_PASSWORDS, DEMO_SECRETS, RunningIdp
from tests.support.service import DEV_CONFIG, api_headers, run_qes

CLI_ACTOR = f"cli:{getpass.getuser()}"


async def qes(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    return await run_qes(*args, "--config", str(DEV_CONFIG), env=env)


async def subject(env: dict[str, str], who: str, *extra: str) -> dict[str, Any]:
    code, out, err = await qes(env, "audit", "subject", "--subject", who, "--json", *extra)
    assert code == 0, err
    found: dict[str, Any] = json.loads(out)
    return found


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Any], signer_env: dict[str, str], ca_ready: None
) -> AsyncIterator[TestClient]:
    from signer.app import create_app
    from signer.http.kit.state import SERVICES
    from signer.settings.config import load_settings

    app = create_app(load_settings(DEV_CONFIG, env=signer_env))
    client: TestClient = await aiohttp_client(app)
    yield client
    leftover = await app[SERVICES].hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
    assert leftover == [], f"session objects left in the HSM after the test: {leftover}"


@pytest.fixture
async def people(idp: RunningIdp) -> dict[str, str]:
    names = ("dana", "erik", "fiona")
    tokens = await asyncio.gather(
        *(idp.user_token(n, DEMO_PASSWORDS[n], "demo-web") for n in names)
    )
    return dict(zip(names, tokens, strict=True))


@pytest.fixture
async def snapshot(database_url: str) -> AsyncIterator[Snapshot]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    saved = Snapshot(pool)
    try:
        yield saved
    finally:
        try:
            await saved.restore()
        finally:
            await pool.close()


async def hold(api: TestClient, token: str, **extra: Any) -> dict[str, Any]:
    digests = [hashlib.sha256(os.urandom(16)).digest() for _ in range(2)]
    body = {
        "hash_algorithm": "sha256",
        "hashes": [base64.b64encode(d).decode() for d in digests],
        **extra,
    }
    resp = await api.post("/api/v1/signatures", json=body, headers=api_headers(token))
    assert resp.status == 202, await resp.text()
    held: dict[str, Any] = await resp.json()
    return held


async def decide(api: TestClient, token: str, held: dict[str, Any], verb: str) -> dict[str, Any]:
    resp = await api.post(
        f"/api/v1/approval-requests/{held['id']}/{verb}",
        json={"digest_commitment": held["digest_commitment"]},
        headers=api_headers(token),
    )
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_subject_purge_and_verify_cover_approvals_and_admin_actions(
    api: TestClient,
    people: dict[str, str],
    idp: RunningIdp,
    auditor_token: str,
    signer_env: dict[str, str],
    snapshot: Snapshot,
) -> None:
    seal = await idp.client_token(SEAL_CLIENT, DEMO_SECRETS[SEAL_CLIENT])
    # dana asks (approvers need 2 of seal-approvers), erik and fiona approve: it is signed.
    mine = await hold(api, people["dana"], labels=["Dana's contract", "Annex"], reason="mine")
    await decide(api, people["erik"], mine, "approve")
    assert (await decide(api, people["fiona"], mine, "approve"))["status"] == "completed"
    # The seal client asks, dana denies.
    theirs = await hold(api, seal, reason="seal")
    assert (await decide(api, people["dana"], theirs, "deny"))["status"] == "denied"
    # Two more wait: one past its expiry that no sweep has noticed (the service was down),
    # one still open.
    lapsed, waiting = await hold(api, seal), await hold(api, seal)
    # Admin actions from the CLI: one suspension lifted again, one still in force.
    gone, kept = f"gdpr-left-{uuid.uuid4().hex[:8]}", f"gdpr-kept-{uuid.uuid4().hex[:8]}"
    for args in (("suspend", gone, "--reason", "left the bank"), ("resume", gone),
                 ("suspend", kept, "--reason", "under review")):  # fmt: skip
        code, _, err = await qes(signer_env, args[0], "identity", idp.issuer, *args[1:])
        assert code == 0, err
    await api.post("/api/v1/log/checkpoints", headers=api_headers(auditor_token))

    dana = await subject(signer_env, "dana")
    assert [r["id"] for r in dana["approval_requests"]][-1:] == [mine["id"]]
    assert theirs["id"] not in [r["id"] for r in dana["approval_requests"]]
    assert dana["approval_requests"][-1]["labels"] == ["Dana's contract", "Annex"]
    assert dana["approval_requests"][-1]["record_serial"] is not None
    denial = [d for d in dana["approval_decisions"] if d["approval_request"] == theirs["id"]]
    assert [d["decision"] for d in denial] == ["denied"]
    assert mine["id"] not in [d["approval_request"] for d in dana["approval_decisions"]]
    erik = await subject(signer_env, "erik", "--issuer", idp.issuer)
    assert [d["approval_request"] for d in erik["approval_decisions"]][-1:] == [mine["id"]]
    assert mine["id"] not in [r["id"] for r in erik["approval_requests"]]
    assert theirs["id"] not in [d["approval_request"] for d in erik["approval_decisions"]]
    nobody = await subject(signer_env, "erik", "--issuer", "https://other.example.com")
    assert nobody["approval_decisions"] == [] and nobody["approval_requests"] == []
    client = await subject(signer_env, SEAL_CLIENT)
    assert theirs["id"] in [r["id"] for r in client["approval_requests"]]
    target = await subject(signer_env, gone)
    assert [(a["action"], a["role"], a["reason"]) for a in target["admin_actions"]] == [
        ("suspend", "target", "left the bank"),
        ("resume", "target", None),
    ]
    assert (await subject(signer_env, kept))["admin_actions"][0]["role"] == "target"
    actor = await subject(signer_env, CLI_ACTOR)
    acted = {a["id"] for a in actor["admin_actions"] if a["role"] == "actor"}
    assert {a["id"] for a in target["admin_actions"]} <= acted
    code, out, _ = await qes(signer_env, "audit", "subject", "--subject", gone)
    assert code == 0 and "2 admin action(s) as target or actor" in out
    code, _, err = await qes(signer_env, "audit", "subject", "--subject", "")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "must not be empty" in err

    # Eight years on (time injected), everything so far goes, in one transaction.
    await snapshot.take()
    pool = snapshot.pool
    now = datetime.now(UTC)
    await pool.execute(
        "UPDATE approval_requests SET expires_at = $2 WHERE id = $1",
        uuid.UUID(lapsed["id"]),
        now - timedelta(minutes=1),
    )
    purged = await retention.purge(
        RetentionStore(pool),
        now + timedelta(seconds=1),
        now=now + timedelta(days=2558),
        retention_days=2557,
    )
    assert purged.approval_requests >= 2 and purged.approval_decisions >= 3
    assert purged.admin_actions >= 2
    status_of = "SELECT status, purged_at IS NOT NULL FROM approval_requests WHERE id = $1"
    assert tuple(await pool.fetchrow(status_of, uuid.UUID(lapsed["id"]))) == ("expired", True)
    assert tuple(await pool.fetchrow(status_of, uuid.UUID(waiting["id"]))) == ("pending", False)
    still_waiting = (await subject(signer_env, SEAL_CLIENT))["approval_requests"]
    assert waiting["id"] in [r["id"] for r in still_waiting]
    ours = {mine["id"], theirs["id"], lapsed["id"]}
    for who in ("dana", "erik", "fiona", SEAL_CLIENT, gone):
        found = await subject(signer_env, who)
        assert not ours & {r["id"] for r in found["approval_requests"]}, who
        assert not ours & {d["approval_request"] for d in found["approval_decisions"]}, who
        # what is left is only what has not ended (other tests' pending requests)
        assert all(r["status"] in ("pending", "signing") for r in found["approval_requests"])
        assert found["admin_actions"] == [], who
    still = (await subject(signer_env, kept))["admin_actions"]
    assert [(a["action"], a["reason"]) for a in still] == [("suspend", "under review")]
    row = await pool.fetchrow(
        "SELECT * FROM approval_requests WHERE id = $1", uuid.UUID(mine["id"])
    )
    assert row["purged_at"] is not None and row["status"] == "completed"
    assert (row["token_subject"], row["display_name"], row["principal"]) == ("", "", "{}")
    assert row["labels"] == row["digests"] == [] and row["reason"] is None
    assert row["result"] is None and row["record_serial"] is not None
    resp = await api.get(
        f"/api/v1/approval-requests/{mine['id']}", headers=api_headers(people["erik"])
    )
    assert resp.status == 404
    with pytest.raises(asyncpg.CheckViolationError):  # a half-erased tombstone is refused
        await pool.execute(
            "UPDATE approval_requests SET token_subject = 'dana' WHERE id = $1",
            uuid.UUID(mine["id"]),
        )

    code, out, err = await qes(signer_env, "audit", "verify", "-q")
    assert code == 0, err
    tombstones = await pool.fetchval(
        "SELECT (SELECT count(*) FROM log_entries AS e JOIN signing_records AS r"
        "         ON r.id = e.record_id WHERE r.certificate = '')"
        "     + (SELECT count(*) FROM approval_decisions AS d JOIN approval_requests AS r"
        "         ON r.id = d.approval_request WHERE r.purged_at IS NOT NULL)"
        "     + (SELECT count(*) FROM admin_actions WHERE purged_at IS NOT NULL)"
    )
    assert f"({tombstones} purged: fields not compared)" in out

    # A tombstone is still bound to its entry: altering what it keeps is caught.
    denied = await pool.fetchrow(
        "SELECT id, log_index FROM approval_decisions WHERE approval_request = $1",
        uuid.UUID(theirs["id"]),
    )
    await pool.execute(
        "UPDATE approval_decisions SET decision = 'approved' WHERE id = $1", denied["id"]
    )
    try:
        code, _, err = await qes(signer_env, "audit", "verify", "-q")
    finally:
        await pool.execute(
            "UPDATE approval_decisions SET decision = 'denied' WHERE id = $1", denied["id"]
        )
    assert code == 1
    assert f"entry {denied['log_index']}: does not match purged approval decision" in err
    assert "field decision differs" in err

    await pool.execute(
        "UPDATE approval_decisions SET token_subject = 'dana' WHERE id = $1", denied["id"]
    )
    try:
        code, _, err = await qes(signer_env, "audit", "verify", "-q")
    finally:
        await pool.execute(
            "UPDATE approval_decisions SET token_subject = '' WHERE id = $1", denied["id"]
        )
    assert code == 1
    assert f"entry {denied['log_index']}: approval decision {denied['id']} of a purged" in err

    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "UPDATE admin_actions SET actor_subject = 'cli:someone' WHERE id = $1",
            uuid.UUID(target["admin_actions"][0]["id"]),
        )
    lifted = uuid.UUID(target["admin_actions"][1]["id"])
    await pool.execute("UPDATE admin_actions SET reason = '' WHERE id = $1", lifted)
    try:
        code, _, err = await qes(signer_env, "audit", "verify", "-q")
    finally:
        await pool.execute("UPDATE admin_actions SET reason = NULL WHERE id = $1", lifted)
    assert code == 1
    assert f"does not match purged admin action {lifted} (field reason differs)" in err

    code, out, err = await qes(signer_env, "resume", "identity", idp.issuer, kept)
    assert code == 0, err
    assert (await decide(api, people["dana"], waiting, "deny"))["status"] == "denied"


async def test_approval_and_admin_lookups_are_index_scans(database_url: str) -> None:
    """With 20,000 other people's approval requests, decisions and admin actions (rolled back
    afterwards) the planner finds one person's rows through the (subject, issuer) indexes,
    never by scanning."""
    conn = await asyncpg.connect(database_url)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(
                "INSERT INTO approval_requests (id, status, kind, request_id, created_at,"
                " expires_at, token_issuer, issuer_name, token_subject, display_name, principal,"
                " format, hash_algorithm, digests, labels, approver_group, approvals_required)"
                " SELECT gen_random_uuid(), 'denied', 'digests', 'r', now(), now(), 'iss', 'n',"
                " 'person-' || g, 'P', '{}', 'raw', 'sha256', ARRAY['\\x00'::bytea], ARRAY['l'],"
                " 'g', 1 FROM generate_series(1, 20000) AS g"
            )
            await conn.execute(
                "INSERT INTO approval_decisions (id, approval_request, decision, request_id,"
                " decided_at, issuer_name, token_issuer, token_subject, display_name, log_index)"
                " SELECT gen_random_uuid(), id, 'denied', 'r', now(), 'n', 'iss',"
                " 'approver-' || token_subject, 'A', 0 FROM approval_requests"
                " WHERE token_subject LIKE 'person-%'"
            )
            await conn.execute(
                "INSERT INTO admin_actions (id, request_id, action, scope, token_issuer,"
                " token_subject, actor_issuer, actor_subject, acted_at)"
                " SELECT gen_random_uuid(), 'r', 'suspend', 'identity', 'iss', 'person-' || g,"
                " 'iss', 'admin-' || g, now() FROM generate_series(1, 20000) AS g"
            )
            for table in ("approval_requests", "approval_decisions", "admin_actions"):
                await conn.execute(f"ANALYZE {table}")
            both = ["admin_actions_target", "admin_actions_actor"]
            for sql, who, indexes in (
                (SUBJECT_APPROVAL_REQUESTS, "person-42", ["approval_requests_requester"]),
                (SUBJECT_DECISIONS, "approver-person-42", ["approval_decisions_approver"]),
                (SUBJECT_ADMIN_ACTIONS, "person-42", both),
            ):  # fmt: skip
                for issuer in (None, "iss"):
                    plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, who, issuer))
                    assert all(name in plan for name in indexes), plan
                    assert "Seq Scan" not in plan, plan
            assert len(await conn.fetch(SUBJECT_APPROVAL_REQUESTS, "person-42", "iss")) == 1
            assert len(await conn.fetch(SUBJECT_DECISIONS, "approver-person-42", None)) == 1
            acted = await conn.fetch(SUBJECT_ADMIN_ACTIONS, "admin-7", "iss")
            assert [r["role"] for r in acted] == ["actor"]
        finally:
            await tx.rollback()
    finally:
        await conn.close()
