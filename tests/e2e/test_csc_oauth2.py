"""The CSC v2 OAuth2 credential flow (issue 6 item 2) in Debian's Chromium through the real
dev IdP's login page.

A CSC client (the relying party registered with ``qes client add``) lists alice's credential
with her bearer token, hashes a document, sends the browser to ``oauth2/authorize`` with the
hash; alice logs in afresh, sees the hash on the consent page and authorises; the client
exchanges the code for a credential token and calls ``signatures/signHash`` with it as the
bearer token and no SAD. OpenSSL verifies the signature against the credential's certificate
and the certificate's chain. The refusals must each leave the credential unused: its key has
signed nothing and no authorisation of it was consumed. Consent screenshots go to
tests/e2e/artifacts/ (gitignored).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from playwright.async_api import Browser, Page, expect

from tests.e2e.test_web_signing import RP_NAME, Rp, Site, shot
from tests.support.idp import (
    DEMO_CLIENTS,
    DEMO_PASSWORDS,
    DEMO_USERS,
    RunningIdp,
    start_idp,
    with_redirect_uri,
)
from tests.support.leaks import record
from tests.support.service import DEV_CONFIG, free_port
from tests.support.verify import openssl_verify_chain, openssl_verify_signature

SHA256 = "2.16.840.1.101.3.4.2.1"
#: Past a credential's 10-minute certificate and the sweeper's one-minute grace.
EXPIRED = 600 + 60 + 5
ECDSA_SHA256 = "1.2.840.10045.4.3.2"


@pytest.fixture(scope="module")
def sign_idp(tmp_path_factory: pytest.TempPathFactory, sign_port: int) -> Iterator[RunningIdp]:
    """The shared web-signing fixtures' IdP, whose ``demo-signer-web`` client also knows this
    port's CSC OAuth2 callback; bob's e-mail is verified (a valid signer, not the owner)."""
    base = f"http://127.0.0.1:{sign_port}"
    clients = with_redirect_uri(DEMO_CLIENTS, "demo-signer-web", f"{base}/sign/callback")
    clients = with_redirect_uri(clients, "demo-signer-web", f"{base}/csc/v2/oauth2/callback")
    users = [json.loads(json.dumps(u)) for u in DEMO_USERS]
    for u in users:
        if u["username"] == "bob":
            u["claims"]["email_verified"] = True
    with start_idp(tmp_path_factory.mktemp("csc-idp"), clients=clients, users=users) as idp:
        yield idp


@pytest.fixture(scope="module")
def sign_env(sign_env: dict[str, str]) -> dict[str, str]:
    """The shared signer environment with a quick CSC sweeper (see ``credentials_swept``)."""
    return {**sign_env, "QES__CSC__SWEEP_INTERVAL_SECONDS": "0.2"}


@pytest.fixture(autouse=True)
async def credentials_swept(site: Site) -> AsyncIterator[None]:
    """After each test, the signer's clock jumps past every credential's expiry until its
    sweeper has destroyed their keys (the record says 'expired unused'), then jumps back: the
    token holds only the long-lived keys again (checked at the end of the session)."""
    yield
    site.clock.advance(EXPIRED)
    try:
        conn = await asyncpg.connect(site.database_url)
        try:
            for _ in range(100):
                left = await conn.fetchval(
                    "SELECT count(*) FROM csc_credentials WHERE state <> 'destroyed'"
                )
                if left == 0:
                    break
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        assert left == 0, f"{left} credentials not swept"
    finally:
        site.clock.advance(-EXPIRED)


@asynccontextmanager
async def replica(env: dict[str, str]) -> AsyncIterator[str]:
    """A second signer process's app on its own port, same database, HSM token and public
    URL (replicas behind one name); yields its URL and checks its HSM sessions afterwards."""
    from signer.app import create_app
    from signer.http.kit.state import SERVICES
    from signer.settings.config import load_settings

    port = free_port()
    app = create_app(load_settings(DEV_CONFIG, env={**env, "QES__SERVER__PORT": str(port)}))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
        services = app[SERVICES]
        assert await services.hsm.run(lambda s: [o for o in s.object_summary() if not o[2]]) == []
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ the client's side


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def pkce() -> tuple[str, str]:
    """A verifier and its S256 challenge, computed here from RFC 7636 §4.2 (not our code)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


