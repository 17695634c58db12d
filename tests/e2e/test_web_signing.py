"""Web apps send a person to sign (issue 4), in Debian's Chromium through the real IdP login.

A relying party registered with ``qes client add`` creates signing requests over the API; the
browser logs in at the dev IdP (``alice``/``demo-alice``), sees the consent page and signs or
cancels; the RP fetches the result and OpenSSL verifies it. The attacks at the end must each
be refused with nothing signed: no certificate issued for the request, no activation consumed.
Screenshots go to tests/e2e/artifacts/ (gitignored); their paths are printed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from playwright.async_api import Browser, Page, expect

from ca.logentry import entry_fields
from tests.support.idp import (
    DEMO_CLIENTS,
    DEMO_PASSWORDS,
    DEMO_SECRETS,
    DEMO_USERS,
    FakeClock,
    RunningIdp,
    start_idp,
    with_redirect_uri,
)
from tests.support.pdfs import multi_page_pdf
from tests.support.rp import Rp, parse_added
from tests.support.service import DEV_CONFIG, ROOT, free_port, service_env
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_verify_chain, openssl_verify_signature, run

PWD = "urn:qes-signer:dev-idp:pwd"  # the dev IdP's password level
MFA = "urn:qes-signer:dev-idp:mfa"  # password and one-time code, when acr_values asks for it
RP_NAME = "Demo Contracts GmbH"
PYHANKO = str(Path(sys.executable).parent / "pyhanko")


@dataclass
class Site:
    url: str
    idp: RunningIdp
    clock: FakeClock
    database_url: str
    #: The client side of the signer's ``[server.tls]`` (trusting the test CA); None: http.
    tls: ssl.SSLContext | None = None

    def http(self) -> aiohttp.ClientSession:
        """A session for the RP's API calls to this site."""
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.tls or True))


@pytest.fixture(scope="module")
def sign_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def sign_idp(tmp_path_factory: pytest.TempPathFactory, sign_port: int) -> Iterator[RunningIdp]:
    """A dev IdP whose ``demo-signer-web`` client knows this port, and where bob's e-mail is
    verified too: he is a valid signer in general, only not the expected one."""
    uri = f"http://127.0.0.1:{sign_port}/sign/callback"
    clients = with_redirect_uri(DEMO_CLIENTS, "demo-signer-web", uri)
    users = [json.loads(json.dumps(u)) for u in DEMO_USERS]
    for u in users:
        if u["username"] == "bob":
            u["claims"]["email_verified"] = True
    with start_idp(tmp_path_factory.mktemp("sign-idp"), clients=clients, users=users) as idp:
        yield idp


