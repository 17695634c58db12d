"""The signing policy and the kill switch through the batch API (issue 7 items 1 and 3): real
IdP tokens (a dev IdP with the policy clients), the real HSM and PostgreSQL; what is signed
is checked by OpenSSL; refusals and admin actions are log entries `qes audit verify` accepts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.integration.api.policy_support import CLIENTS, policy_text, post_sign, token
from tests.support.idp import DEMO_PASSWORDS, FakeClock, RunningIdp, start_idp
from tests.support.pdfs import multi_page_pdf
from tests.support.service import (
    DEV_CONFIG,
    ROOT,
    SignerProcess,
    api_headers,
    free_port,
    service_env,
)
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_verify_chain, openssl_verify_signature

POLICY_ROLES = '["qes-admin", "treasury", "treasurer", "seal-approvers", "qes-auditor"]'


@pytest.fixture(scope="module")
def policy_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIdp]:
    with start_idp(tmp_path_factory.mktemp("policy-idp"), clients=CLIENTS) as running:
        yield running


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory, policy_idp: RunningIdp) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(policy_text(policy_idp.issuer))
    return path


@pytest.fixture(scope="module")
def policy_env(
    softhsm_token: SoftHsmToken,
    database_url: str,
    policy_idp: RunningIdp,
    policy_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    return service_env(
        token=softhsm_token,
        database_url=database_url,
        idp=policy_idp,
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("policy-data"),
        QES__POLICY__FILE=f'"{policy_file}"',
        QES__POLICY__RELOAD_SECONDS="0.2",
        # the roles and groups the policy file matches, granted by the test IdP (issue 18)
        QES__ISSUERS__DEMO_ORGANISATIONS__GRANTS_ROLES=POLICY_ROLES,
        QES__ISSUERS__DEMO_PEOPLE__GRANTS_ROLES=POLICY_ROLES,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def pclient(
    aiohttp_client: Any, policy_env: dict[str, str], ca_ready: None, clock: FakeClock
) -> AsyncIterator[TestClient]:
    from signer.app import create_app
    from signer.http.kit.state import SERVICES
    from signer.settings.config import load_settings

    app = create_app(load_settings(DEV_CONFIG, env=policy_env), clock=clock)
    client: TestClient = await aiohttp_client(app)
    yield client
    services = app[SERVICES]
    leftover = await services.hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
    assert leftover == []
    assert services.hsm.live_ephemeral_keys() == 0


def slug(body: dict[str, Any]) -> str:
    return str(body["type"]).removeprefix("/problems/")


async def refusals(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM log_entries WHERE kind='refusal'")
        return count
    finally:
        await conn.close()


def qes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer", *args, "--config", str(DEV_CONFIG)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        check=False,
        timeout=120,
    )


# ------------------------------------------------------------------ rule kinds


async def test_group_rule_decides_profiles_and_levels(
    pclient: TestClient, policy_idp: RunningIdp, tmp_path: Path
) -> None:
    bearer = await token(policy_idp, "pol-treasury")
    data = b"treasury payment order 4711\n"
    digest = hashlib.sha256(data).digest()
    resp = await pclient.post(
        "/api/v1/signatures",
        json={
            "hash_algorithm": "sha256",
            "hashes": [base64.b64encode(digest).decode()],
            "profile": "advanced",
        },
        headers=api_headers(bearer),
    )
    body = await resp.json()
    assert resp.status == 201, body
    certs = x509.load_pem_x509_certificates(body["chain"].encode())
    paths = []
    for name, cert in zip(("leaf", "issuing", "root"), certs, strict=True):
        (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(Encoding.PEM))
        paths.append(tmp_path / f"{name}.pem")
    openssl_verify_chain(paths[2], paths[1], paths[0])
    (tmp_path / "doc").write_bytes(data)
    (tmp_path / "doc.sig").write_bytes(base64.b64decode(body["signatures"][0]))
    done = openssl_verify_signature(paths[0], tmp_path / "doc.sig", tmp_path / "doc", "sha256")
    assert done.returncode == 0 and "Verified OK" in done.stdout
    # the rule allows profiles advanced+qualified but only the advanced level
    status, body, _ = await post_sign(pclient, bearer, profile="qualified")
    assert (status, slug(body)) == (403, "policy-level-not-allowed")
    status, body, _ = await post_sign(pclient, bearer)  # default profile qes
    assert (status, slug(body)) == (403, "policy-profile-not-allowed")


async def test_role_rule(pclient: TestClient, policy_idp: RunningIdp) -> None:
    bearer = await token(policy_idp, "pol-admin")  # roles: qes-admin -> rule "admins"
    status, body, _ = await post_sign(pclient, bearer, profile="advanced")
    assert status == 201, body
    status, body, _ = await post_sign(pclient, bearer, profile="qualified")
    assert (status, slug(body)) == (403, "policy-profile-not-allowed")


async def test_subject_rule_and_no_matching_rule_refuse(
    pclient: TestClient, policy_idp: RunningIdp, database_url: str
) -> None:
    before = await refusals(database_url)
    status, body, _ = await post_sign(pclient, await token(policy_idp, "pol-denied"))
    assert (status, slug(body)) == (403, "policy-denied")
    assert body["title"] == "The signing policy does not allow this request"
    status, body, _ = await post_sign(pclient, await token(policy_idp, "pol-nomatch"))
    assert (status, slug(body)) == (403, "policy-denied")
    assert await refusals(database_url) == before + 2  # both are refusal entries


async def test_client_and_issuer_rule(pclient: TestClient, policy_idp: RunningIdp) -> None:
    bearer = await token(policy_idp, "pol-victim")  # rule "workloads": issuer + client
    status, body, _ = await post_sign(pclient, bearer)
    assert status == 201, body


async def test_email_domain_rule_and_levels(pclient: TestClient, policy_idp: RunningIdp) -> None:
    alice = await policy_idp.user_token("alice", DEMO_PASSWORDS["alice"], "demo-web")
    status, body, _ = await post_sign(pclient, alice, profile="advanced")
    assert status == 201, body
    status, body, _ = await post_sign(pclient, alice)  # default qes: level not allowed
    assert (status, slug(body)) == (403, "policy-level-not-allowed")


async def test_acr_rule(pclient: TestClient, policy_idp: RunningIdp) -> None:
    status, body, _ = await post_sign(pclient, await token(policy_idp, "pol-acr"))
    assert (status, slug(body)) == (403, "policy-acr-required")


async def test_max_digests_rule(pclient: TestClient, policy_idp: RunningIdp) -> None:
    bearer = await token(policy_idp, "pol-digests")
    status, body, _ = await post_sign(pclient, bearer, n=2)
    assert status == 201 and len(body["signatures"]) == 2
    status, body, _ = await post_sign(pclient, bearer, n=3)
    assert (status, slug(body)) == (403, "policy-too-many-digests")


async def test_a_request_the_client_fixes_signs_with_the_same_token(
    pclient: TestClient, policy_idp: RunningIdp
) -> None:
    """Issue 17: too many digests for the rule (403) spends no jti; the same token signs the
    corrected request, once."""
    bearer = await token(policy_idp, "pol-digests")
    status, body, _ = await post_sign(pclient, bearer, n=3, operation=False)
    assert (status, slug(body)) == (403, "policy-too-many-digests")
    status, body, _ = await post_sign(pclient, bearer, n=2, operation=False)
    assert status == 201, body
    status, body, _ = await post_sign(pclient, bearer, operation=False)
    assert (status, slug(body)) == (401, "token-replayed")


async def test_approval_rule_is_not_signed_without_approval(
    pclient: TestClient, policy_idp: RunningIdp
) -> None:
    """The batch API holds it for the rule's approvers (http.approvals): 202, no signature."""
    status, body, headers = await post_sign(pclient, await token(policy_idp, "pol-approve"))
    assert (status, body["status"]) == (202, "pending"), body
    assert body["approval"]["group"] == "treasurers" and "signatures" not in body
    assert headers["Location"] == body["status_url"]


