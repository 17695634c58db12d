"""An external RFC 3161 TSA instead of the built-in one: a real HTTP server in the test answering
with :class:`ca.tsa.TimeStampAuthority` tokens over an in-memory PKI. Tokens that are good get
embedded (and are accepted by ``openssl ts``/``openssl cms`` against the external root only);
a token chaining elsewhere or from a TSA whose clock is off refuses the signature, with no key
left in the HSM and the record 'failed'."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from asn1crypto import cms

from signer.formats.cms import signature_time_stamp
from signer.signing.timestamping import gen_time
from tests.support.pki import Pki, make_pki, pem
from tests.support.service import api_headers


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=False, timeout=60
    )


@dataclasses.dataclass
class ExternalTsa:
    pki: Pki
    url: str
    offset: timedelta = timedelta(0)
    queries: int = 0


@pytest.fixture
async def external_tsa(aiohttp_server: Callable[..., Any]) -> ExternalTsa:
    """An RFC 3161 service over HTTP on its own PKI, its clock the real one plus ``offset``."""
    pki = make_pki(datetime.now(UTC))
    state = ExternalTsa(pki=pki, url="")
    authority = pki.tsa(clock=lambda: datetime.now(UTC) + state.offset)

    async def answer(request: web.Request) -> web.Response:
        assert request.content_type == "application/timestamp-query"
        state.queries += 1
        reply = authority.respond(await request.read(), pki.tsa_key)
        return web.Response(body=reply, content_type="application/timestamp-reply")

    app = web.Application()
    app.router.add_post("/rfc3161", answer)
    server: TestServer = await aiohttp_server(app)
    state.url = str(server.make_url("/rfc3161"))
    return state


def anchors_file(pki: Pki, folder: Path) -> Path:
    path = folder / "tsa-anchors.pem"
    path.write_bytes(pem(pki.chain.root) + pem(pki.chain.issuing))
    return path


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Any], settings: Any, ca_ready: None
) -> Callable[..., Any]:
    """A signer app configured with the external TSA ``url`` and ``anchors``; after the test,
    the same HSM checks as the ``client`` fixture."""
    from signer.app import create_app
    from signer.http.kit.state import SERVICES

    apps: list[web.Application] = []

    async def make(url: str, anchors: Path) -> TestClient:
        tsa = dataclasses.replace(settings.tsa, url=url, trust_anchor_file=anchors)
        app = create_app(dataclasses.replace(settings, tsa=tsa))
        apps.append(app)
        client: TestClient = await aiohttp_client(app)
        return client

    yield make  # type: ignore[misc]
    for app in apps:
        assert app[SERVICES].hsm.live_ephemeral_keys() == 0


async def assert_hsm_clean(client: TestClient) -> None:
    from signer.http.kit.state import SERVICES

    services = client.app[SERVICES]
    leftover = await services.hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
    assert leftover == [], f"session objects left in the HSM: {leftover}"
    assert services.hsm.live_ephemeral_keys() == 0


async def sign_cades(client: TestClient, token: str, document: bytes, request_id: str) -> Any:
    return await client.post(
        "/api/v1/signatures",
        json={
            "hash_algorithm": "sha256",
            "hashes": [base64.b64encode(hashlib.sha256(document).digest()).decode()],
            "format": "cades",
        },
        headers=api_headers(token, **{"X-Request-Id": request_id}),
    )


async def record_of(database_url: str, request_id: str) -> tuple[str, str | None]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT status, failure FROM signing_records WHERE request_id = $1", request_id
        )
    finally:
        await conn.close()
    assert row is not None, f"no record for request {request_id}"
    return row["status"], row["failure"]


async def test_tokens_from_the_external_tsa_are_embedded_and_verify(
    external_tsa: ExternalTsa,
    make_client: Callable[..., Any],
    batch_token: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    anchors = anchors_file(external_tsa.pki, tmp_path)
    client = await make_client(external_tsa.url, anchors)
    document = secrets.token_bytes(1500)
    request_id = f"ext-ok-{uuid.uuid4().hex}"
    resp = await sign_cades(client, batch_token, document, request_id)
    assert resp.status == 201, await resp.text()
    payload = await resp.json()
    assert external_tsa.queries == 1
    signature = base64.b64decode(payload["signatures"][0])
    token = signature_time_stamp(signature)

    # the token is the external TSA's: signed by its certificate, which is in the token
    signed = cms.ContentInfo.load(token)["content"]
    (info,) = signed["signer_infos"]
    sid = info["sid"].chosen
    assert sid["serial_number"].native == external_tsa.pki.tsa_certificate.serial_number
    # OpenSSL accepts it against the external root, and not against the signer's own root
    token_path, our_root = tmp_path / "token.der", tmp_path / "our-root.pem"
    token_path.write_bytes(token)
    *_, root_pem = payload["chain"].split("-----END CERTIFICATE-----\n")[:-1]
    our_root.write_text(root_pem + "-----END CERTIFICATE-----\n")
    (outer,) = cms.ContentInfo.load(signature)["content"]["signer_infos"]
    imprint = hashlib.sha256(outer["signature"].native).hexdigest()
    verify = ["openssl", "ts", "-verify", "-token_in", "-in", token_path, "-digest", imprint]
    ok = run(*verify, "-CAfile", anchors)
    assert ok.returncode == 0 and "Verification: OK" in ok.stdout, ok.stdout + ok.stderr
    assert run(*verify, "-CAfile", our_root).returncode != 0
    # and the CAdES signature itself against the signer's root
    sig_path, doc_path = tmp_path / "doc.p7s", tmp_path / "doc.bin"
    sig_path.write_bytes(signature)
    doc_path.write_bytes(document)
    at = str(int(gen_time(token).timestamp()))
    cades = run(
        "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sig_path,
        "-CAfile", our_root, "-purpose", "any", "-cades", "-attime", at, "-out", "/dev/null",
        "-content", doc_path,
    )  # fmt: skip
    assert cades.returncode == 0 and "Verification successful" in cades.stderr, cades.stderr
    assert await record_of(database_url, request_id) == ("completed", None)

    # the trust bundle names the external TSA's anchors; this service is no TSA now
    bundle = await (await client.get("/api/v1/trust-bundle")).json()
    assert bundle["tsa"] == [
        pem(external_tsa.pki.chain.root).decode(),
        pem(external_tsa.pki.chain.issuing).decode(),
    ]
    resp = await client.post(
        "/tsa", data=b"\x30\x00", headers={"Content-Type": "application/timestamp-query"}
    )
    assert resp.status == 404 and resp.content_type == "application/problem+json"
    assert (await resp.json())["type"] == "/problems/tsa-not-served"
    await assert_hsm_clean(client)


@pytest.mark.parametrize(
    ("case", "problem"),
    [("other-root", "/problems/tsa-unavailable"), ("skewed", "/problems/tsa-clock-skew")],
)
async def test_untrusted_or_skewed_external_tsa_refuses_the_signature(
    external_tsa: ExternalTsa,
    make_client: Callable[..., Any],
    batch_token: str,
    database_url: str,
    tmp_path: Path,
    case: str,
    problem: str,
) -> None:
    if case == "other-root":
        anchors = anchors_file(make_pki(datetime.now(UTC)), tmp_path)
    else:
        anchors = anchors_file(external_tsa.pki, tmp_path)
        external_tsa.offset = timedelta(seconds=60)
    client = await make_client(external_tsa.url, anchors)
    request_id = f"ext-{case}-{uuid.uuid4().hex}"
    resp = await sign_cades(client, batch_token, b"refused document", request_id)
    assert resp.status == 503, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["type"] == problem
    assert external_tsa.queries == 1
    status, failure = await record_of(database_url, request_id)
    assert status == "failed" and failure == problem.rsplit("/", 1)[1]
    await assert_hsm_clean(client)


async def test_unreachable_external_tsa_refuses_the_signature(
    make_client: Callable[..., Any], batch_token: str, database_url: str, tmp_path: Path
) -> None:
    from tests.support.service import free_port

    anchors = anchors_file(make_pki(datetime.now(UTC)), tmp_path)
    client = await make_client(f"http://127.0.0.1:{free_port()}/tsa", anchors)
    request_id = f"ext-down-{uuid.uuid4().hex}"
    resp = await sign_cades(client, batch_token, b"document", request_id)
    assert resp.status == 503
    assert (await resp.json())["type"] == "/problems/tsa-unavailable"
    assert await record_of(database_url, request_id) == ("failed", "tsa-unavailable")
    await assert_hsm_clean(client)