@pytest.fixture(scope="module")
def sign_env(
    softhsm_token: SoftHsmToken,
    database_url: str,
    sign_idp: RunningIdp,
    sign_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    return service_env(
        token=softhsm_token,
        database_url=database_url,
        idp=sign_idp,
        port=sign_port,
        data_dir=tmp_path_factory.mktemp("qes-sign-data"),
        QES__WEB_SIGNING__CLIENT_ID="demo-signer-web",
        QES__WEB_SIGNING__ISSUER="demo_people",
        QES__WEB_SIGNING__ACR_LEVELS=json.dumps([PWD, MFA]),
        QES_WEB_SIGNING_CLIENT_SECRET=DEMO_SECRETS["demo-signer-web"],
    )


@pytest.fixture(scope="module")
def rp_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def rp(sign_env: dict[str, str], rp_port: int, ca_ready: None) -> Rp:
    """Registered through the real command line, as an operator would."""
    uri = f"http://127.0.0.1:{rp_port}/signed"
    done = subprocess.run(
        [sys.executable, "-m", "signer", "client", "add", RP_NAME, "--redirect-uri", uri,
         "--config", str(DEV_CONFIG)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **sign_env}, check=False,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return parse_added(done.stdout, uri)


@pytest.fixture
async def rp_app(rp_port: int) -> AsyncIterator[None]:
    """The RP's landing page: the browser must arrive somewhere real."""

    async def signed(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>RP</title><h1>Back at the RP</h1>",
                            content_type="text/html")  # fmt: skip

    app = web.Application()
    app.router.add_get("/signed", signed)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rp_port).start()
    yield
    await runner.cleanup()


@pytest.fixture
async def site(
    sign_env: dict[str, str],
    ca_ready: None,
    sign_idp: RunningIdp,
    sign_port: int,
    database_url: str,
    rp_app: None,
) -> AsyncIterator[Site]:
    from signer.app import create_app
    from signer.http.kit.state import SERVICES
    from signer.settings.config import load_settings

    clock = FakeClock()
    app = create_app(load_settings(DEV_CONFIG, env=sign_env), clock=clock)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", sign_port).start()
        yield Site(f"http://127.0.0.1:{sign_port}", sign_idp, clock, database_url)
        services = app[SERVICES]
        leftover = await services.hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
        assert leftover == [], f"session objects left in the HSM after the test: {leftover}"
        assert services.hsm.live_ephemeral_keys() == 0
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ helpers


def documents(*contents: bytes) -> list[dict[str, str]]:
    return [
        {"label": f"Document {i + 1}.pdf", "digest": base64.b64encode(sha256(c)).decode()}
        for i, c in enumerate(contents)
    ]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def create(site: Site, rp: Rp, docs: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    body = {
        "documents": docs,
        "format": "cades",
        "redirect_uri": rp.redirect_uri,
        "state": f"rp-state-{uuid.uuid4().hex}",
        **extra,
    }
    async with (
        site.http() as http,
        http.post(f"{site.url}/api/v1/signing-requests", json=body, headers=rp.auth) as r,
    ):
        assert r.status == 201, await r.text()
        created: dict[str, Any] = await r.json()
        created["state"] = body["state"]
        return created


async def fetch(site: Site, rp: Rp, request_id: str) -> dict[str, Any]:
    async with (
        site.http() as http,
        http.get(f"{site.url}/api/v1/signing-requests/{request_id}", headers=rp.auth) as r,
    ):
        assert r.status == 200, await r.text()
        result: dict[str, Any] = await r.json()
        return result


async def idp_login(page: Page, site: Site, user: str) -> None:
    assert page.url.startswith(site.idp.issuer), page.url
    await page.get_by_label("Username").fill(user)
    await page.get_by_label("Password").fill(DEMO_PASSWORDS[user])
    await page.get_by_role("button", name="Sign in").click()
    try:
        await page.wait_for_url(f"{site.url}/sign/**", timeout=15_000)
    except Exception:
        print(f"login did not come back: at {page.url}\n{(await page.content())[:1500]}")
        raise
    await page.wait_for_load_state()


async def to_consent(browser: Browser, site: Site, sign_url: str, user: str = "alice") -> Page:
    page = await (await browser.new_context()).new_page()
    await page.goto(sign_url)
    await idp_login(page, site, user)
    await page.wait_for_url(f"{site.url}/sign/*/consent")
    return page


async def refusal_reasons(site: Site, request_id: str) -> list[str]:
    """The reasons of the log's refusal entries for this signing request (``ca.logentry``)."""
    conn = await asyncpg.connect(site.database_url)
    try:
        rows = await conn.fetch("SELECT entry FROM log_entries WHERE kind = 'refusal'")
    finally:
        await conn.close()
    fields = [dict(entry_fields(bytes(r["entry"]))[1]) for r in rows]
    return [f["reason"].decode() for f in fields if f["request_id"] == request_id.encode()]


async def nothing_signed(site: Site, rp: Rp, request_id: str) -> None:
    """No certificate was issued for this RP's request and no activation was consumed."""
    conn = await asyncpg.connect(site.database_url)
    try:
        used = await conn.fetchval(
            "SELECT count(*) FROM signature_activations WHERE request_id=$1 AND consumed_at"
            " IS NOT NULL",
            uuid.UUID(request_id),
        )
        row = await conn.fetchrow(
            "SELECT status, record_serial, result FROM signing_requests WHERE id=$1",
            uuid.UUID(request_id),
        )
    finally:
        await conn.close()
    assert used == 0
    assert row is not None and row["record_serial"] is None and row["result"] is None
    assert row["status"] != "completed"


async def records_of(site: Site, rp: Rp) -> int:
    conn = await asyncpg.connect(site.database_url)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM signing_records WHERE client_id=$1", rp.client_id
        ))  # fmt: skip
    finally:
        await conn.close()