async def test_per_minute_limit_429_with_retry_after(
    pclient: TestClient, policy_idp: RunningIdp, clock: FakeClock
) -> None:
    # The service's clock is not moved forward here: records dated in the future would
    # outlive other modules' retention tests on the shared database. The window's reset is
    # checked on the store (tests/integration/storage/test_rate_windows.py).
    await until_early_in_a_minute(clock)  # the three requests fall in one minute window
    bearer = await token(policy_idp, "pol-minute")
    for _ in range(2):
        status, body, _ = await post_sign(pclient, bearer)
        assert status == 201, body
    status, body, headers = await post_sign(pclient, bearer)
    assert (status, slug(body)) == (429, "rate-limited")
    now = clock()
    expected = math.ceil(60 - now.second - now.microsecond / 1e6)
    retry = int(headers["Retry-After"])
    assert expected - 2 <= retry <= expected + 1, (retry, expected)


async def until_early_in_a_minute(clock: FakeClock, latest: int = 45) -> None:
    """Wait (real time, at most 15 s) until the clock's second is below ``latest``."""
    now = clock()
    if now.second >= latest:
        await asyncio.sleep(60.05 - now.second - now.microsecond / 1e6)


async def test_per_day_limit_429_with_retry_after(
    pclient: TestClient, policy_idp: RunningIdp, clock: FakeClock, database_url: str
) -> None:
    bearer = await token(policy_idp, "pol-day")
    for _ in range(3):
        status, body, _ = await post_sign(pclient, bearer)
        assert status == 201, body
    status, body, headers = await post_sign(pclient, bearer)
    assert (status, slug(body)) == (429, "rate-limited")
    now = clock()
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    expected = (midnight - now).total_seconds()
    assert expected - 3 <= int(headers["Retry-After"]) <= expected + 1
    # refused requests count nothing: the day window still holds exactly the three signed
    assert (await post_sign(pclient, bearer))[0] == 429
    conn = await asyncpg.connect(database_url)
    try:
        counts = await conn.fetch(
            "SELECT span, count FROM policy_rate_windows WHERE token_subject = 'pol-day'"
        )
    finally:
        await conn.close()
    assert dict((r["span"], r["count"]) for r in counts) == {"minute": 3, "day": 3}