async def csc(site: Site, endpoint: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{site.url}/csc/v2/{endpoint}",
            json=body,
            headers={"Authorization": f"Bearer {token}"} if token else {},
        ) as r,
    ):
        return r.status, await r.json(content_type=None)


async def alice_token(site: Site) -> str:
    return await site.idp.user_token("alice", DEMO_PASSWORDS["alice"], "demo-web")


async def new_credential(site: Site, token: str) -> str:
    """A one-shot credential for the bearer (issue 6 item 1): ``credentials/list`` reserves
    its ID, the first ``credentials/info`` makes its key and certificate (issue 17 item 9)."""
    status, body = await csc(site, "credentials/list", token, {})
    assert status == 200, body
    ids: list[str] = body["credentialIDs"]
    assert ids, body
    status, body = await csc(site, "credentials/info", token, {"credentialID": ids[-1]})
    assert status == 200, body
    return ids[-1]


async def credential_chain(site: Site, token: str, credential_id: str) -> list[x509.Certificate]:
    status, body = await csc(
        site, "credentials/info", token, {"credentialID": credential_id, "certificates": "chain"}
    )
    assert status == 200, body
    return [
        x509.load_der_x509_certificate(base64.b64decode(c)) for c in body["cert"]["certificates"]
    ]


def authorize_url(
    site: Site, rp: Rp, credential_id: str, hashes: list[bytes], challenge: str, **extra: str
) -> tuple[str, str]:
    state = f"client-state-{uuid.uuid4().hex}"
    params = {
        "response_type": "code",
        "client_id": rp.client_id,
        "redirect_uri": rp.redirect_uri,
        "scope": "credential",
        "credentialID": credential_id,
        "numSignatures": str(len(hashes)),
        "hashes": ",".join(b64url(h) for h in hashes),
        "hashAlgorithmOID": SHA256,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
        "description": "Employment contract",
        **extra,
    }
    return f"{site.url}/csc/v2/oauth2/authorize?{urlencode(params)}", state