def shot(path: Path) -> Path:
    print(f"screenshot: {path}")
    return path


def back_at_rp(url: str, rp: Rp) -> dict[str, list[str]]:
    assert url.startswith(rp.redirect_uri + "?"), url
    return parse_qs(urlsplit(url).query)


def chain_files(result: dict[str, Any], folder: Path) -> tuple[Path, Path, Path]:
    leaf, issuing, root = x509.load_pem_x509_certificates(result["chain"].encode())
    paths = []
    for name, cert in (("leaf", leaf), ("issuing", issuing), ("root", root)):
        path = folder / f"{name}.pem"
        path.write_bytes(cert.public_bytes(Encoding.PEM))
        paths.append(path)
    return paths[0], paths[1], paths[2]


def verify_raw(signed: dict[str, Any], content: bytes, folder: Path) -> Path:
    """OpenSSL verifies the chain and the raw signature of the one document (and refuses it
    for other content); returns the leaf certificate's path."""
    leaf, issuing, root = chain_files(signed, folder)
    openssl_verify_chain(root, issuing, leaf)
    doc, sig = folder / "doc.bin", folder / "doc.sig"
    doc.write_bytes(content)
    sig.write_bytes(base64.b64decode(signed["documents"][0]["signature"]))
    verified = openssl_verify_signature(leaf, sig, doc, "sha256")
    assert verified.returncode == 0 and "Verified OK" in verified.stdout, verified.stderr
    doc.write_bytes(content + b"x")
    assert openssl_verify_signature(leaf, sig, doc, "sha256").returncode != 0
    return leaf


# ------------------------------------------------------------------ the happy paths


async def test_one_document_signed_in_the_browser_verified_by_openssl(
    site: Site, rp: Rp, browser: Browser, artifacts: Path, tmp_path: Path
) -> None:
    content = b"Employment contract, Alice Example\n" * 40
    created = await create(site, rp, documents(content), format="raw")
    assert created["status"] == "pending" and created["sign_url"].endswith(created["id"])

    page = await to_consent(browser, site, created["sign_url"])
    heading = page.get_by_role("heading", level=1)
    await expect(heading).to_have_text(f"{RP_NAME} asks you to sign 1 document")
    table = page.locator("#documents")
    await expect(table).to_contain_text("Document 1.pdf")
    await expect(table).to_contain_text(hashlib.sha256(content).hexdigest())
    subject = page.locator("#certificate-subject")
    for text in ("Alice Example", "Alice", "Example", "PNODE-1234567890", "DE"):
        await expect(subject).to_contain_text(text)
    await expect(page.locator("#level")).to_have_text("Qualified electronic signature (QES)")
    await expect(page.get_by_text("Signed in as")).to_contain_text("Alice Example")
    await page.screenshot(path=shot(artifacts / "web-signing-consent.png"), full_page=True)

    await page.get_by_role("button", name="Sign", exact=True).click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    query = back_at_rp(page.url, rp)
    assert query == {"id": [created["id"]], "state": [created["state"]]}
    await expect(page.get_by_role("heading", level=1)).to_have_text("Back at the RP")

    result = await fetch(site, rp, created["id"])
    assert result["status"] == "completed" and result["signer"] == {"subject": "alice"}
    signed = result["result"]
    assert [d["label"] for d in signed["documents"]] == ["Document 1.pdf"]
    leaf = verify_raw(signed, content, tmp_path)
    cert = x509.load_pem_x509_certificate(leaf.read_bytes())
    assert "CN=Alice Example" in cert.subject.rfc4514_string()
    assert signed["record_url"].endswith(signed["serial"])
    await page.context.close()