# ------------------------------------------------------------------ a refusal spends no jti


async def test_a_refused_request_leaves_its_token_for_the_retry(
    pclient: TestClient, policy_idp: RunningIdp
) -> None:
    """Issue 17: without an Idempotency-Key the token's jti is the operation, and a request
    the policy (403) or the rate limit (429) refuses signs nothing, so it spends no jti: the
    same token signs once the policy allows. A token still signs only once."""
    root = await token(policy_idp, "pol-admin")
    bearer = await token(policy_idp, "pol-retry")  # rule "retry-bots": 2 a day
    ident = {"scope": "identity", "issuer": policy_idp.issuer, "subject": "pol-retry"}
    assert (await admin(pclient, root, "/api/v1/admin/suspensions", ident))[0] == 201
    try:
        status, body, _ = await post_sign(pclient, bearer, operation=False)
        assert (status, slug(body)) == (403, "suspended")
    finally:
        assert (await admin(pclient, root, "/api/v1/admin/suspensions/resume", ident))[0] == 200
    status, body, _ = await post_sign(pclient, bearer, operation=False)
    assert status == 201, body
    status, body, _ = await post_sign(pclient, bearer, operation=False)
    assert (status, slug(body)) == (401, "token-replayed")
    # The replay was counted (the count comes before the jti: a refused count spends none),
    # so the day's two are used; a fresh token is refused 429 and stays unspent: 429 again.
    fresh = await token(policy_idp, "pol-retry")
    for _ in range(2):
        status, body, headers = await post_sign(pclient, fresh, operation=False)
        assert (status, slug(body)) == (429, "rate-limited"), body
        assert int(headers["Retry-After"]) > 0


async def test_refusals_and_pdf_upload_are_enforced_too(
    pclient: TestClient, policy_idp: RunningIdp
) -> None:
    resp = await pclient.post(
        "/api/v1/signatures/pdf",
        data=multi_page_pdf(1),
        headers={
            **api_headers(await token(policy_idp, "pol-denied")),
            "Content-Type": "application/pdf",
        },
    )
    assert resp.status == 403
    assert slug(await resp.json()) == "policy-denied"


# ------------------------------------------------------------------ reload


