"""The relying-party side of web signing (issue 4): the registry command, RP authentication,
``POST``/``GET /api/v1/signing-requests`` with RFC 9457 problems, and the single-use signature
activation checked against its request in one SQL statement (sole control, ETSI TS 119 432)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.support.service import DEV_CONFIG, MFA, PWD, ROOT, WEB_ENV

URI = "https://rp.example.com/signed"


def qes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer", *args, "--config", str(DEV_CONFIG)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, check=False,
        timeout=120,
    )  # fmt: skip


def test_client_command_adds_lists_rotates_and_revokes(
    signer_env: dict[str, str], database_url: str
) -> None:
    env = {**signer_env, **WEB_ENV}
    added = qes(env, "client", "add", "Payroll App", "--redirect-uri", URI,
                "--redirect-uri", "http://127.0.0.1:9999/cb")  # fmt: skip
    assert added.returncode == 0, added.stderr
    client_id = re.search(r"client_id: (rp-[0-9a-f]{16})\n", added.stdout)
    secret = re.search(r"client_secret: (\S{43})\n", added.stdout)
    assert client_id and secret, added.stdout
    stored = asyncio.run(_secret_hash(database_url, client_id[1]))
    assert stored == hashlib.sha256(secret[1].encode()).digest()

    listed = qes(env, "client", "list")
    line = next(x for x in listed.stdout.splitlines() if x.startswith(client_id[1]))
    assert "Payroll App" in line and "active" in line and URI in line
    assert secret[1] not in listed.stdout

    rotated = qes(env, "client", "rotate", client_id[1])
    new = re.search(r"client_secret: (\S{43})\n", rotated.stdout)
    assert rotated.returncode == 0 and new and new[1] != secret[1]
    assert (
        asyncio.run(_secret_hash(database_url, client_id[1]))
        == hashlib.sha256(new[1].encode()).digest()
    )

    assert qes(env, "client", "revoke", client_id[1]).returncode == 0
    line = next(x for x in qes(env, "client", "list").stdout.splitlines() if client_id[1] in x)
    assert "revoked" in line
    for args in (
        ("rotate", client_id[1]),  # revoked: no new secret
        ("revoke", "rp-0000000000000000"),
        ("add", "X", "--redirect-uri", "https://rp.example.com/cb#frag"),
        ("add", "X", "--redirect-uri", "http://rp.example.com/cb"),
        ("add", "X", "--redirect-uri", "/relative"),
    ):
        failed = qes(env, "client", *args)
        assert failed.returncode == 1 and failed.stderr.startswith("qes: "), failed
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr


async def _secret_hash(database_url: str, client_id: str) -> bytes:
    conn = await asyncpg.connect(database_url)
    try:
        value = await conn.fetchval(
            "SELECT secret_hash FROM rp_clients WHERE client_id=$1", client_id
        )
        return bytes(value)
    finally:
        await conn.close()


@dataclass(frozen=True)
class Creds:
    login: str
    password: str

    @property
    def h(self) -> dict[str, str]:
        """HTTP Basic (RFC 7617), as a relying party authenticates."""
        return {"Authorization": aiohttp.encode_basic_auth(self.login, self.password)}


async def register(web: TestClient, name: str = "Contracts") -> Creds:
    from signer.http.sign.api import RP_REGISTRY

    added = await web.app[RP_REGISTRY].add(name, [URI])
    return Creds(added.client.client_id, added.secret)


def body(**over: Any) -> dict[str, Any]:
    digest = base64.b64encode(hashlib.sha256(b"doc").digest()).decode()
    values = {
        "documents": [{"label": "Contract.pdf", "digest": digest}],
        "format": "cades",
        "redirect_uri": URI,
        "state": "xyz",
    }
    values.update(over)
    return {k: v for k, v in values.items() if v is not None}


async def test_rp_authentication(web: TestClient) -> None:
    auth = await register(web)
    url = "/api/v1/signing-requests"
    for kwargs in (
        {},
        {"headers": Creds(auth.login, auth.password + "x").h},
        {"headers": Creds("rp-unknown", auth.password).h},
        {"headers": {"Authorization": "Basic !!!"}},
        {"headers": {"Authorization": "Bearer abc"}},
    ):
        r = await web.post(url, json=body(), **kwargs)
        problem = await r.json()
        assert r.status == 401 and problem["type"] == "/problems/invalid-client", kwargs
        assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert auth.password not in await r.text()
    r = await web.post(url, json=body(), headers=auth.h)
    assert r.status == 201

    from signer.http.sign.api import RP_REGISTRY

    new_secret = await web.app[RP_REGISTRY].rotate(auth.login, grace=timedelta(0))
    assert (await web.post(url, json=body(), headers=auth.h)).status == 401
    rotated = Creds(auth.login, new_secret)
    assert (await web.post(url, json=body(), headers=rotated.h)).status == 201
    await web.app[RP_REGISTRY].revoke(auth.login)
    assert (await web.post(url, json=body(), headers=rotated.h)).status == 401


@pytest.mark.parametrize(
    ("payload", "status", "slug"),
    [
        ("not json", 400, "malformed-json"),
        ([], 422, "invalid-request"),
        (body(extra=1), 422, "invalid-request"),
        (body(documents=[]), 422, "invalid-request"),
        (body(documents=None), 422, "invalid-request"),
        (body(documents=[{"label": "x"}]), 422, "invalid-request"),
        (body(documents=[{"label": "x", "digest": "%%%"}]), 422, "invalid-request"),
        (body(documents=[{"label": "x", "digest": "AAAA"}]), 422, "invalid-request"),
        (body(documents=[{"label": "", "digest": "A" * 44}]), 422, "invalid-request"),
        (body(hash_algorithm="md5"), 422, "invalid-request"),
        (body(format="pdf"), 422, "unsupported-signature-format"),
        (body(format="pades"), 422, "invalid-request"),  # pades takes PDFs, not digests
        (body(format="pades", documents=[{"label": "x", "pdf": "AAAA"}]), 422, "invalid-request"),
        (body(level="b-lta"), 422, "invalid-request"),  # a level is PAdES's only
        (body(format="pades", level="b-ltx"), 422, "invalid-request"),
        (body(state=None), 422, "invalid-request"),
        (body(state="a\nb"), 422, "invalid-request"),
        (body(redirect_uri=None), 422, "invalid-request"),
        (body(redirect_uri=URI + "/x"), 422, "redirect-uri-not-registered"),
        (body(redirect_uri="https://rp.example.com/signe"), 422, "redirect-uri-not-registered"),
        (body(acr="urn:unknown"), 422, "unsupported-acr"),
        (body(signer={"name": "Alice"}), 422, "invalid-request"),
        (body(signer={"email": "not-an-address"}), 422, "invalid-request"),
        (body(signer={"email": "a@b.c", "subject": "a"}), 422, "invalid-request"),
    ],
)
async def test_bad_requests_are_problems(
    web: TestClient, payload: Any, status: int, slug: str
) -> None:
    auth = await register(web)
    if isinstance(payload, str):
        r = await web.post(
            "/api/v1/signing-requests",
            data=payload,
            headers={"Content-Type": "application/json", **auth.h},
        )
    else:
        r = await web.post("/api/v1/signing-requests", json=payload, headers=auth.h)
    assert r.status == status, await r.text()
    assert r.content_type == "application/problem+json"
    problem = await r.json()
    assert problem["type"] == f"/problems/{slug}" and problem["status"] == status


async def test_wrong_media_type_is_415(web: TestClient) -> None:
    auth = await register(web)
    r = await web.post("/api/v1/signing-requests", data="x", headers=auth.h)
    assert r.status == 415


async def test_create_and_read_only_by_the_owner(web: TestClient) -> None:
    auth, other = await register(web, "Owner"), await register(web, "Other")
    r = await web.post("/api/v1/signing-requests", json=body(acr=PWD), headers=auth.h)
    assert r.status == 201
    created = await r.json()
    uuid.UUID(created["id"])
    assert created["sign_url"].endswith(f"/sign/{created['id']}")
    assert r.headers["Location"] == f"/api/v1/signing-requests/{created['id']}"
    expires = datetime.fromisoformat(created["expires_at"]) - datetime.now(UTC)
    assert timedelta(minutes=14) < expires <= timedelta(minutes=15)

    mine = await web.get(f"/api/v1/signing-requests/{created['id']}", headers=auth.h)
    shown = await mine.json()
    assert mine.status == 200 and shown["status"] == "pending" and "result" not in shown
    assert shown["documents"] == body()["documents"]
    for who, path in (
        (other, created["id"]),
        (auth, str(uuid.uuid4())),
        (auth, "not-a-uuid"),
    ):
        r = await web.get(f"/api/v1/signing-requests/{path}", headers=who.h)
        assert r.status == 404 and (await r.json())["type"] == "/problems/signing-request-not-found"
    assert (await web.get(f"/api/v1/signing-requests/{created['id']}")).status == 401


# ------------------------------------------------- scopes, rotation grace, last use (issue 17)


def test_client_scopes_grace_and_last_use_on_the_command_line(
    signer_env: dict[str, str], database_url: str
) -> None:
    env = {**signer_env, **WEB_ENV}
    added = qes(env, "client", "add", "Scoped App", "--redirect-uri", URI,
                "--scope", "api:web-signing", "--scope", "format:cades,pades")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "scopes: api:web-signing format:cades format:pades profile:*\n" in added.stdout
    client_id = re.search(r"client_id: (rp-[0-9a-f]{16})\n", added.stdout)
    assert client_id
    rid = client_id[1]

    changed = qes(env, "client", "scope", rid, "--scope", "api:*", "--scope", "profile:advanced")
    assert changed.returncode == 0, changed.stderr
    assert "scopes: api:* format:* profile:advanced\n" in changed.stdout
    rotated = qes(env, "client", "rotate", rid, "--grace", "2h")
    assert rotated.returncode == 0 and "works for 7200 s more" in rotated.stdout, rotated
    line = next(x for x in qes(env, "client", "list").stdout.splitlines() if rid in x)
    assert "api:* format:* profile:advanced" in line
    assert "valid until" in line and "last used -" in line
    assert qes(env, "client", "rotate", rid, "--grace", "0").returncode == 0
    line = next(x for x in qes(env, "client", "list").stdout.splitlines() if rid in x)
    assert "valid until" not in line

    for args in (
        ("add", "X", "--redirect-uri", URI, "--scope", "format:cades"),  # no api named
        ("add", "X", "--redirect-uri", URI, "--scope", "api:batch"),
        ("add", "X", "--redirect-uri", URI, "--scope", "profile:gold"),
        ("scope", rid, "--scope", "colour:red"),
        ("scope", "rp-0000000000000000", "--scope", "*"),
        ("rotate", rid, "--grace", "a day"),
        ("rotate", rid, "--grace", "-5"),
    ):
        failed = qes(env, "client", *args)
        assert failed.returncode == 1 and failed.stderr.startswith("qes: "), (args, failed)
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr


async def test_the_old_secret_works_during_the_grace_period_only(database_url: str) -> None:
    from signer.flows.registry import InvalidClient, RpRegistry
    from signer.storage.db import create_pool
    from signer.storage.signing_requests import RpClientStore

    now = [datetime(2030, 1, 1, 12, 0, tzinfo=UTC)]
    pool = await create_pool(database_url, min_size=1, max_size=2, command_timeout=5)
    try:
        registry = RpRegistry(RpClientStore(pool), lambda: now[0], grace=timedelta(hours=1))
        added = await registry.add("Rolling App", [URI])
        rid, old = added.client.client_id, added.secret
        await registry.authenticate(rid, old)
        new = await registry.rotate(rid)  # the configured hour
        now[0] += timedelta(minutes=59)
        assert (await registry.authenticate(rid, old)).client_id == rid
        now[0] += timedelta(minutes=1, seconds=30)
        assert (await registry.authenticate(rid, new)).client_id == rid
        shown = next(c for c in await registry.all() if c.client_id == rid)
        assert shown.previous_secret_last_used_at == now[0] - timedelta(minutes=1, seconds=30)
        assert shown.secret_last_used_at == now[0]
        assert shown.previous_secret_until == now[0] - timedelta(seconds=30)
        with pytest.raises(InvalidClient):  # the hour is over
            await registry.authenticate(rid, old)
        newer = await registry.rotate(rid, timedelta(minutes=5))
        with pytest.raises(InvalidClient):  # a second rotation keeps only the last secret
            await registry.authenticate(rid, old)
        await registry.authenticate(rid, new)
        await registry.authenticate(rid, newer)
        await registry.revoke(rid)
        for secret in (new, newer):
            with pytest.raises(InvalidClient):
                await registry.authenticate(rid, secret)
    finally:
        await pool.close()


async def _refusal_reasons(database_url: str, request_id: str) -> list[tuple[str, bool]]:
    """Reasons of the log's refusal entries for one HTTP request, and whether each names a
    client (``ca.logentry``)."""
    from ca.logentry import entry_fields

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT entry FROM log_entries WHERE kind = 'refusal'")
    finally:
        await conn.close()
    fields = [dict(entry_fields(bytes(r["entry"]))[1]) for r in rows]
    return [
        (f["reason"].decode(), "client_id" in f)
        for f in fields
        if f["request_id"] == request_id.encode()
    ]


async def test_out_of_scope_requests_are_refused_and_logged(
    web: TestClient, database_url: str
) -> None:
    from signer.http.sign.api import RP_REGISTRY

    registry = web.app[RP_REGISTRY]
    scoped = await registry.add("Scoped", [URI], ["api:web-signing", "format:cades", "profile:qes"])
    csc_only = await registry.add("CSC only", [URI], ["api:csc"])
    auth = Creds(scoped.client.client_id, scoped.secret)
    url = "/api/v1/signing-requests"
    assert (await web.post(url, json=body(profile="qes"), headers=auth.h)).status == 201
    for who, payload in (
        (auth, body(format="raw", profile="qes")),
        (auth, body(profile="advanced")),
        (auth, body()),  # limited to some profiles: the request must name one
        (Creds(csc_only.client.client_id, csc_only.secret), body()),
    ):
        r = await web.post(url, json=payload, headers=who.h)
        problem = await r.json()
        assert r.status == 403 and r.content_type == "application/problem+json", problem
        assert problem["type"] == "/problems/client-out-of-scope"
        assert await _refusal_reasons(database_url, problem["request_id"]) == [
            ("client-out-of-scope", True)
        ]
    page = await web.get("/problems/client-out-of-scope")
    assert page.status == 200
    spec = await (await web.get("/openapi.json")).json()
    listed = spec["paths"]["/api/v1/signing-requests"]["post"]["responses"]["403"]
    assert "/problems/client-out-of-scope" in listed["description"]

    await registry.set_scopes(auth.login, ["api:web-signing", "profile:*"])
    r = await web.post(url, json=body(format="raw"), headers=auth.h)
    assert r.status == 201, await r.text()


# ------------------------------------------------------------- the activation statement


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[tuple[Any, Any]]:
    from signer.storage.db import create_pool
    from signer.storage.signing_requests import RpClient, RpClientStore, SigningRequestStore

    pool = await create_pool(database_url, min_size=1, max_size=4, command_timeout=5)
    rps = RpClientStore(pool)
    client = RpClient(f"rp-{uuid.uuid4().hex[:16]}", "Store test", (URI,), datetime.now(UTC))
    await rps.add(client, b"\0" * 32)
    yield SigningRequestStore(pool), client
    await pool.close()


ISSUER = "https://idp.example.com"


async def new_request(store: Any, client: Any, **over: Any) -> Any:
    from signer.storage.signing_requests import NewRequest

    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "client_id": client.client_id,
        "format": "raw",
        "profile": None,
        "hash_algorithm": "sha256",
        "labels": ("a", "b"),
        "digests": (b"\1" * 32, b"\2" * 32),
        "redirect_uri": URI,
        "state": "s",
        "acr": MFA,
        "acr_accepted": (MFA,),
        "expected_subject": "alice",
        "expected_email": None,
        "created_at": now,
        "expires_at": now + timedelta(minutes=15),
    }
    values.update(over)
    req = NewRequest(**values)
    await store.create(req)
    return req


def activation(req: Any, **over: Any) -> Any:
    from signer.storage.signing_requests import Activation

    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "request_id": req.id,
        "token_issuer": ISSUER,
        "token_subject": "alice",
        "email": "alice@example.com",
        "acr": MFA,
        "auth_time": now,
        "hash_algorithm": "sha256",
        "digests": req.digests,
        "created_at": now,
        "expires_at": now + timedelta(minutes=1),
    }
    values.update(over)
    return Activation(**values)


async def test_the_activation_must_match_its_request_exactly(stores: tuple[Any, Any]) -> None:
    store, client = stores
    req = await new_request(store, client)
    now = datetime.now(UTC)
    skew = timedelta(seconds=30)
    wrong = [
        {"digests": (req.digests[0],)},  # a subset
        {"digests": (req.digests[1], req.digests[0])},  # another order
        {"digests": (req.digests[0], b"\3" * 32)},  # another document
        {"hash_algorithm": "sha384"},
        {"token_subject": "bob"},
        {"token_issuer": "https://other-idp.example.com"},
        {"acr": PWD},
        {"acr": None},
        {"auth_time": None},
        {"auth_time": req.created_at - timedelta(minutes=5)},  # logged in before the request
        {"expires_at": now - timedelta(seconds=1)},
    ]
    for over in wrong:
        act = activation(req, **over)
        await store.add_activation(act)
        assert await store.activate(act.id, ISSUER, now, skew) is None, over
        assert (await store.get(req.id, now)).status == "pending", over
        # single use: even a refused activation cannot be tried again
        assert await store.activate(act.id, ISSUER, now, skew) is None

    good = activation(req)
    await store.add_activation(good)
    signing = await store.activate(good.id, ISSUER, now, skew)
    assert signing is not None and signing.status == "signing" and signing.digests == req.digests
    assert await store.activate(good.id, ISSUER, now, skew) is None  # replay
    again = activation(req)
    await store.add_activation(again)
    assert await store.activate(again.id, ISSUER, now, skew) is None  # request not pending


async def test_the_pades_level_survives_storage_and_activation(stores: tuple[Any, Any]) -> None:
    """The level a 'pades' request asked for is what the flow reads back when it signs."""
    store, client = stores
    req = await new_request(store, client, format="pades", pades_level="b-lta")
    now = datetime.now(UTC)
    assert (await store.get(req.id, now)).pades_level == "b-lta"
    good = activation(req)
    await store.add_activation(good)
    signing = await store.activate(good.id, ISSUER, now, timedelta(seconds=30))
    assert signing is not None and signing.pades_level == "b-lta"
    plain = await new_request(store, client)
    assert (await store.get(plain.id, now)).pades_level == "b-t"


async def test_expected_email_and_request_expiry(stores: tuple[Any, Any]) -> None:
    store, client = stores
    now = datetime.now(UTC)
    skew = timedelta(seconds=30)
    by_email = await new_request(
        store, client, expected_subject=None, expected_email="Alice@Example.com"
    )
    for email in (None, "bob@example.com"):
        act = activation(by_email, email=email)
        await store.add_activation(act)
        assert await store.activate(act.id, ISSUER, now, skew) is None
    act = activation(by_email)
    await store.add_activation(act)
    assert await store.activate(act.id, ISSUER, now, skew) is not None  # case-insensitive

    late = await new_request(store, client, expires_at=now + timedelta(seconds=1))
    act = activation(late)
    await store.add_activation(act)
    assert await store.activate(act.id, ISSUER, now + timedelta(seconds=2), skew) is None
    assert (await store.get(late.id, now + timedelta(seconds=2))).status == "expired"


async def test_concurrent_activations_sign_once(stores: tuple[Any, Any]) -> None:
    store, client = stores
    req = await new_request(store, client)
    acts = [activation(req) for _ in range(8)]
    for act in acts:
        await store.add_activation(act)
    now = datetime.now(UTC)
    results = await asyncio.gather(
        *(store.activate(a.id, ISSUER, now, timedelta(seconds=30)) for a in acts)
    )
    assert sum(r is not None for r in results) == 1


def test_principal_survives_the_database_round_trip() -> None:
    import json

    from idp_adapter.principal import Principal
    from signer.flows.websign import principal_from_json, principal_json

    now = datetime.now(UTC).replace(microsecond=0)
    p = Principal(
        issuer=ISSUER,
        issuer_name="people",
        subject="alice",
        client_id="web",
        subject_type="natural",
        attributes={"common_name": "Alice Example"},
        profiles=("qes", "advanced"),
        default_profile="qes",
        roles=frozenset({"signer"}),
        token_id=None,
        expires_at=now,
        acr=PWD,
        amr=("pwd",),
        auth_time=now,
        email="alice@example.com",
    )
    back = principal_from_json(json.loads(json.dumps(principal_json(p))))
    assert replace(back, attributes=dict(back.attributes)) == replace(
        p, attributes=dict(p.attributes)
    )