async def test_three_documents_in_one_request_as_cades_verified_by_openssl_cms(
    site: Site, rp: Rp, browser: Browser, tmp_path: Path
) -> None:
    contents = [b"offer", b"terms and conditions" * 100, b"data processing agreement"]
    created = await create(site, rp, documents(*contents), format="cades")
    page = await to_consent(browser, site, created["sign_url"])
    await expect(page.locator("#documents tbody tr")).to_have_count(3)
    await page.get_by_role("button", name="Sign", exact=True).click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    assert back_at_rp(page.url, rp)["id"] == [created["id"]]

    signed = (await fetch(site, rp, created["id"]))["result"]
    assert len(signed["documents"]) == 3
    _, _, root = chain_files(signed, tmp_path)
    for n, (content, doc) in enumerate(zip(contents, signed["documents"], strict=True)):
        assert doc["digest"] == base64.b64encode(sha256(content)).decode()
        sig_path, doc_path = tmp_path / f"d{n}.p7s", tmp_path / f"d{n}.bin"
        sig_path.write_bytes(base64.b64decode(doc["signature"]))
        doc_path.write_bytes(content)
        verify = [
            "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sig_path,
            "-CAfile", root, "-purpose", "any", "-cades", "-out", "/dev/null", "-content",
        ]  # fmt: skip
        done = run(*verify, doc_path)
        assert done.returncode == 0 and "Verification successful" in done.stderr, done.stderr
        doc_path.write_bytes(content + b"!")
        assert run(*verify, doc_path).returncode != 0
    await page.context.close()


async def test_cancel_sends_access_denied_and_signs_nothing(
    site: Site, rp: Rp, browser: Browser
) -> None:
    created = await create(site, rp, documents(b"not today"))
    page = await to_consent(browser, site, created["sign_url"])
    await page.get_by_role("button", name="Cancel").click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    assert back_at_rp(page.url, rp) == {
        "error": ["access_denied"],
        "state": [created["state"]],
    }
    assert (await fetch(site, rp, created["id"]))["status"] == "cancelled"
    await nothing_signed(site, rp, created["id"])
    again = await page.goto(created["sign_url"])
    assert again is not None and again.status == 409
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "This signing request is cancelled"
    )
    await page.context.close()


async def test_an_expired_request_cannot_be_started_or_signed(
    site: Site, rp: Rp, browser: Browser
) -> None:
    late = await create(site, rp, documents(b"too late"))
    page = await to_consent(browser, site, late["sign_url"])  # consent open, then time passes
    unopened = await create(site, rp, documents(b"never opened"))
    site.clock.advance(16 * 60)

    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Sign", exact=True).click()
    refused = await navigation.value
    assert refused is not None and refused.status == 403
    assert page.url.startswith(site.url), "refused: no redirect to the RP with an id"
    await expect(page.get_by_role("alert")).to_contain_text("Nothing was signed")
    await nothing_signed(site, rp, late["id"])

    response = await page.goto(unopened["sign_url"])
    assert response is not None and response.status == 409 and page.url.startswith(site.url)
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "This signing request has expired"
    )
    back = page.get_by_role("link", name="Return to the application")
    href = await back.get_attribute("href")
    assert href is not None
    assert back_at_rp(href, rp) == {"error": ["request_expired"], "state": [unopened["state"]]}
    for created in (late, unopened):
        assert (await fetch(site, rp, created["id"]))["status"] == "expired"
        await nothing_signed(site, rp, created["id"])
    await page.context.close()


# ------------------------------------------------------------------ attacks


async def test_a_forged_or_foreign_state_is_refused(site: Site, rp: Rp, browser: Browser) -> None:
    created = await create(site, rp, documents(b"state"))
    victim = await (await browser.new_context()).new_page()
    await victim.goto(created["sign_url"])
    assert victim.url.startswith(site.idp.issuer)
    forged = await victim.goto(f"{site.url}/sign/callback?code=x&state=forged")
    assert forged is not None and forged.status == 400
    await expect(victim.get_by_role("heading", level=1)).to_have_text(
        "The login could not be completed"
    )

    attacker = await (await browser.new_context()).new_page()
    seen: list[str] = []
    attacker.on("request", lambda req: seen.append(req.url))
    await attacker.goto(created["sign_url"])
    authorize = next(u for u in seen if u.startswith(site.idp.issuer) and "state=" in u)
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    await victim.goto(created["sign_url"])  # the victim has a flow of its own now
    foreign = await victim.goto(f"{site.url}/sign/callback?code=x&state={state}")
    assert foreign is not None and foreign.status == 400
    await nothing_signed(site, rp, created["id"])
    await victim.context.close()
    await attacker.context.close()