async def test_reload_without_restart_and_a_bad_file_keeps_the_old_policy(
    pclient: TestClient, policy_idp: RunningIdp, policy_file: Path
) -> None:
    original = policy_file.read_text()
    bearer = await token(policy_idp, "pol-nomatch")
    root = await token(policy_idp, "pol-admin")

    async def in_force() -> dict[str, Any]:
        status, body = await admin(pclient, root, "/api/v1/admin/policy")
        assert status == 200, body
        return dict(body)

    first = await in_force()
    assert first["sha256"] == hashlib.sha256(original.encode()).hexdigest()
    assert first["rejected"] is None and "workloads" in first["rules"]
    try:
        edited = original.replace('"demo-batch", "pol-victim"', '"pol-nomatch"')
        policy_file.write_text(edited)
        deadline = time.monotonic() + 5
        while True:
            status, body, _ = await post_sign(pclient, bearer)
            if status == 201 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert status == 201, body  # the new rule set is in force, no restart
        assert (await in_force())["sha256"] == hashlib.sha256(edited.encode()).hexdigest()
        # a broken file (semantic error) is refused: the rule set in force stays
        broken = original.replace("max_digests = 2", 'max_digests = "two"')
        policy_file.write_text(broken)
        await asyncio.sleep(1.0)
        status, body, _ = await post_sign(pclient, bearer)
        assert status == 201, body
        line = broken.splitlines().index('max_digests = "two"') + 1
        now = await in_force()
        assert now["sha256"] == hashlib.sha256(edited.encode()).hexdigest()
        assert now["rejected"] == (
            f"line {line}: max_digests must be an integer between 1 and 100000"
        )
        # and a syntax error too
        policy_file.write_text(original + "\n[[rule]\n")
        await asyncio.sleep(1.0)
        status, body, _ = await post_sign(pclient, bearer)
        assert status == 201, body
        assert str((await in_force())["rejected"]).startswith(
            f"line {len(original.splitlines()) + 2}: "
        )
    finally:
        policy_file.write_text(original)
        await asyncio.sleep(1.0)
    status, body, _ = await post_sign(pclient, bearer)
    assert (status, slug(body)) == (403, "policy-denied")
    assert (await in_force())["rejected"] is None


