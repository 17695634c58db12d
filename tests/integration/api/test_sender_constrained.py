"""Replay and token theft (issue 17 item 7): a ``jti`` starts one signing operation, and DPoP
(RFC 9449) binds a token to its holder's key.

Every DPoP-bound token here comes from the real IdP (oidc-provider, ``features.dPoP``) by the
client-credentials grant with a proof, made by the same code as ``qes sign --token-url``. Each
refusal is problem+json with a stable type, makes no certificate, and is a refusal log entry.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from signer.cli.dpop import DpopKey, fetch_token
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.leaks import record
from tests.support.service import SignerTestServer, assert_hsm_clean

BODY = {
    "hash_algorithm": "sha256",
    "hashes": [base64.b64encode(hashlib.sha256(b"x").digest()).decode()],
}
PATH = "/api/v1/signatures"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def bound_token(idp: RunningIdp, key: DpopKey) -> str:
    """A demo-batch token bound to ``key`` by the IdP (``cnf.jkt``, RFC 9449 §6.1)."""
    token_url = f"{idp.issuer}/token"
    token = await asyncio.to_thread(
        fetch_token, token_url, "demo-batch", DEMO_SECRETS["demo-batch"], key, idp.resource
    )
    return str(record(token))


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Any], settings: Any, ca_ready: None
) -> AsyncIterator[Callable[..., Any]]:
    """A signer whose batch issuer (demo_organisations) has the given settings."""
    from signer.app import create_app

    apps = []

    # every refusal gets its own log entry (no per-address aggregation in these tests)
    log = dataclasses.replace(settings.log, refusals_per_source=100_000)

    async def make(**issuer: Any) -> TestClient:
        orgs = dataclasses.replace(settings.issuers[0], **issuer)
        issuers = (orgs, *settings.issuers[1:])
        app = create_app(dataclasses.replace(settings, issuers=issuers, log=log))
        apps.append(app)
        return await aiohttp_client(SignerTestServer(app))  # type: ignore[no-any-return]

    yield make
    for app in apps:
        await assert_hsm_clean(app)


@pytest.fixture
async def count_records(database_url: str) -> AsyncIterator[Callable[[], Any]]:
    conn = await asyncpg.connect(database_url)

    async def count() -> int:
        return int(await conn.fetchval("SELECT count(*) FROM signing_records"))

    yield count
    await conn.close()


def url(settings: Any, path: str = PATH) -> str:
    return settings.server.public_url.rstrip("/") + path


def dpop_headers(token: str, proof: str | None, **extra: str) -> dict[str, str]:
    headers = {"Authorization": f"DPoP {token}", **extra}
    if proof is not None:
        headers["DPoP"] = proof
    return headers


async def refused(resp: Any, slug: str, count: Callable[[], Any], before: int) -> dict[str, Any]:
    problem = await resp.json(content_type=None)
    assert resp.status == 401, problem
    assert resp.content_type == "application/problem+json"
    assert problem["type"] == f"/problems/{slug}", problem
    assert resp.headers["WWW-Authenticate"].startswith(("DPoP ", "Bearer ")), resp.headers
    assert await count() == before, "a certificate was issued for a refused request"
    return dict(problem)


async def refusal_reasons(database_url: str, since: int) -> list[bytes]:
    """Reasons of the refusal entries appended at or after log index ``since``."""
    from ca.logentry import entry_fields

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT entry FROM log_entries WHERE idx >= $1 AND kind = 'refusal'", since
        )
    finally:
        await conn.close()
    return [dict(entry_fields(bytes(r["entry"]))[1])["reason"] for r in rows]


async def log_size(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT size FROM log_state"))
    finally:
        await conn.close()


async def wait_for_reasons(database_url: str, since: int, wanted: set[bytes]) -> None:
    """The refusal log writes in the background: wait (bounded) for every wanted reason."""
    deadline = time.monotonic() + 20
    while True:
        found = set(await refusal_reasons(database_url, since))
        if wanted <= found or time.monotonic() > deadline:
            assert wanted <= found, f"not logged as refusals: {wanted - found}"
            return
        await asyncio.sleep(0.5)


# ------------------------------------------------------------------ a jti per operation


async def test_a_token_starts_one_signing_operation_but_may_poll_freely(
    make_client: Callable[..., Any], batch_token: str, count_records: Callable[[], Any]
) -> None:
    client = await make_client()  # require_jti is on by default; the IdP puts jti in tokens
    auth = {"Authorization": f"Bearer {batch_token}"}
    first = await client.post(PATH, json=BODY, headers=auth)
    assert first.status == 201, await first.text()
    serial = (await first.json())["serial"]
    # polling and listing spend nothing
    for _ in range(3):
        shown = await client.get("/api/v1/approval-requests", headers=auth)
        assert shown.status == 200, await shown.text()
    before = await count_records()
    again = await client.post(PATH, json=BODY, headers=auth)
    problem = await again.json(content_type=None)
    assert (again.status, problem["type"]) == (401, "/problems/token-replayed")
    assert await count_records() == before
    # an Idempotency-Key names a new operation; the same key replays the stored answer
    keyed = {**auth, "Idempotency-Key": f"chunk-2-{uuid.uuid4()}"}
    second = await client.post(PATH, json=BODY, headers=keyed)
    assert second.status == 201, await second.text()
    replay = await client.post(PATH, json=BODY, headers=keyed)
    assert replay.status == 200 and replay.headers.get("Idempotent-Replayed") == "true"
    assert (await replay.json())["serial"] == (await second.json())["serial"] != serial


async def test_concurrent_replays_start_one_operation(
    make_client: Callable[..., Any], batch_token: str, count_records: Callable[[], Any]
) -> None:
    """One token sent four times at once without an Idempotency-Key: the jti is spent once,
    after admission and before the key is made, so one request signs and three are refused."""
    client = await make_client()
    before = await count_records()
    auth = {"Authorization": f"Bearer {batch_token}"}
    answers = await asyncio.gather(*(client.post(PATH, json=BODY, headers=auth) for _ in range(4)))
    kinds = sorted([[a.status, (await a.json(content_type=None)).get("type", "")] for a in answers])
    assert kinds == [[201, ""]] + [[401, "/problems/token-replayed"]] * 3, kinds
    assert await count_records() == before + 1


async def test_an_issuer_without_jti_in_its_tokens_keeps_working(
    make_client: Callable[..., Any], idp: RunningIdp
) -> None:
    client = await make_client()
    token = idp.mint(jti=None, identity_type="organisation", org_id="NTRDE-HRB12345")
    for _ in range(2):
        resp = await client.post(PATH, json=BODY, headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 201, await resp.text()
    strict = await make_client(require_jti="always")
    resp = await strict.post(PATH, json=BODY, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401
    assert (await resp.json())["type"] == "/problems/invalid-token"


# ------------------------------------------------------------------ DPoP


@dataclasses.dataclass
class Holder:
    """A signer whose batch issuer is marked ``dpop``, and a token the IdP bound to ``key``."""

    client: TestClient
    key: DpopKey
    token: str
    public_url: str

    def proof(self, method: str = "POST", path: str = PATH, **kw: Any) -> str:
        return self.key.proof(method, self.public_url + path, access_token=self.token, **kw)

    async def post(self, proof: str | None, **headers: str) -> Any:
        return await self.client.post(
            PATH, json=BODY, headers=dpop_headers(self.token, proof, **headers)
        )


@pytest.fixture
async def holder(make_client: Callable[..., Any], settings: Any, idp: RunningIdp) -> Holder:
    client = await make_client(sender_constraint="dpop")
    key = DpopKey.generate()
    return Holder(client, key, await bound_token(idp, key), url(settings, ""))


@dataclasses.dataclass
class Refusals:
    """Checks that each refusal is a stable problem, makes no certificate, and is logged."""

    database_url: str
    count: Callable[[], Any]
    since: int
    before: int

    async def check(self, resp: Any, slug: str) -> dict[str, Any]:
        return await refused(resp, slug, self.count, self.before)

    async def logged(self, *reasons: str) -> None:
        await wait_for_reasons(self.database_url, self.since, {r.encode() for r in reasons})


@pytest.fixture
async def refusals(holder: Holder, database_url: str, count_records: Callable[[], Any]) -> Refusals:
    since, before = await log_size(database_url), await count_records()
    return Refusals(database_url, count_records, since, before)


async def test_a_good_proof_signs_and_the_idp_bound_the_token(holder: Holder) -> None:
    assert _claims(holder.token)["cnf"] == {"jkt": holder.key.thumbprint}
    resp = await holder.post(holder.proof())
    assert resp.status == 201, await resp.text()
    # a second operation with a fresh proof and its own Idempotency-Key
    resp = await holder.post(holder.proof(), **{"Idempotency-Key": f"two-{uuid.uuid4()}"})
    assert resp.status == 201, await resp.text()


async def test_a_stolen_token_without_its_key_is_refused(
    holder: Holder, refusals: Refusals, idp: RunningIdp
) -> None:
    client, token = holder.client, holder.token
    # as a plain bearer token
    resp = await client.post(PATH, json=BODY, headers={"Authorization": f"Bearer {token}"})
    await refusals.check(resp, "token-sender-constrained")
    assert resp.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')
    # with a proof made by the thief's own key
    thief = DpopKey.generate().proof("POST", holder.public_url + PATH, access_token=token)
    await refusals.check(await holder.post(thief), "token-binding-mismatch")
    # with no proof at all
    await refusals.check(await holder.post(None), "dpop-proof-invalid")
    # a bearer token of an issuer marked dpop, not bound by the IdP, is refused too
    plain = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    resp = await client.post(PATH, json=BODY, headers={"Authorization": f"Bearer {plain}"})
    await refusals.check(resp, "token-sender-constrained")
    await refusals.logged("token.sender_constrained", "token.binding_mismatch", "dpop.missing")


async def test_a_replayed_proof_is_refused(holder: Holder, refusals: Refusals) -> None:
    proof = holder.proof()
    assert (await holder.post(proof, **{"Idempotency-Key": f"first-{uuid.uuid4()}"})).status == 201
    refusals.before += 1
    resp = await holder.post(proof, **{"Idempotency-Key": f"second-{uuid.uuid4()}"})
    problem = await refusals.check(resp, "dpop-proof-invalid")
    assert problem["detail"] == "The DPoP proof was already used."
    assert 'error="invalid_dpop_proof"' in resp.headers["WWW-Authenticate"]
    await refusals.logged("dpop.replayed")


@pytest.mark.parametrize(
    ("method", "path", "reason"),
    [
        ("POST", "/api/v1/signatures/pdf", "wrong_url"),
        ("GET", PATH, "wrong_method"),
    ],
)
async def test_a_proof_for_another_url_or_method_is_refused(
    holder: Holder, refusals: Refusals, method: str, path: str, reason: str
) -> None:
    await refusals.check(await holder.post(holder.proof(method, path)), "dpop-proof-invalid")
    await refusals.logged(f"dpop.{reason}")


async def test_a_proof_with_an_old_iat_or_for_another_token_is_refused(
    holder: Holder, refusals: Refusals
) -> None:
    old = holder.proof(issued_at=time.time() - 600)
    await refusals.check(await holder.post(old), "dpop-proof-invalid")
    other = holder.key.proof("POST", holder.public_url + PATH, access_token=holder.token + "x")
    await refusals.check(await holder.post(other), "dpop-proof-invalid")
    await refusals.logged("dpop.stale", "dpop.bad_ath")


async def test_a_server_nonce_is_asked_for_and_then_accepted(
    make_client: Callable[..., Any],
    settings: Any,
    idp: RunningIdp,
    count_records: Callable[[], Any],
) -> None:
    """RFC 9449 §9: 401 ``use_dpop_nonce`` with a ``DPoP-Nonce``; the retry with it signs."""
    client = await make_client(sender_constraint="dpop", dpop_nonce=True)
    key = DpopKey.generate()
    token = await bound_token(idp, key)
    proof = key.proof("POST", url(settings), access_token=token)
    resp = await client.post(PATH, json=BODY, headers=dpop_headers(token, proof))
    await refused(resp, "dpop-nonce-required", count_records, await count_records())
    assert resp.headers["WWW-Authenticate"].startswith('DPoP error="use_dpop_nonce"')
    nonce = resp.headers["DPoP-Nonce"]
    proof = key.proof("POST", url(settings), access_token=token, nonce=nonce)
    resp = await client.post(PATH, json=BODY, headers=dpop_headers(token, proof))
    assert resp.status == 201, await resp.text()


async def test_the_csc_api_asks_for_a_nonce_the_same_way(
    make_client: Callable[..., Any],
    settings: Any,
    idp: RunningIdp,
) -> None:
    """RFC 9449 §8/§9 on the CSC API: 401 ``use_dpop_nonce`` (CSC's error body) with
    ``WWW-Authenticate: DPoP error="use_dpop_nonce"`` and a fresh ``DPoP-Nonce``, as the batch
    API answers; the retry with that nonce is served."""
    client = await make_client(sender_constraint="dpop", dpop_nonce=True)
    key = DpopKey.generate()
    token = await bound_token(idp, key)
    path = "/csc/v2/credentials/list"
    proof = key.proof("POST", url(settings, path), access_token=token)
    resp = await client.post(path, json={}, headers=dpop_headers(token, proof))
    body = await resp.json()
    assert (resp.status, body["error"]) == (401, "use_dpop_nonce"), body
    assert resp.headers["WWW-Authenticate"].startswith('DPoP error="use_dpop_nonce"')
    nonce = resp.headers["DPoP-Nonce"]
    proof = key.proof("POST", url(settings, path), access_token=token, nonce=nonce)
    resp = await client.post(path, json={}, headers=dpop_headers(token, proof))
    assert resp.status == 200, await resp.text()
    # a proof for another URL is refused with the DPoP scheme's challenge too (RFC 9449 §7.1)
    proof = key.proof("POST", url(settings), access_token=token, nonce=nonce)
    resp = await client.post(path, json={}, headers=dpop_headers(token, proof))
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith('DPoP error="invalid_dpop_proof"')