async def test_a_replayed_authorization_code_is_refused(
    site: Site, rp: Rp, browser: Browser
) -> None:
    created = await create(site, rp, documents(b"replay"))
    context = await browser.new_context()
    page = await context.new_page()
    callbacks: list[str] = []
    page.on(
        "request", lambda req: callbacks.append(req.url) if "/sign/callback?" in req.url else None
    )
    await page.goto(created["sign_url"])
    await idp_login(page, site, "alice")
    await page.wait_for_url(f"{site.url}/sign/*/consent")
    callbacks = [u for u in callbacks if u.startswith(f"{site.url}/sign/callback?")]
    assert len(callbacks) == 1 and "code=" in callbacks[0]
    await page.get_by_role("button", name="Sign", exact=True).click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    before = await records_of(site, rp)

    replay = await page.goto(callbacks[0])  # same browser, same code and state
    assert replay is not None and replay.status == 400
    other = await (await browser.new_context()).new_page()
    replay = await other.goto(callbacks[0])  # another browser
    assert replay is not None and replay.status == 400
    # An attacker's own flow (its state, its PKCE verifier) with the stolen code: the IdP
    # refuses the code (used, and bound to another code_challenge), so no consent opens.
    second = await create(site, rp, documents(b"replay target"))
    seen: list[str] = []
    other.on("request", lambda req: seen.append(req.url))
    await other.goto(second["sign_url"])
    authorize = next(u for u in seen if u.startswith(site.idp.issuer) and "state=" in u)
    own_state = parse_qs(urlsplit(authorize).query)["state"][0]
    code = parse_qs(urlsplit(callbacks[0]).query)["code"][0]
    injected = await other.goto(f"{site.url}/sign/callback?code={code}&state={own_state}")
    assert injected is not None and injected.status == 400
    await expect(other.get_by_role("heading", level=1)).to_have_text(
        "The login could not be completed"
    )
    await nothing_signed(site, rp, second["id"])
    assert await records_of(site, rp) == before
    result = await fetch(site, rp, created["id"])
    assert result["status"] == "completed" and len(result["result"]["documents"]) == 1
    await context.close()
    await other.context.close()


async def test_open_redirects_are_refused_when_the_request_is_made(site: Site, rp: Rp) -> None:
    parts = urlsplit(rp.redirect_uri)
    bad = [
        "https://evil.example.com/signed",
        rp.redirect_uri + "/more",  # prefix match
        rp.redirect_uri + "x",
        rp.redirect_uri + "?next=https://evil.example.com",
        f"{parts.scheme}://{parts.netloc}/",
        rp.redirect_uri.upper(),
    ]
    async with aiohttp.ClientSession() as http:
        for uri in bad:
            body = {"documents": documents(b"x"), "redirect_uri": uri, "state": "s"}
            async with http.post(
                f"{site.url}/api/v1/signing-requests", json=body, headers=rp.auth
            ) as r:
                problem = await r.json()
                assert r.status == 422, (uri, problem)
                assert problem["type"] == "/problems/redirect-uri-not-registered", problem
                assert r.content_type == "application/problem+json"