def test_bad_policy_file_stops_the_start_naming_the_line(
    policy_env: dict[str, str], tmp_path: Path, ca_ready: None
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "x"\n\nrate_limit = { per_minute = 0 }\n')
    check = subprocess.run(
        [sys.executable, "-m", "signer", "policy", "check", str(bad)],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=60,
    )  # fmt: skip
    assert check.returncode == 1
    assert check.stderr.strip() == (
        f"qes: {bad}: line 4: per_minute must be an integer between 1 and 10000000"
    )
    port = free_port()
    env = {**policy_env, "QES__POLICY__FILE": f'"{bad}"', "QES__SERVER__PORT": str(port)}
    with pytest.raises(RuntimeError, match=r"line 4: per_minute must be an integer"):
        SignerProcess(env, port, tmp_path / "serve.log").start()


# ------------------------------------------------------------------ kill switch (one process)


async def admin(client: TestClient, bearer: str, path: str, body: Any | None = None) -> Any:
    if body is None:
        resp = await client.get(path, headers=api_headers(bearer))
    else:
        resp = await client.post(path, json=body, headers=api_headers(bearer))
    return resp.status, await resp.json()


async def test_admin_api_suspends_and_resumes_identity_client_and_all(
    pclient: TestClient, policy_idp: RunningIdp, policy_env: dict[str, str], database_url: str
) -> None:
    root = await token(policy_idp, "pol-admin")
    victim = await token(policy_idp, "pol-victim")
    batch = await policy_idp.client_token("demo-batch", "demo-only-batch-secret-not-for-production")
    url = "/api/v1/admin/suspensions"
    # only the admin role may
    status, body = await admin(pclient, victim, url, {"scope": "all"})
    assert (status, slug(body)) == (403, "admin-role-required")
    status, body = await admin(pclient, root, url, {"scope": "client"})
    assert (status, slug(body)) == (422, "invalid-request")

    typo = {"scope": "identity", "issuer": "https://idp.example.org", "subject": "pol-victim"}
    status, body = await admin(pclient, root, url, typo)
    assert (status, slug(body)) == (422, "unknown-issuer")
    ident = {"scope": "identity", "issuer": policy_idp.issuer, "subject": "pol-victim"}
    status, body = await admin(pclient, root, url, {**ident, "reason": "key compromise drill"})
    assert status == 201 and body["changed"], body
    status, body = await admin(pclient, root, url, ident)  # again: nothing changes
    assert status == 200 and not body["changed"]
    status, body, _ = await post_sign(pclient, victim)
    assert (status, slug(body)) == (403, "suspended")
    assert (await post_sign(pclient, batch))[0] == 201  # someone else still signs
    status, body = await admin(pclient, root, url)
    assert [s["subject"] for s in body["suspensions"]] == ["pol-victim"]
    assert body["suspensions"][0]["reason"] == "key compromise drill"
    status, body = await admin(pclient, root, f"{url}/resume", ident)
    assert status == 200, body
    assert (await post_sign(pclient, victim))[0] == 201
    status, body = await admin(pclient, root, f"{url}/resume", ident)
    assert (status, slug(body)) == (404, "not-suspended")

    client = {"scope": "client", "client_id": "demo-batch"}
    assert (await admin(pclient, root, url, client))[0] == 201
    assert slug((await post_sign(pclient, batch))[1]) == "suspended"
    assert (await post_sign(pclient, victim))[0] == 201
    assert (await admin(pclient, root, f"{url}/resume", client))[0] == 200
    assert (await post_sign(pclient, batch))[0] == 201

    assert (await admin(pclient, root, url, {"scope": "all", "reason": "incident 42"}))[0] == 201
    for bearer in (batch, victim):
        assert slug((await post_sign(pclient, bearer))[1]) == "suspended"
    # ... and the built-in TSA, whose key is the signer's too (RFC 3161 over HTTP, §3.4)
    query = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": bytes(32),
            },
            "cert_req": True,
        }
    ).dump()
    tsa_headers = {"Content-Type": "application/timestamp-query"}
    resp = await pclient.post("/tsa", data=query, headers=tsa_headers)
    assert (resp.status, slug(await resp.json())) == (403, "suspended")
    stamp = {"hash": base64.b64encode(bytes(32)).decode(), "hashAlgo": "2.16.840.1.101.3.4.2.1"}
    resp = await pclient.post(
        "/csc/v1/signatures/timestamp", json=stamp, headers=api_headers(batch)
    )
    assert (resp.status, (await resp.json())["error"]) == (400, "access_denied")
    assert (await admin(pclient, root, f"{url}/resume", {"scope": "all"}))[0] == 200
    resp = await pclient.post(
        "/csc/v1/signatures/timestamp", json=stamp, headers=api_headers(batch)
    )
    assert resp.status == 200 and "timestamp" in await resp.json()
    assert (await post_sign(pclient, victim))[0] == 201
    resp = await pclient.post("/tsa", data=query, headers=tsa_headers)
    assert resp.status == 200 and resp.content_type == "application/timestamp-reply"

    conn = await asyncpg.connect(database_url)
    try:
        kinds = await conn.fetch("SELECT action, scope FROM admin_actions ORDER BY acted_at")
    finally:
        await conn.close()
    assert [tuple(r) for r in kinds][-6:] == [
        ("suspend", "identity"), ("resume", "identity"), ("suspend", "client"),
        ("resume", "client"), ("suspend", "all"), ("resume", "all"),
    ]  # fmt: skip
    # the log, refusals and admin actions included, verifies (checkpoint over all of it)
    auditor = await policy_idp.client_token(
        "demo-auditor", "demo-only-auditor-secret-not-for-production"
    )
    resp = await pclient.post("/api/v1/log/checkpoints", headers=api_headers(auditor))
    assert resp.status in (200, 201), await resp.text()
    done = qes(policy_env, "audit", "verify", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("log verified")
    # auditors find the admin actions about an identity through the keyed commitments
    found: list[dict[str, Any]] = []
    start = 0
    while True:
        resp = await pclient.get(
            "/api/v1/log/entries",
            params={"from": start, "limit": 1000, "subject": "pol-victim"},
            headers=api_headers(auditor),
        )
        page = await resp.json()
        assert resp.status == 200, page
        found += page["items"]
        if page["next"] >= page["tree_size"]:
            break
        start = page["next"]
    admin_entries = [(e["outcome"], e["reason"]) for e in found if e["kind"] == "admin"]
    assert admin_entries[-2:] == [("suspend", "identity"), ("resume", "identity")]
    refused = [e for e in found if e["kind"] == "refusal" and e["reason"] == "suspended"]
    assert refused and all(e["subject"] == "pol-victim" for e in refused)


async def test_audit_verify_catches_an_altered_admin_action(
    pclient: TestClient, policy_idp: RunningIdp, policy_env: dict[str, str], database_url: str
) -> None:
    done = qes(policy_env, "suspend", "client", "nobody-uses-this", "--reason", "drill")
    assert done.returncode == 0, done.stderr
    done = qes(policy_env, "resume", "client", "nobody-uses-this")
    assert done.returncode == 0, done.stderr
    auditor = await policy_idp.client_token(
        "demo-auditor", "demo-only-auditor-secret-not-for-production"
    )
    resp = await pclient.post("/api/v1/log/checkpoints", headers=api_headers(auditor))
    assert resp.status in (200, 201)
    conn = await asyncpg.connect(database_url)
    try:
        action_id = await conn.fetchval(
            "SELECT id FROM admin_actions WHERE client_id = 'nobody-uses-this'"
            " AND action = 'suspend'"
        )
        await conn.execute("UPDATE admin_actions SET reason = 'altered' WHERE id = $1", action_id)
        try:
            bad = qes(policy_env, "audit", "verify", "-q")
        finally:
            await conn.execute("UPDATE admin_actions SET reason = 'drill' WHERE id = $1", action_id)
    finally:
        await conn.close()
    assert bad.returncode == 1
    assert f"does not match admin action {action_id} (field reason differs)" in bad.stderr
    assert qes(policy_env, "audit", "verify", "-q").returncode == 0


def test_cli_suspend_list_resume(policy_env: dict[str, str], policy_idp: RunningIdp) -> None:
    iss = policy_idp.issuer
    done = qes(policy_env, "suspend", "identity", iss, "cli-person", "--reason", "left the bank")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(f"suspended: identity {iss} cli-person (logged")
    again = qes(policy_env, "suspend", "identity", iss, "cli-person")
    assert again.stdout.strip() == f"already suspended: identity {iss} cli-person"
    listed = qes(policy_env, "suspensions")
    assert "identity" in listed.stdout and "cli-person" in listed.stdout
    assert "left the bank" in listed.stdout
    assert qes(policy_env, "resume", "identity", iss, "cli-person").returncode == 0
    gone = qes(policy_env, "resume", "identity", iss, "cli-person")
    assert gone.returncode == 1
    assert gone.stderr.strip() == f"qes: identity {iss} cli-person is not suspended"
    assert "cli-person" not in qes(policy_env, "suspensions").stdout
    # the issuer by its configured name works; a typo suspends no one and says why
    by_name = qes(policy_env, "suspend", "identity", "demo_people", "cli-person")
    assert by_name.stdout.strip().startswith(f"suspended: identity {iss} cli-person")
    assert qes(policy_env, "resume", "identity", iss, "cli-person").returncode == 0
    typo = qes(policy_env, "suspend", "identity", "https://idp.example.org", "cli-person")
    assert typo.returncode == 1
    assert typo.stderr.startswith("qes: issuer 'https://idp.example.org' is not configured")
    assert len(typo.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ kill switch (two replicas)


@pytest.fixture(scope="module")
def replicas(
    policy_env: dict[str, str], ca_ready: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SignerProcess, SignerProcess]]:
    work = tmp_path_factory.mktemp("policy-replicas")
    procs = []
    try:
        for name in ("a", "b"):
            port = free_port()
            env = {
                **policy_env,
                "QES__SERVER__PORT": str(port),
                "QES__SERVER__PUBLIC_URL": f"http://127.0.0.1:{port}",
                "QES__POLICY__RELOAD_SECONDS": "1.0",  # the default: NOTIFY must beat the poll
            }
            procs.append(SignerProcess(env, port, work / f"{name}.log").start())
        yield procs[0], procs[1]
    finally:
        for proc in procs:
            proc.stop()


async def _until(
    http: aiohttp.ClientSession, url: str, bearer: str, want: int, start: float
) -> float:
    """Sign on ``url`` until the status is ``want``; seconds since ``start`` when it was."""
    body = {"hash_algorithm": "sha256", "hashes": [base64.b64encode(os.urandom(32)).decode()]}
    while time.monotonic() - start < 10:
        async with http.post(
            f"{url}/api/v1/signatures", json=body, headers=api_headers(bearer)
        ) as resp:
            if resp.status == want:
                if want == 403:
                    assert slug(await resp.json()) == "suspended"
                return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url} never answered {want}")