async def login(page: Page, site: Site, user: str) -> None:
    assert page.url.startswith(site.idp.issuer), page.url
    await page.get_by_label("Username").fill(user)
    await page.get_by_label("Password").fill(DEMO_PASSWORDS[user])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{site.url}/csc/v2/oauth2/**", timeout=15_000)
    await page.wait_for_load_state()


async def to_consent(browser: Browser, site: Site, url: str, user: str = "alice") -> Page:
    page = await (await browser.new_context()).new_page()
    await page.goto(url)
    await login(page, site, user)
    await page.wait_for_url(f"{site.url}/csc/v2/oauth2/consent/*")
    return page


async def approve(page: Page, rp: Rp, state: str) -> str:
    """Authorise on the consent page; returns the code the browser brought to the client."""
    await page.get_by_role("button", name="Authorise", exact=True).click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    query = parse_qs(urlsplit(page.url).query)
    assert set(query) == {"code", "state"} and query["state"] == [state], page.url
    await page.context.close()
    return query["code"][0]


async def redeem(
    site: Site, rp: Rp, code: str, verifier: str, *, basic: bool = True, at: str | None = None
) -> tuple[int, dict[str, Any]]:
    """``oauth2/token`` at the site, or at another replica's URL ``at``."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": rp.redirect_uri,
    }
    headers = rp.auth if basic else {}
    if not basic:
        form.update(client_id=rp.client_id, client_secret=rp.secret)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{at or site.url}/csc/v2/oauth2/token", data=form, headers=headers) as r,
    ):
        assert r.headers.get("Cache-Control") == "no-store"
        body: dict[str, Any] = await r.json()
        if isinstance(body.get("access_token"), str):
            record(body["access_token"])  # the signer's credential token: never in a log
        return r.status, body


async def sign_hash(
    site: Site, token: str, credential_id: str, hashes: list[bytes]
) -> tuple[int, Any]:
    return await csc(
        site,
        "signatures/signHash",
        token,
        {
            "credentialID": credential_id,
            "hashes": [base64.b64encode(h).decode() for h in hashes],
            "hashAlgorithmOID": SHA256,
            "signAlgo": ECDSA_SHA256,
        },
    )


async def unused(site: Site, credential_id: str) -> None:
    """Nothing was signed with the credential: it is still active (its key has signed
    nothing) and none of its authorisations was consumed."""
    conn = await asyncpg.connect(site.database_url)
    try:
        state = await conn.fetchval("SELECT state FROM csc_credentials WHERE id=$1", credential_id)
        consumed = await conn.fetchval(
            "SELECT count(*) FROM csc_authorizations WHERE credential_id=$1"
            " AND consumed_at IS NOT NULL",
            credential_id,
        )
    finally:
        await conn.close()
    assert (state, consumed) == ("active", 0)


async def oauth2_row(site: Site, credential_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(site.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT status, error, code_hash, redeemed_at, reused_at, token_ref"
            " FROM csc_oauth2_requests WHERE credential_id=$1 ORDER BY created_at DESC LIMIT 1",
            credential_id,
        )
    finally:
        await conn.close()
    assert row is not None
    return row


def write_chain(chain: list[x509.Certificate], folder: Path) -> tuple[Path, Path, Path]:
    paths = []
    for name, cert in zip(("leaf", "issuing", "root"), chain, strict=True):
        path = folder / f"{name}.pem"
        path.write_bytes(cert.public_bytes(Encoding.PEM))
        paths.append(path)
    return paths[0], paths[1], paths[2]


# ------------------------------------------------------------------ the happy path


async def test_credential_token_from_the_browser_flow_signs_the_authorised_hash(
    site: Site, rp: Rp, browser: Browser, artifacts: Path, tmp_path: Path
) -> None:
    token = await alice_token(site)
    credential_id = await new_credential(site, token)
    # a second one-shot credential is a second signing operation: a token (jti) of its own
    other_credential = await new_credential(site, await alice_token(site))
    chain = await credential_chain(site, token, credential_id)
    document = b"Employment contract, Alice Example\n" * 40
    digest = hashlib.sha256(document).digest()
    verifier, challenge = pkce()
    url, state = authorize_url(site, rp, credential_id, [digest], challenge)

    page = await to_consent(browser, site, url)
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        f"{RP_NAME} asks you to authorise 1 signature"
    )
    await expect(page.locator("#hashes")).to_contain_text(digest.hex())
    await expect(page.locator("#hashes")).to_contain_text(b64url(digest))
    await expect(page.locator("#hashes tbody tr")).to_have_count(1)
    await expect(page.locator("#signature-count")).to_have_text("1")
    await expect(page.locator("#credential-id")).to_have_text(credential_id)
    await expect(page.locator("#rp-name")).to_contain_text(RP_NAME)
    await expect(page.locator("#description")).to_contain_text("Employment contract")
    subject = page.locator("#certificate-subject")
    for text in ("Alice Example", "PNODE-1234567890", "DE", "alice@example.com"):
        await expect(subject).to_contain_text(text)
    await page.screenshot(path=shot(artifacts / "csc-oauth2-consent.png"), full_page=True)
    code = await approve(page, rp, state)

    status, issued = await redeem(site, rp, code, verifier)
    assert status == 200, issued
    assert issued["token_type"] == "Bearer" and 0 < issued["expires_in"] <= 600
    assert issued["credentialID"] == credential_id
    credential_token = issued["access_token"]

    # Refused, nothing signed: another credential, other hashes.
    status, body = await sign_hash(site, credential_token, other_credential, [digest])
    assert status in (400, 401) and "signatures" not in body, body
    other = hashlib.sha256(document + b"!").digest()
    status, body = await sign_hash(site, credential_token, credential_id, [other])
    assert status in (400, 401) and "signatures" not in body, body
    await unused(site, credential_id)
    await unused(site, other_credential)

    status, body = await sign_hash(site, credential_token, credential_id, [digest])
    assert status == 200, body
    (signature,) = body["signatures"]
    leaf, issuing, root = write_chain(chain, tmp_path)
    openssl_verify_chain(root, issuing, leaf)
    (tmp_path / "doc.bin").write_bytes(document)
    (tmp_path / "doc.sig").write_bytes(base64.b64decode(signature))
    verified = openssl_verify_signature(leaf, tmp_path / "doc.sig", tmp_path / "doc.bin", "sha256")
    assert verified.returncode == 0 and "Verified OK" in verified.stdout, verified.stderr

    # The credential token is used up with its credential.
    status, body = await sign_hash(site, credential_token, credential_id, [digest])
    assert status in (400, 401) and "signatures" not in body, body
    assert (await oauth2_row(site, credential_id))["status"] == "redeemed"


# ------------------------------------------------------------------ refusals


async def test_a_code_used_twice_is_refused_and_its_token_revoked(
    site: Site, rp: Rp, browser: Browser, sign_env: dict[str, str]
) -> None:
    """Also across replicas: the code is redeemed at one process and replayed at another."""
    token = await alice_token(site)
    credential_id = await new_credential(site, token)
    digest = hashlib.sha256(b"offer").digest()
    verifier, challenge = pkce()
    url, state = authorize_url(site, rp, credential_id, [digest], challenge)
    code = await approve(await to_consent(browser, site, url), rp, state)

    # The first redemption at another replica, client_secret_post; the second here, Basic.
    async with replica(sign_env) as other:
        status, first = await redeem(site, rp, code, verifier, basic=False, at=other)
    assert status == 200, first
    status, second = await redeem(site, rp, code, verifier)
    assert (status, second["error"]) == (400, "invalid_grant"), second
    row = await oauth2_row(site, credential_id)
    assert row["reused_at"] is not None and row["token_ref"] is not None

    status, body = await sign_hash(site, first["access_token"], credential_id, [digest])
    assert status in (400, 401) and "signatures" not in body, body
    await unused(site, credential_id)


async def test_a_wrong_code_verifier_gets_no_token(site: Site, rp: Rp, browser: Browser) -> None:
    token = await alice_token(site)
    credential_id = await new_credential(site, token)
    digest = hashlib.sha256(b"terms").digest()
    verifier, challenge = pkce()
    url, state = authorize_url(site, rp, credential_id, [digest], challenge)
    code = await approve(await to_consent(browser, site, url), rp, state)

    wrong, _ = pkce()
    status, body = await redeem(site, rp, code, wrong)
    assert (status, body["error"]) == (400, "invalid_grant"), body
    assert "access_token" not in body
    # The code was used up by the failed attempt: the right verifier comes too late.
    status, body = await redeem(site, rp, code, verifier)
    assert (status, body["error"]) == (400, "invalid_grant"), body
    row = await oauth2_row(site, credential_id)
    assert row["status"] == "failed" and row["token_ref"] is None
    await unused(site, credential_id)


async def test_another_person_logging_in_is_refused(
    site: Site, rp: Rp, browser: Browser, artifacts: Path
) -> None:
    token = await alice_token(site)
    credential_id = await new_credential(site, token)
    _, challenge = pkce()
    url, state = authorize_url(site, rp, credential_id, [hashlib.sha256(b"x").digest()], challenge)
    page = await (await browser.new_context()).new_page()
    await page.goto(url)
    await login(page, site, "bob")
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "You are not the owner of this credential"
    )
    assert "/consent/" not in page.url
    await page.screenshot(path=shot(artifacts / "csc-oauth2-not-owner.png"), full_page=True)
    await page.get_by_role("link", name="Return to the application").click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    query = parse_qs(urlsplit(page.url).query)
    assert query == {"error": ["access_denied"], "state": [state]}
    await page.context.close()
    row = await oauth2_row(site, credential_id)
    assert (row["status"], row["code_hash"]) == ("denied", None)
    await unused(site, credential_id)


async def test_an_unregistered_redirect_uri_gets_an_error_page_and_no_login(
    site: Site, rp: Rp, browser: Browser
) -> None:
    token = await alice_token(site)
    credential_id = await new_credential(site, token)
    _, challenge = pkce()
    evil = "https://attacker.example.com/cb"
    url, _ = authorize_url(
        site, rp, credential_id, [hashlib.sha256(b"x").digest()], challenge, redirect_uri=evil
    )
    page = await (await browser.new_context()).new_page()
    response = await page.goto(url)
    assert response is not None and response.status == 400
    assert page.url.startswith(f"{site.url}/csc/v2/oauth2/authorize")  # not sent anywhere
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "redirect_uri is missing or not registered for this client"
    )
    await page.context.close()
    await unused(site, credential_id)


async def test_parameter_errors_go_back_to_the_registered_redirect_uri(site: Site, rp: Rp) -> None:
    """RFC 6749 §4.1.2.1: once the redirect URI is trusted, errors are redirects to it."""
    token = await alice_token(site)
    credential_id = await new_credential(site, token)
    digest = hashlib.sha256(b"x").digest()
    _, challenge = pkce()
    cases = {
        "plain PKCE": ({"code_challenge_method": "plain"}, "invalid_request"),
        "no PKCE": ({"code_challenge": ""}, "invalid_request"),
        "service scope": ({"scope": "service"}, "invalid_scope"),
        "token response": ({"response_type": "token"}, "unsupported_response_type"),
        "count mismatch": ({"numSignatures": "2"}, "invalid_request"),
        "unknown hash": ({"hashAlgorithmOID": "1.3.14.3.2.26"}, "invalid_request"),
        "unknown credential": ({"credentialID": "no-such-credential"}, "invalid_request"),
    }
    async with aiohttp.ClientSession() as http:
        for name, (extra, error) in cases.items():
            url, state = authorize_url(site, rp, credential_id, [digest], challenge, **extra)
            async with http.get(url, allow_redirects=False) as r:
                assert r.status == 303, name
                location = r.headers["Location"]
            assert location.startswith(rp.redirect_uri + "?"), (name, location)
            query = parse_qs(urlsplit(location).query)
            assert query["error"] == [error] and query["state"] == [state], (name, query)
        url, _ = authorize_url(site, rp, credential_id, [digest], challenge, client_id="rp-x")
        async with http.get(url, allow_redirects=False) as r:
            assert r.status == 400 and r.content_type == "text/html"
    await unused(site, credential_id)


async def test_token_endpoint_errors_follow_rfc_6749(site: Site, rp: Rp) -> None:
    form = {"grant_type": "authorization_code", "code": "nope", "code_verifier": "x" * 43,
            "redirect_uri": rp.redirect_uri}  # fmt: skip
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{site.url}/csc/v2/oauth2/token", data=form) as r:
            assert r.status == 401 and (await r.json())["error"] == "invalid_client"
        bad = {"Authorization": aiohttp.encode_basic_auth(rp.client_id, "wrong-secret")}
        async with http.post(f"{site.url}/csc/v2/oauth2/token", data=form, headers=bad) as r:
            assert r.status == 401 and (await r.json())["error"] == "invalid_client"
            assert r.headers["WWW-Authenticate"].startswith("Basic")
        async with http.post(f"{site.url}/csc/v2/oauth2/token", data=form, headers=rp.auth) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_grant"
        refresh = {**form, "grant_type": "refresh_token"}
        async with http.post(f"{site.url}/csc/v2/oauth2/token", data=refresh, headers=rp.auth) as r:
            assert r.status == 400 and (await r.json())["error"] == "unsupported_grant_type"
        both = {**form, "client_id": rp.client_id, "client_secret": rp.secret}
        async with http.post(f"{site.url}/csc/v2/oauth2/token", data=both, headers=rp.auth) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_request"
        async with http.get(f"{site.url}/.well-known/oauth-authorization-server/csc/v2") as r:
            meta = await r.json()
        async with http.get(f"{site.url}/openapi.json") as r:
            paths = (await r.json())["paths"]
    assert {"/csc/v2/oauth2/authorize", "/csc/v2/oauth2/token"} <= set(paths)
    assert meta["token_endpoint"] == f"{site.url}/csc/v2/oauth2/token"
    status, info = await csc(site, "info", "", {})
    assert status == 200, info
    assert info["oauth2Issuer"] == meta["issuer"]
    assert {"oauth2/authorize", "oauth2/token"} <= set(info["methods"])


async def test_cancel_and_a_forged_consent_authorise_nothing(
    site: Site, rp: Rp, browser: Browser
) -> None:
    token = await alice_token(site)
    credential_id = await new_credential(site, token)
    _, challenge = pkce()
    url, state = authorize_url(site, rp, credential_id, [hashlib.sha256(b"y").digest()], challenge)
    page = await to_consent(browser, site, url)
    # The same browser (its consent cookie) posting without this session's CSRF token.
    forged = await page.request.post(page.url, form={"decision": "sign", "csrf": "guess"})
    assert forged.status == 403 and "code=" not in forged.url
    await page.get_by_role("button", name="Cancel", exact=True).click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    assert parse_qs(urlsplit(page.url).query) == {"error": ["access_denied"], "state": [state]}
    await page.context.close()
    row = await oauth2_row(site, credential_id)
    assert (row["status"], row["error"], row["code_hash"]) == ("denied", "cancelled", None)
    await unused(site, credential_id)


async def test_several_hashes_are_shown_and_signed_once_each(
    site: Site, rp: Rp, browser: Browser, tmp_path: Path
) -> None:
    token = await alice_token(site)
    credential_id = await new_credential(site, token)
    (leaf, _, _) = await credential_chain(site, token, credential_id)
    documents = [b"offer", b"terms and conditions" * 50, b"data processing agreement"]
    digests = [hashlib.sha256(d).digest() for d in documents]
    verifier, challenge = pkce()
    url, state = authorize_url(site, rp, credential_id, digests, challenge)
    page = await to_consent(browser, site, url)
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        f"{RP_NAME} asks you to authorise 3 signatures"
    )
    rows = page.locator("#hashes tbody tr")
    await expect(rows).to_have_count(3)
    for n, d in enumerate(digests):
        await expect(rows.nth(n)).to_contain_text(d.hex())
    code = await approve(page, rp, state)
    status, issued = await redeem(site, rp, code, verifier)
    assert status == 200, issued
    # A subset is more than nothing but not what was authorised: refused, nothing signed.
    status, body = await sign_hash(site, issued["access_token"], credential_id, digests[:2])
    assert status == 400 and "signatures" not in body, body
    await unused(site, credential_id)
    status, body = await sign_hash(site, issued["access_token"], credential_id, digests)
    assert status == 200 and len(body["signatures"]) == 3, body
    pem = leaf.public_bytes(Encoding.PEM)
    (tmp_path / "leaf.pem").write_bytes(pem)
    for n, (document, signature) in enumerate(zip(documents, body["signatures"], strict=True)):
        (tmp_path / f"doc{n}").write_bytes(document)
        (tmp_path / f"doc{n}.sig").write_bytes(base64.b64decode(signature))
        done = openssl_verify_signature(
            tmp_path / "leaf.pem", tmp_path / f"doc{n}.sig", tmp_path / f"doc{n}", "sha256"
        )
        assert done.returncode == 0 and "Verified OK" in done.stdout, done.stderr