async def test_consent_post_without_or_with_a_foreign_csrf_token_is_refused(
    site: Site, rp: Rp, browser: Browser
) -> None:
    created = await create(site, rp, documents(b"csrf"))
    page = await to_consent(browser, site, created["sign_url"])
    other_req = await create(site, rp, documents(b"other"))
    other = await to_consent(browser, site, other_req["sign_url"])
    foreign_token = await other.locator("input[name=csrf]").input_value()
    cookie = next(c for c in await page.context.cookies() if c["name"] == "qes-sign-consent")
    url = f"{site.url}/sign/{created['id']}/consent"
    async with aiohttp.ClientSession(cookies={cookie["name"]: cookie["value"]}) as http:
        for form in ({"decision": "sign"}, {"decision": "sign", "csrf": foreign_token}):
            async with http.post(url, data=form, allow_redirects=False) as r:
                assert r.status == 403, await r.text()
                assert "Nothing was signed" in await r.text()
    # A cross-site form post carries no cookie (SameSite=Lax): refused as well.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url, data={"decision": "sign", "csrf": foreign_token}, allow_redirects=False
        ) as r,
    ):
        assert r.status == 403
    await nothing_signed(site, rp, created["id"])

    await page.get_by_role("button", name="Sign", exact=True).click()  # the real form works
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    assert (await fetch(site, rp, created["id"]))["status"] == "completed"
    await page.context.close()
    await other.context.close()


async def test_a_double_submit_signs_once(site: Site, rp: Rp, browser: Browser) -> None:
    created = await create(site, rp, documents(b"twice"))
    page = await to_consent(browser, site, created["sign_url"])
    token = await page.locator("input[name=csrf]").input_value()
    cookie = next(c for c in await page.context.cookies() if c["name"] == "qes-sign-consent")
    before = await records_of(site, rp)
    url = f"{site.url}/sign/{created['id']}/consent"
    async with aiohttp.ClientSession(cookies={cookie["name"]: cookie["value"]}) as http:

        async def submit() -> tuple[int, str]:
            form = {"decision": "sign", "csrf": token}
            async with http.post(url, data=form, allow_redirects=False) as r:
                return r.status, r.headers.get("Location", "")

        answers = await asyncio.gather(*(submit() for _ in range(4)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [303, 403, 403, 403], answers
    location = next(loc for status, loc in answers if status == 303)
    assert back_at_rp(location, rp)["id"] == [created["id"]]
    assert await records_of(site, rp) == before + 1
    conn = await asyncpg.connect(site.database_url)
    try:
        made = await conn.fetchval(
            "SELECT count(*) FROM signature_activations WHERE request_id=$1",
            uuid.UUID(created["id"]),
        )
    finally:
        await conn.close()
    assert made == 1
    await page.context.close()


@pytest.mark.parametrize("expected", [{"email": "alice@example.com"}, {"subject": "alice"}])
async def test_only_the_expected_signer_can_complete_the_request(
    site: Site, rp: Rp, browser: Browser, expected: dict[str, str]
) -> None:
    created = await create(site, rp, documents(b"for alice only"), signer=expected)
    page = await (await browser.new_context()).new_page()
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url))
    await page.goto(created["sign_url"])
    authorize = next(u for u in seen if u.startswith(site.idp.issuer) and "state=" in u)
    hint = parse_qs(urlsplit(authorize).query).get("login_hint")
    assert hint == (["alice@example.com"] if "email" in expected else None)
    await idp_login(page, site, "bob")
    assert page.url.startswith(f"{site.url}/sign/callback")
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "This signing request is meant for another person"
    )
    consent = await page.goto(f"{site.url}/sign/{created['id']}/consent")
    assert consent is not None and consent.status == 403
    await nothing_signed(site, rp, created["id"])
    assert (await fetch(site, rp, created["id"]))["status"] == "pending"
    assert await refusal_reasons(site, created["id"]) == ["wrong-signer"]  # in the log (issue 5)
    await page.context.close()

    alice = await to_consent(browser, site, created["sign_url"], "alice")  # still signable
    await alice.get_by_role("button", name="Sign", exact=True).click()
    await alice.wait_for_url(f"{rp.redirect_uri}?**")
    assert (await fetch(site, rp, created["id"]))["signer"] == {"subject": "alice"}
    await alice.context.close()