async def test_suspend_identity_reaches_every_replica_within_a_second(
    replicas: tuple[SignerProcess, SignerProcess],
    policy_idp: RunningIdp,
    policy_env: dict[str, str],
) -> None:
    a, b = replicas
    victim = await token(policy_idp, "pol-victim")
    root = await token(policy_idp, "pol-admin")
    async with aiohttp.ClientSession() as http:
        for proc in (a, b):
            assert await _until(http, proc.url, victim, 201, time.monotonic()) < 10
        # suspend through the operator's CLI (a third process): committed when it exits
        done = await asyncio.to_thread(
            qes, policy_env, "suspend", "identity", policy_idp.issuer, "pol-victim"
        )
        assert done.returncode == 0, done.stderr
        start = time.monotonic()
        took = await asyncio.gather(*(_until(http, p.url, victim, 403, start) for p in (a, b)))
        print(f"suspend reached replicas A, B after {took[0]:.3f} s, {took[1]:.3f} s")
        assert max(took) < 1.0, took
        # resume through replica A's admin API: B follows within a second as well
        ident = {"scope": "identity", "issuer": policy_idp.issuer, "subject": "pol-victim"}
        async with http.post(
            f"{a.url}/api/v1/admin/suspensions/resume", json=ident, headers=api_headers(root)
        ) as resp:
            assert resp.status == 200, await resp.text()
        start = time.monotonic()
        took = await asyncio.gather(*(_until(http, p.url, victim, 201, start) for p in (a, b)))
        print(f"resume reached replicas A, B after {took[0]:.3f} s, {took[1]:.3f} s")
        assert max(took) < 1.0, took


