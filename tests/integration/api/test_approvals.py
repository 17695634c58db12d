"""m-of-n approval of batch signatures (issue 7) through the API, with real IdP tokens of the
requester and of three approvers: 202 and a status URL, 2-of-3 approvals bound to the exact
digests, the signature made once and verified by OpenSSL against its chain, the decisions in
the transparency log (``qes audit verify`` recomputes them), the completion webhook, and every
refusal with nothing signed.

The policy is the development policy file (deploy/dev/policy.toml, read by the real
``signer.policy.file``): ``demo-seal-batch`` and the approvers themselves need 2 of
``seal-approvers``; everyone else signs at once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.logentry import EntryKind, entry_fields
from tests.support.approvals import SEAL_CLIENT, commitment
from tests.support.idp import DEMO_PASSWORDS, DEMO_SECRETS, FakeClock, RunningIdp
from tests.support.service import DEV_CONFIG, ROOT, api_headers, free_port

LIFETIME_MINUTES = 2


@pytest.fixture(scope="module")
def approval_env(signer_env: dict[str, str]) -> dict[str, str]:
    return {**signer_env, "QES__APPROVALS__REQUEST_MINUTES": str(LIFETIME_MINUTES)}


@pytest.fixture
async def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Any], approval_env: dict[str, str], ca_ready: None,
    clock: FakeClock,
) -> AsyncIterator[TestClient]:  # fmt: skip
    from signer.app import create_app
    from signer.http.kit.state import SERVICES
    from signer.settings.config import load_settings

    settings = load_settings(DEV_CONFIG, env=approval_env)
    assert settings.policy.file is not None and settings.policy.file.name == "policy.toml"
    app = create_app(settings, clock=clock)
    client: TestClient = await aiohttp_client(app)
    yield client
    services = app[SERVICES]
    leftover = await services.hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
    assert leftover == [], f"session objects left in the HSM after the test: {leftover}"


@pytest.fixture
async def seal_token(idp: RunningIdp) -> str:
    return await idp.client_token(SEAL_CLIENT, DEMO_SECRETS[SEAL_CLIENT])


@pytest.fixture
async def people(idp: RunningIdp) -> dict[str, str]:
    """Bearer tokens of the demo people (authorization code flow at the real IdP)."""
    names = ("alice", "dana", "erik", "fiona")
    tokens = await asyncio.gather(
        *(idp.user_token(n, DEMO_PASSWORDS[n], "demo-web") for n in names)
    )
    return dict(zip(names, tokens, strict=True))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def request_approval(
    api: TestClient, token: str, digests: list[bytes], **extra: Any
) -> dict[str, Any]:
    body = {"hash_algorithm": "sha256", "hashes": [b64(d) for d in digests], **extra}
    resp = await api.post("/api/v1/signatures", json=body, headers=api_headers(token))
    assert resp.status == 202, await resp.text()
    held: dict[str, Any] = await resp.json()
    assert resp.headers["Location"] == held["status_url"]
    return held


async def decide(
    api: TestClient, token: str, held: dict[str, Any], verb: str = "approve", **body: Any
) -> tuple[int, dict[str, Any]]:
    body.setdefault("digest_commitment", held["digest_commitment"])
    resp = await api.post(
        f"/api/v1/approval-requests/{held['id']}/{verb}", json=body, headers=api_headers(token)
    )
    return resp.status, await resp.json()


async def status(api: TestClient, token: str, held: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await api.get(f"/api/v1/approval-requests/{held['id']}", headers=api_headers(token))
    return resp.status, await resp.json()


async def records_of(database_url: str, subject: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM signing_records WHERE token_subject=$1", subject
            )
        )
    finally:
        await conn.close()


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=False, timeout=120,
        cwd=ROOT, env={**os.environ, **(env or {})},
    )  # fmt: skip


def verify_cades_with_openssl(payload: dict[str, Any], documents: list[bytes], tmp: Path) -> None:
    """Each CAdES B-T signature over its document, chain to the root, by OpenSSL."""
    chain = x509.load_pem_x509_certificates(payload["chain"].encode())
    (tmp / "root.pem").write_bytes(chain[-1].public_bytes(Encoding.PEM))
    for n, (doc, sig) in enumerate(zip(documents, payload["signatures"], strict=True)):
        (tmp / f"d{n}").write_bytes(doc)
        (tmp / f"d{n}.p7s").write_bytes(base64.b64decode(sig))
        done = run(
            "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", tmp / f"d{n}.p7s",
            "-content", tmp / f"d{n}", "-CAfile", tmp / "root.pem", "-purpose", "any",
            "-cades", "-out", "/dev/null",
        )  # fmt: skip
        assert done.returncode == 0 and "Verification successful" in done.stderr, done.stderr


class WebhookSink:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(status=204)


@pytest.fixture
async def sink() -> AsyncIterator[tuple[WebhookSink, str]]:
    receiver = WebhookSink()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield receiver, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def test_two_of_three_approval_signs_once_and_logs_every_decision(
    api: TestClient,
    seal_token: str,
    auditor_token: str,
    people: dict[str, str],
    database_url: str,
    approval_env: dict[str, str],
    sink: tuple[WebhookSink, str],
    tmp_path: Path,
) -> None:
    receiver, hook_url = sink
    documents = [b"invoice 2026-0042\n" * 20, os.urandom(3000)]
    digests = [hashlib.sha256(d).digest() for d in documents]
    before = await records_of(database_url, SEAL_CLIENT)
    held = await request_approval(
        api, seal_token, digests, format="cades", labels=["Invoice 42", "Annex"],
        reason="Quarterly invoices, seal needed", webhook_url=hook_url,
    )  # fmt: skip
    assert held["status"] == "pending"
    assert held["approval"] == {
        "group": "seal-approvers", "required": 2, "approvals": 0, "decisions": [],
    }  # fmt: skip
    assert held["digest_commitment"] == commitment(digests)
    assert [d["label"] for d in held["documents"]] == ["Invoice 42", "Annex"]
    assert held["reason"] == "Quarterly invoices, seal needed"
    secret = held["webhook"]["secret"]
    assert await records_of(database_url, SEAL_CLIENT) == before  # nothing signed yet

    # Approvers see it (who asks, what, why); the requester polls: still pending.
    resp = await api.get("/api/v1/approval-requests", headers=api_headers(people["dana"]))
    listed = {r["id"]: r for r in (await resp.json())["requests"]}
    assert held["id"] in listed and listed[held["id"]]["requester"]["subject"] == SEAL_CLIENT
    assert (await status(api, seal_token, held))[1]["status"] == "pending"

    code, after_one = await decide(api, people["dana"], held)
    assert code == 200 and after_one["status"] == "pending"
    assert after_one["approval"]["approvals"] == 1
    assert await records_of(database_url, SEAL_CLIENT) == before

    code, done = await decide(api, people["erik"], held)
    assert code == 200 and done["status"] == "completed", done
    assert await records_of(database_url, SEAL_CLIENT) == before + 1
    # The requester collects: the body of a 201 signing response, plus the approval.
    code, polled = await status(api, seal_token, held)
    assert code == 200 and polled["status"] == "completed"
    for key in ("serial", "signatures", "certificate", "chain", "record_url", "key", "log"):
        assert key in polled, key
    assert polled["key"]["destruction"]["confirmed_absent"] is True
    verify_cades_with_openssl(polled, documents, tmp_path)
    leaf = x509.load_pem_x509_certificate(polled["certificate"].encode())
    assert "Demo Manufacturing GmbH" in leaf.subject.rfc4514_string()  # the requester's name

    # A third approval changes nothing: the request is no longer pending.
    code, problem = await decide(api, people["fiona"], held)
    assert (code, problem["type"]) == (409, "/problems/approval-not-pending")
    assert await records_of(database_url, SEAL_CLIENT) == before + 1

    # Both decisions are log entries over the exact digests.
    conn = await asyncpg.connect(database_url)
    try:
        indexes = [d["log_index"] for d in polled["approval"]["decisions"]]
        rows = await conn.fetch(
            "SELECT kind, entry FROM log_entries WHERE idx = ANY($1::bigint[]) ORDER BY idx",
            indexes,
        )
    finally:
        await conn.close()
    assert [r["kind"] for r in rows] == ["approval", "approval"]
    for row in rows:
        kind, fields = entry_fields(bytes(row["entry"]))
        values = dict(fields)
        assert kind is EntryKind.APPROVAL and values["decision"] == b"approved"
        assert values["digests_sha256"].hex() == commitment(digests)
        assert values["approval_request"] == held["id"].encode()

    # The webhook: HMAC-SHA-256 keyed with HMAC(SHA-256(secret), label), timestamp bound.
    await asyncio.wait_for(receiver.arrived.wait(), 10)
    headers, body = receiver.received[0]
    key = hmac.new(hashlib.sha256(secret.encode()).digest(), b"qes-signer webhook v1",
                   hashlib.sha256).digest()  # fmt: skip
    mac = hmac.new(key, headers["X-Qes-Timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["X-Qes-Signature-256"] == "sha256=" + mac.hexdigest()
    assert body == f'{{"id":"{held["id"]}","status":"completed"}}'.encode()

    # `qes audit verify` recomputes the approval entries from the database.
    resp = await api.post("/api/v1/log/checkpoints", headers=api_headers(auditor_token))
    assert resp.status in (200, 201)
    # Auditors see the decisions; filtering by an approver finds that approver's entry.
    resp = await api.get(
        f"/api/v1/log/entries?from={indexes[0]}&limit=2&subject=dana",
        headers=api_headers(auditor_token),
    )
    (shown,) = (await resp.json())["items"]
    assert (shown["index"], shown["kind"], shown["outcome"]) == (indexes[0], "approval", "approved")
    assert shown["approval_request"] == held["id"] and shown["subject"] == "dana"
    verified = run(sys.executable, "-m", "signer", "audit", "verify", "--config", DEV_CONFIG,
                   env=approval_env)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE approval_decisions SET token_subject='fiona' WHERE log_index=$1", indexes[0]
        )
        tampered = run(sys.executable, "-m", "signer", "audit", "verify", "--config",
                       DEV_CONFIG, env=approval_env)  # fmt: skip
        assert tampered.returncode != 0
        assert f"entry {indexes[0]}" in tampered.stderr + tampered.stdout
        assert "token_subject" in tampered.stderr + tampered.stdout
    finally:
        await conn.execute(
            "UPDATE approval_decisions SET token_subject='dana' WHERE log_index=$1", indexes[0]
        )
        await conn.close()


async def test_refusals_sign_nothing(
    api: TestClient,
    seal_token: str,
    people: dict[str, str],
    database_url: str,
    clock: FakeClock,
) -> None:
    digests = [os.urandom(32), os.urandom(32)]
    held = await request_approval(api, seal_token, digests, reason="refusal checks")
    before = await records_of(database_url, SEAL_CLIENT)

    # A non-member (alice has no seal-approvers role); she cannot even see it.
    code, problem = await decide(api, people["alice"], held)
    assert (code, problem["type"]) == (403, "/problems/approval-not-member")
    assert problem["status"] == 403 and problem["title"] and problem["request_id"]
    assert (await status(api, people["alice"], held))[0] == 404
    # Digests other than those requested.
    other = commitment([digests[1], digests[0]])
    code, problem = await decide(api, people["dana"], held, digest_commitment=other)
    assert (code, problem["type"]) == (409, "/problems/approval-digests-mismatch")
    code, problem = await decide(api, people["dana"], held, digest_commitment="zz")
    assert (code, problem["type"]) == (422, "/problems/invalid-request")
    # A second approval by the same person.
    assert (await decide(api, people["dana"], held))[0] == 200
    code, problem = await decide(api, people["dana"], held)
    assert (code, problem["type"]) == (409, "/problems/approval-already-decided")
    code, problem = await decide(api, people["dana"], held, "deny")
    assert (code, problem["type"]) == (409, "/problems/approval-already-decided")
    # Self-approval: an approver who asks for a signature herself.
    own = await request_approval(api, people["erik"], [os.urandom(32)])
    code, problem = await decide(api, people["erik"], own)
    assert (code, problem["type"]) == (403, "/problems/approval-self")
    # After expiry.
    clock.advance(LIFETIME_MINUTES * 60 + 1)
    code, problem = await decide(api, people["erik"], held)
    assert (code, problem["type"]) == (410, "/problems/approval-expired")
    code, expired = await status(api, seal_token, held)
    assert code == 200 and expired["status"] == "expired"
    assert expired["approval"]["approvals"] == 1
    assert await records_of(database_url, SEAL_CLIENT) == before
    assert await records_of(database_url, "erik") == 0


async def test_one_denial_ends_the_request(
    api: TestClient, seal_token: str, people: dict[str, str], database_url: str
) -> None:
    held = await request_approval(api, seal_token, [os.urandom(32)])
    before = await records_of(database_url, SEAL_CLIENT)
    assert (await decide(api, people["dana"], held))[0] == 200
    code, denied = await decide(api, people["fiona"], held, "deny")
    assert code == 200 and denied["status"] == "denied"
    assert [d["decision"] for d in denied["approval"]["decisions"]] == ["approved", "denied"]
    code, problem = await decide(api, people["erik"], held)
    assert (code, problem["type"]) == (409, "/problems/approval-not-pending")
    assert (await status(api, seal_token, held))[1]["status"] == "denied"
    assert await records_of(database_url, SEAL_CLIENT) == before


async def test_requests_without_a_requirement_are_signed_at_once(
    api: TestClient, people: dict[str, str]
) -> None:
    body = {"hash_algorithm": "sha256", "hashes": [b64(os.urandom(32))], "labels": ["x"]}
    resp = await api.post("/api/v1/signatures", json=body, headers=api_headers(people["alice"]))
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"labels": ["only one"]}, "labels"),
        ({"labels": ["a", ""]}, "labels[1]"),
        ({"reason": "x" * 1001}, "reason"),
        ({"webhook_url": "http://example.com/hook"}, "webhook_url"),
    ],
)
async def test_bad_hold_fields_are_problems(
    api: TestClient, seal_token: str, extra: dict[str, Any], why: str
) -> None:
    body = {"hash_algorithm": "sha256", "hashes": [b64(os.urandom(32))] * 2, **extra}
    resp = await api.post("/api/v1/signatures", json=body, headers=api_headers(seal_token))
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["type"] == "/problems/invalid-request"


async def test_unknown_and_malformed_ids_are_404(
    api: TestClient, seal_token: str, people: dict[str, str]
) -> None:
    resp = await api.get(
        "/api/v1/approval-requests/00000000-0000-4000-8000-000000000000",
        headers=api_headers(seal_token),
    )
    assert resp.status == 404 and (await resp.json())["type"] == "/problems/approval-not-found"
    resp = await api.post(
        "/api/v1/approval-requests/00000000-0000-4000-8000-000000000000/approve",
        json={"digest_commitment": "0" * 64},
        headers=api_headers(people["dana"]),
    )
    assert resp.status == 404


async def test_pdf_upload_is_held_and_the_signed_pdf_collected(
    api: TestClient, seal_token: str, people: dict[str, str], tmp_path: Path
) -> None:
    from tests.support.pdfs import multi_page_pdf

    pdf = multi_page_pdf(2)
    resp = await api.post(
        "/api/v1/signatures/pdf?label=Board%20minutes.pdf&reason=Board%20resolution",
        data=pdf,
        headers={**api_headers(seal_token), "Content-Type": "application/pdf"},
    )
    assert resp.status == 202, await resp.text()
    held = await resp.json()
    assert held["format"] == "pades" and held["documents"][0]["label"] == "Board minutes.pdf"
    assert held["reason"] == "Board resolution" and "document_url" not in held
    document = f"/api/v1/approval-requests/{held['id']}/document.pdf"
    assert (await api.get(document, headers=api_headers(seal_token))).status == 404
    for approver in ("fiona", "dana"):
        code, body = await decide(api, people[approver], held)
        assert code == 200, body
    assert body["status"] == "completed" and body["document_url"].endswith(document)
    resp = await api.get(document, headers=api_headers(seal_token))
    assert resp.status == 200 and resp.content_type == "application/pdf"
    signed = tmp_path / "minutes.signed.pdf"
    signed.write_bytes(await resp.read())
    chain = x509.load_pem_x509_certificates(body["chain"].encode())
    (tmp_path / "root.pem").write_bytes(chain[-1].public_bytes(Encoding.PEM))
    pyhanko = str(Path(sys.executable).parent / "pyhanko")
    done = run(
        pyhanko, "sign", "validate", "--trust", tmp_path / "root.pem", "--trust-replace",
        "--no-revocation-check", "--executive-summary", signed,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith(":VALID"), done.stdout


async def test_a_held_pdf_comes_back_at_the_level_asked(
    api: TestClient, seal_token: str, people: dict[str, str], tmp_path: Path
) -> None:
    """``?level=b-lta`` held for approval: once approved, the PDF has the DSS and a document
    time-stamp (EN 319 142-1 §6.3) and validates from its own content with revocation checking
    on; before this it came back at B-T."""
    from signer.formats.ltv import document_time_stamps
    from tests.support.pdfs import multi_page_pdf

    resp = await api.post(
        "/api/v1/signatures/pdf?level=b-lta&label=Lease.pdf",
        data=multi_page_pdf(2),
        headers={**api_headers(seal_token), "Content-Type": "application/pdf"},
    )
    assert resp.status == 202, await resp.text()
    held = await resp.json()
    for approver in ("fiona", "dana"):
        code, body = await decide(api, people[approver], held)
        assert code == 200, body
    assert body["status"] == "completed", body
    resp = await api.get(
        f"/api/v1/approval-requests/{held['id']}/document.pdf", headers=api_headers(seal_token)
    )
    assert resp.status == 200
    signed = tmp_path / "lease.signed.pdf"
    signed.write_bytes(await resp.read())
    assert len(document_time_stamps(signed.read_bytes())) == 1
    chain = x509.load_pem_x509_certificates(body["chain"].encode())
    (tmp_path / "root.pem").write_bytes(chain[-1].public_bytes(Encoding.PEM))
    pyhanko = str(Path(sys.executable).parent / "pyhanko")
    done = run(
        pyhanko, "sign", "adesverify", "--trust", tmp_path / "root.pem", "--trust-replace",
        "--executive-summary", signed,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith(":VALID"), done.stdout


async def test_idempotency_key_replays_the_held_request(
    api: TestClient, seal_token: str, people: dict[str, str], sink: tuple[WebhookSink, str]
) -> None:
    _, hook_url = sink
    body = {"hash_algorithm": "sha256", "hashes": [b64(os.urandom(32))], "webhook_url": hook_url}
    headers = api_headers(seal_token, **{"Idempotency-Key": f"seal-{os.urandom(4).hex()}"})
    first = await api.post("/api/v1/signatures", json=body, headers=headers)
    assert first.status == 202
    held = await first.json()
    again = await api.post("/api/v1/signatures", json=body, headers=headers)
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    replayed = await again.json()
    assert replayed["id"] == held["id"] and again.headers["Location"] == held["status_url"]
    assert "secret" in held["webhook"] and "secret" not in replayed["webhook"]  # shown once
    resp = await api.get("/api/v1/approval-requests", headers=api_headers(people["dana"]))
    ids = [r["id"] for r in (await resp.json())["requests"]]
    assert ids.count(held["id"]) == 1 and len(ids) == len(set(ids))
    other = await api.post(
        "/api/v1/signatures", json={**body, "hashes": [b64(os.urandom(32))]}, headers=headers
    )
    assert other.status == 422


async def test_kill_switch_stops_holding_and_signing(
    api: TestClient, seal_token: str, people: dict[str, str], database_url: str
) -> None:
    """A suspended client cannot have requests held, and a request held before the suspension
    is not signed when its last approval comes in: it fails with ``suspended``."""
    from signer.http.kit.state import SERVICES
    from signer.storage.policy import Target

    suspensions = api.app[SERVICES].signing.gate.suspensions
    target = Target("client", client_id=SEAL_CLIENT)
    held = await request_approval(api, seal_token, [os.urandom(32)])
    before = await records_of(database_url, SEAL_CLIENT)
    assert (await decide(api, people["dana"], held))[0] == 200
    await suspensions.act("suspend", target, actor_issuer=None, actor_subject="cli:test",
                          request_id="approvals-test")  # fmt: skip
    try:
        body = {"hash_algorithm": "sha256", "hashes": [b64(os.urandom(32))]}
        resp = await api.post("/api/v1/signatures", json=body, headers=api_headers(seal_token))
        assert resp.status == 403 and (await resp.json())["type"] == "/problems/suspended"
        code, failed = await decide(api, people["erik"], held)
        assert code == 200 and (failed["status"], failed["error"]) == ("failed", "suspended")
        assert failed["approval"]["approvals"] == 2  # the approvals stand, in the log too
        assert await records_of(database_url, SEAL_CLIENT) == before
    finally:
        await suspensions.act("resume", target, actor_issuer=None, actor_subject="cli:test",
                              request_id="approvals-test")  # fmt: skip


async def test_expiry_and_denial_reach_the_webhook(
    api: TestClient,
    seal_token: str,
    people: dict[str, str],
    clock: FakeClock,
    sink: tuple[WebhookSink, str],
) -> None:
    receiver, hook_url = sink
    denied = await request_approval(api, seal_token, [os.urandom(32)], webhook_url=hook_url)
    expiring = await request_approval(api, seal_token, [os.urandom(32)], webhook_url=hook_url)
    assert (await decide(api, people["dana"], denied, "deny"))[0] == 200
    clock.advance(LIFETIME_MINUTES * 60 + 1)
    assert (await status(api, seal_token, expiring))[1]["status"] == "expired"
    for _ in range(100):
        if len(receiver.received) >= 2:
            break
        await asyncio.sleep(0.1)
    bodies = sorted(body for _, body in receiver.received)
    assert bodies == sorted(
        f'{{"id":"{held["id"]}","status":"{state}"}}'.encode()
        for held, state in ((denied, "denied"), (expiring, "expired"))
    )
    for _ in range(50):  # the attempt is recorded just after the POST was answered
        code, shown = await status(api, seal_token, expiring)
        if shown["webhook"]["delivered_at"] is not None:
            break
        await asyncio.sleep(0.1)
    assert code == 200 and shown["webhook"]["attempts"] == 1
    assert shown["webhook"]["last_result"] == "HTTP 204" and shown["webhook"]["delivered_at"]


async def test_a_held_request_counts_once_against_the_rate_limit(
    aiohttp_client: Callable[..., Any],
    approval_env: dict[str, str],
    ca_ready: None,
    seal_token: str,
    people: dict[str, str],
    tmp_path: Path,
) -> None:
    """A held request is counted when it is made; its signing after the m-th approval does not
    count it again (with one per minute, the approved request is signed, the next one is 429)."""
    from signer.app import create_app
    from signer.settings.config import load_settings

    policy = (DEV_CONFIG.parent / "policy.toml").read_text()
    marker = 'name = "seal-needs-two-approvers"\n'
    assert marker in policy
    limited = tmp_path / "policy.toml"
    limited.write_text(policy.replace(marker, marker + "rate_limit = { per_minute = 1 }\n"))
    env = {**approval_env, "QES__POLICY__FILE": f'"{limited}"'}
    clock = FakeClock()
    clock.advance(60)  # a minute window no other test of the seal client has counted in
    client: TestClient = await aiohttp_client(
        create_app(load_settings(DEV_CONFIG, env=env), clock=clock)
    )
    digests = [hashlib.sha256(b"rate-limited seal").digest()]
    held = await request_approval(client, seal_token, digests)
    assert (await decide(client, people["dana"], held))[0] == 200
    code, done = await decide(client, people["erik"], held)
    assert code == 200 and done["status"] == "completed", done
    body = {"hash_algorithm": "sha256", "hashes": [b64(d) for d in digests]}
    resp = await client.post("/api/v1/signatures", json=body, headers=api_headers(seal_token))
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