async def test_a_login_below_the_required_acr_is_refused(
    site: Site, rp: Rp, browser: Browser
) -> None:
    """A request that requires ``MFA`` asks for it with ``acr_values``; carol has no second
    factor at the dev IdP, which (acr_values being voluntary) asserts the password level
    (``PWD``) for her: the signer refuses that weaker login. The step-up itself is in
    test_web_signing_step_up.py."""
    created = await create(site, rp, documents(b"needs mfa"), acr=MFA)
    page = await (await browser.new_context()).new_page()
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url))
    await page.goto(created["sign_url"])
    authorize = next(u for u in seen if u.startswith(site.idp.issuer) and "state=" in u)
    sent = parse_qs(urlsplit(authorize).query)
    assert sent["acr_values"] == [MFA] and sent["prompt"] == ["login"] and "max_age" in sent
    await idp_login(page, site, "carol")
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "The login does not reach the assurance level this request requires"
    )
    await nothing_signed(site, rp, created["id"])
    assert (await fetch(site, rp, created["id"]))["status"] == "pending"
    assert await refusal_reasons(site, created["id"]) == ["assurance-too-low"]
    await page.context.close()

    fine = await create(site, rp, documents(b"password is enough"), acr=PWD)
    ok = await to_consent(browser, site, fine["sign_url"])
    await ok.get_by_role("button", name="Sign", exact=True).click()
    await ok.wait_for_url(f"{rp.redirect_uri}?**")
    assert (await fetch(site, rp, fine["id"]))["status"] == "completed"
    await ok.context.close()


# ------------------------------------------------------------------ PDFs (PAdES)


async def test_a_pdf_is_prepared_shown_signed_and_validated_by_pyhanko(
    site: Site, rp: Rp, browser: Browser, tmp_path: Path
) -> None:
    pdf = multi_page_pdf(2)
    docs = [{"label": "Lease.pdf", "pdf": base64.b64encode(pdf).decode()}]
    created = await create(site, rp, docs, format="pades")
    page = await to_consent(browser, site, created["sign_url"])
    table = page.locator("#documents")
    await expect(table).to_contain_text(f"PDF file SHA-256: {hashlib.sha256(pdf).hexdigest()}")
    link = table.get_by_role("link", name="Lease.pdf")
    href = await link.get_attribute("href")
    assert href == f"/sign/{created['id']}/documents/1"
    opened = await page.context.request.get(site.url + href)
    assert opened.status == 200 and await opened.body() == pdf
    async with aiohttp.ClientSession() as http, http.get(site.url + href) as r:
        assert r.status == 403  # no consent session, no document
    await page.get_by_role("button", name="Sign", exact=True).click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")

    signed = (await fetch(site, rp, created["id"]))["result"]
    url = signed["documents"][0]["signed_pdf_url"]
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 401
        async with http.get(url, headers=rp.auth) as r:
            assert r.status == 200 and r.content_type == "application/pdf"
            signed_pdf = await r.read()
    assert signed_pdf.startswith(pdf[:8]) and len(signed_pdf) > len(pdf)
    _, _, root = chain_files(signed, tmp_path)
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed_pdf)
    done = run(
        PYHANKO, "sign", "validate", "--trust", root, "--trust-replace",
        "--no-revocation-check", "--pretty-print", path,
    )  # fmt: skip
    assert "The signature is judged VALID." in done.stdout, done.stdout + done.stderr
    assert "Alice Example" in done.stdout
    await page.context.close()