async def test_openapi_and_problem_pages_document_policy_and_kill_switch(
    pclient: TestClient,
) -> None:
    doc = await (await pclient.get("/openapi.json")).json()
    responses = doc["paths"]["/api/v1/signatures"]["post"]["responses"]
    assert "/problems/rate-limited" in responses["429"]["description"]
    assert "/problems/suspended" in responses["403"]["description"]
    assert {"get", "post"} <= set(doc["paths"]["/api/v1/admin/suspensions"])
    assert "post" in doc["paths"]["/api/v1/admin/suspensions/resume"]
    for kind in ("suspended", "rate-limited", "policy-denied", "policy-acr-required"):
        assert (await pclient.get(f"/problems/{kind}")).status == 200, kind


# ------------------------------------------------------------------ CSC API


async def csc(client: TestClient, method: str, bearer: str, body: dict[str, Any]) -> Any:
    resp = await client.post(f"/csc/v1/{method}", json=body, headers=api_headers(bearer))
    return resp.status, await resp.json(), resp.headers


async def test_csc_api_is_under_the_policy_and_the_kill_switch(
    pclient: TestClient, policy_idp: RunningIdp, clock: FakeClock, database_url: str
) -> None:
    await until_early_in_a_minute(clock)  # the credentials/list calls fall in one window
    status, body, _ = await csc(
        pclient, "credentials/list", await token(policy_idp, "pol-denied"), {}
    )
    assert (status, body["error"]) == (400, "access_denied")
    assert body["error_description"] == "The signing policy does not allow this request"

    bearer = await token(policy_idp, "pol-csc")
    root = await token(policy_idp, "pol-admin")
    status, body, _ = await csc(pclient, "credentials/list", bearer, {})
    assert status == 200, body
    (credential,) = body["credentialIDs"]
    digests = [hashlib.sha256(b"csc %d" % i).digest() for i in range(3)]

    def authorize(n: int) -> dict[str, Any]:
        return {
            "credentialID": credential,
            "numSignatures": n,
            "hash": [base64.b64encode(d).decode() for d in digests[:n]],
        }

    status, body, _ = await csc(pclient, "credentials/authorize", bearer, authorize(3))
    assert (status, body["error"]) == (400, "access_denied")  # the rule's max_digests is 2
    assert body["error_description"] == "The signing policy allows fewer digests per request"
    status, body, _ = await csc(pclient, "credentials/authorize", bearer, authorize(2))
    assert status == 200, body
    sad = body["SAD"]
    # suspended after the SAD was issued: signHash signs nothing
    ident = {"scope": "identity", "issuer": policy_idp.issuer, "subject": "pol-csc"}
    assert (await admin(pclient, root, "/api/v1/admin/suspensions", ident))[0] == 201
    try:
        sign = {
            "credentialID": credential,
            "SAD": sad,
            "hashAlgo": "2.16.840.1.101.3.4.2.1",
            "signAlgo": "1.2.840.10045.4.3.2",
            "hash": authorize(2)["hash"],
        }
        status, body, _ = await csc(pclient, "signatures/signHash", bearer, sign)
        assert (status, body["error"]) == (400, "access_denied")
        assert "suspended" in body["error_description"]
        # a new credential is a new signing operation: a token (jti) each
        fresh = await token(policy_idp, "pol-csc")
        status, body, _ = await csc(pclient, "credentials/list", fresh, {})
        assert (status, body["error"]) == (400, "access_denied")
    finally:
        assert (await admin(pclient, root, "/api/v1/admin/suspensions/resume", ident))[0] == 200
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT r.status, r.signed_count, r.failure, r.destruction FROM csc_credentials c"
            " JOIN signing_records r ON r.id = c.record_id WHERE c.id = $1",
            credential,
        )
    finally:
        await conn.close()
    assert row is not None and (row["status"], row["failure"]) == ("failed", "suspended")
    assert not row["signed_count"] and row["destruction"] is not None  # key destroyed now
    # the rule's rate limit counts credentials (one key and certificate each, made by the
    # first credentials/info; list only reserves the ID); each is its token's one operation
    for expected in (200, 200, 429):
        fresh = await token(policy_idp, "pol-csc")
        status, body, _ = await csc(pclient, "credentials/list", fresh, {})
        assert status == 200, body
        asked = {"credentialID": body["credentialIDs"][0]}
        status, body, headers = await csc(pclient, "credentials/info", fresh, asked)
        assert status == expected, body
    assert 1 <= int(headers["Retry-After"]) <= 60
    # the refused credential made nothing and spent no jti: the retry is refused 429 again
    status, body, _ = await csc(pclient, "credentials/info", fresh, asked)
    assert (status, body["error"]) == (429, "access_denied"), body
    # the unused credentials (the suspended one included) expire; the sweeper destroys keys
    from signer.http.csc.api import CSC

    clock.advance(575)  # past the certificates (600 s less the 30 s backdate)
    await pclient.server.app[CSC].sweep()  # the background sweeper may have been first
    assert await pclient.server.app[CSC].sweep() == 0