async def test_a_pdf_comes_back_at_the_level_asked(
    site: Site, rp: Rp, browser: Browser, tmp_path: Path
) -> None:
    """``"level": "b-lta"``: the signed PDF has the DSS and a document time-stamp
    (EN 319 142-1 §6.3) and validates from its own content with revocation checking on."""
    from signer.formats.ltv import document_time_stamps

    docs = [{"label": "Lease.pdf", "pdf": base64.b64encode(multi_page_pdf(2)).decode()}]
    created = await create(site, rp, docs, format="pades", level="b-lta")
    page = await to_consent(browser, site, created["sign_url"])
    await page.get_by_role("button", name="Sign", exact=True).click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    signed = (await fetch(site, rp, created["id"]))["result"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(signed["documents"][0]["signed_pdf_url"], headers=rp.auth) as r,
    ):
        assert r.status == 200
        signed_pdf = await r.read()
    assert len(document_time_stamps(signed_pdf)) == 1
    _, _, root = chain_files(signed, tmp_path)
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed_pdf)
    done = run(
        PYHANKO, "sign", "adesverify", "--trust", root, "--trust-replace",
        "--executive-summary", path,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith(":VALID"), done.stdout
    await page.context.close()


# ------------------------------------------------------------------ the example RP app


def _load_example_rp() -> Any:
    import importlib.util

    path = ROOT / "deploy" / "example-rp" / "rp.py"
    spec = importlib.util.spec_from_file_location("example_rp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["text", "pdf"])
async def test_the_example_rp_app_end_to_end(
    site: Site, sign_env: dict[str, str], browser: Browser, tmp_path: Path, kind: str
) -> None:
    """deploy/example-rp/rp.py as the web app: upload, sign at the signer, come back. A text
    file gets a detached CAdES signature (checked by OpenSSL), a PDF comes back signed
    (PAdES, checked by pyHanko)."""
    example = _load_example_rp()
    port = free_port()
    own = f"http://127.0.0.1:{port}"
    done = subprocess.run(
        [sys.executable, "-m", "signer", "client", "add", "Example RP", "--redirect-uri",
         f"{own}/signed", "--config", str(DEV_CONFIG)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **sign_env}, check=False,
        timeout=120,
    )  # fmt: skip
    client_id = re.search(r"client_id: (\S+)", done.stdout)
    secret = re.search(r"client_secret: (\S+)", done.stdout)
    assert done.returncode == 0 and client_id and secret, done.stderr
    config = example.Config(site.url, own, client_id[1], secret[1])
    runner = web.AppRunner(example.make_app(config))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        content = multi_page_pdf(2) if kind == "pdf" else b"Quarterly report\n" * 30
        upload = tmp_path / ("report.pdf" if kind == "pdf" else "report.txt")
        upload.write_bytes(content)
        page = await (await browser.new_context()).new_page()
        await page.goto(own)
        await page.get_by_label("File").set_input_files(upload)
        await page.get_by_role("button", name="Sign with qes-signer").click()
        await page.wait_for_url(f"{site.idp.issuer}/**")
        await idp_login(page, site, "alice")
        await page.wait_for_url(f"{site.url}/sign/*/consent")
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            "Example RP asks you to sign 1 document"
        )
        await expect(page.locator("#documents")).to_contain_text(upload.name)
        await page.get_by_role("button", name="Sign", exact=True).click()
        await page.wait_for_url(f"{own}/signed?**")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Signed")
        download_href = await page.locator("#pdf" if kind == "pdf" else "#p7s").get_attribute(
            "href"
        )
        chain_href = await page.locator("#chain").get_attribute("href")
        await page.context.close()
    finally:
        await runner.cleanup()
    assert download_href and chain_href
    if kind == "pdf":
        chain = x509.load_pem_x509_certificates(base64.b64decode(chain_href.split(",", 1)[1]))
        root = tmp_path / "root.pem"
        root.write_bytes(chain[-1].public_bytes(Encoding.PEM))
        signed_pdf = tmp_path / "signed.pdf"
        signed_pdf.write_bytes(base64.b64decode(download_href.split(",", 1)[1]))
        validated = run(
            PYHANKO, "sign", "validate", "--trust", root, "--trust-replace",
            "--no-revocation-check", "--executive-summary", signed_pdf,
        )  # fmt: skip
        assert validated.returncode == 0, validated.stdout + validated.stderr
        assert validated.stdout.strip().endswith(":VALID"), validated.stdout
        return
    p7s_href = download_href
    sig_path, doc_path, chain_path = tmp_path / "s.p7s", tmp_path / "doc", tmp_path / "c.pem"
    sig_path.write_bytes(base64.b64decode(p7s_href.split(",", 1)[1]))
    doc_path.write_bytes(content)
    chain_path.write_bytes(base64.b64decode(chain_href.split(",", 1)[1]))
    root = tmp_path / "root.pem"
    root.write_bytes(
        x509.load_pem_x509_certificates(chain_path.read_bytes())[-1].public_bytes(Encoding.PEM)
    )
    verified = run(
        "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sig_path,
        "-CAfile", root, "-purpose", "any", "-cades", "-out", "/dev/null", "-content", doc_path,
    )  # fmt: skip
    assert verified.returncode == 0 and "Verification successful" in verified.stderr