async def test_a_refused_credential_leaves_its_token_for_the_retry(
    pclient: TestClient, policy_idp: RunningIdp
) -> None:
    """Issue 17 on the CSC API: a credential is a signing operation; one the kill switch
    refuses makes no key and spends no jti, so the same token makes it after the resume,
    signs with it (signHash: the SAD, not the jti), and cannot make a second one."""
    root = await token(policy_idp, "pol-admin")
    bearer = await token(policy_idp, "pol-csc-retry")
    status, body, _ = await csc(pclient, "credentials/list", bearer, {})
    assert status == 200, body
    (credential,) = body["credentialIDs"]
    ident = {"scope": "identity", "issuer": policy_idp.issuer, "subject": "pol-csc-retry"}
    assert (await admin(pclient, root, "/api/v1/admin/suspensions", ident))[0] == 201
    try:
        status, body, _ = await csc(
            pclient, "credentials/info", bearer, {"credentialID": credential}
        )
        assert (status, body["error"]) == (400, "access_denied"), body
        assert "suspended" in body["error_description"]
    finally:
        assert (await admin(pclient, root, "/api/v1/admin/suspensions/resume", ident))[0] == 200
    status, body, _ = await csc(pclient, "credentials/info", bearer, {"credentialID": credential})
    assert status == 200, body
    digest = [base64.b64encode(hashlib.sha256(b"retried").digest()).decode()]
    asked = {"credentialID": credential, "numSignatures": 1, "hash": digest}
    status, body, _ = await csc(pclient, "credentials/authorize", bearer, asked)
    assert status == 200, body
    sign = {
        "credentialID": credential,
        "SAD": body["SAD"],
        "hashAlgo": "2.16.840.1.101.3.4.2.1",
        "signAlgo": "1.2.840.10045.4.3.2",
        "hash": digest,
    }
    status, body, _ = await csc(pclient, "signatures/signHash", bearer, sign)
    assert status == 200 and len(body["signatures"]) == 1, body
    # a second credential with the same token is a replay: refused, no key made
    status, body, _ = await csc(pclient, "credentials/list", bearer, {})
    assert status == 200, body
    again = {"credentialID": body["credentialIDs"][0]}
    status, body, _ = await csc(pclient, "credentials/info", bearer, again)
    assert (status, body["error"]) == (401, "invalid_token"), body
