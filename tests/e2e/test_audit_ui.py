"""The auditor web UI through a real browser and the real IdP login form: search, detail,
exports (checked against the records this test made), role refusal, login-flow refusals and
logout. Screenshots go to tests/e2e/artifacts/ (gitignored); their paths are printed."""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import AuditSite
from tests.support.idp import DEMO_PASSWORDS, DEMO_SECRETS
from tests.support.service import api_headers
from tests.support.signed_note import verify_note_independently

SESSION_COOKIE = "qes-audit-session"


async def sign(site: AuditSite, token: str, *data: bytes) -> dict[str, Any]:
    body = {
        "hash_algorithm": "sha256",
        "hashes": [base64.b64encode(hashlib.sha256(d).digest()).decode() for d in data],
        "format": "cades",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{site.url}/api/v1/signatures", json=body, headers=api_headers(token)) as r,
    ):
        assert r.status == 201, await r.text()
        result: dict[str, Any] = await r.json()
        return result


async def after_this_second() -> str:
    """A UTC start time (form format) before which no record of this test exists."""
    now = datetime.now(UTC)
    start = now.replace(microsecond=0) + timedelta(seconds=1)
    await asyncio.sleep((start - now).total_seconds())
    return start.strftime("%Y-%m-%dT%H:%M:%S")


async def log_in(page: Page, site: AuditSite, user: str, path: str = "/audit") -> None:
    """Through the IdP's own login form, as a person would."""
    await page.goto(site.url + path)
    assert page.url.startswith(site.idp.issuer), page.url
    await page.get_by_label("Username").fill(user)
    await page.get_by_label("Password").fill(DEMO_PASSWORDS[user])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{site.url}/audit**")


async def session_cookie(context: BrowserContext) -> str | None:
    for c in await context.cookies():
        if c["name"] == SESSION_COOKIE:
            return c["value"]
    return None


async def result_serials(page: Page) -> set[str]:
    cells = page.locator("#results tbody tr td:first-child a")
    return {s.strip() for s in await cells.all_inner_texts()}


async def search(page: Page, **fields: str) -> None:
    await page.get_by_role("link", name="Clear").click()
    for label, value in fields.items():
        if label == "Outcome":
            await page.get_by_label(label).select_option(value)
        else:
            await page.get_by_label(label).fill(value)
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_load_state()


def shot(path: Path) -> Path:
    print(f"screenshot: {path}")
    return path


async def test_auditor_searches_opens_a_record_and_exports(
    audit_site: AuditSite, browser: Browser, artifacts: Path
) -> None:
    idp = audit_site.idp
    batch = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    alice = await idp.user_token("alice", DEMO_PASSWORDS["alice"], "demo-web")
    since = await after_this_second()
    one = await sign(audit_site, batch, b"invoice-1")
    two = await sign(audit_site, batch, b"invoice-2", b"invoice-3")
    mine = await sign(audit_site, alice, b"contract")
    batch_serials = {one["serial"], two["serial"]}

    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    await log_in(page, audit_site, "carol")
    await expect(page.get_by_role("heading", name="Signing records")).to_be_visible()
    await expect(page.get_by_text("Signed in as")).to_contain_text("Carol Auditor")

    await search(page, **{"Identity (token subject)": "demo-batch", "From (UTC)": since})
    assert await result_serials(page) == batch_serials
    await page.screenshot(path=shot(artifacts / "search-by-subject.png"), full_page=True)
    await search(page, **{"Identity (token subject)": "alice", "From (UTC)": since})
    assert await result_serials(page) == {mine["serial"]}
    await search(page, **{"Certificate serial (hex)": two["serial"]})
    assert await result_serials(page) == {two["serial"]}
    await search(page, **{"Outcome": "completed", "From (UTC)": since})
    assert await result_serials(page) == {*batch_serials, mine["serial"]}
    await search(page, **{"Outcome": "failed", "From (UTC)": since})
    await expect(page.locator("#no-results")).to_be_visible()
    digest_hex = hashlib.sha256(b"invoice-3").hexdigest()
    await search(page, **{"Signed digest (hex or base64)": digest_hex})
    assert await result_serials(page) == {two["serial"]}
    await search(page, **{"Name in the certificate subject": "alice example"})
    assert mine["serial"] in await result_serials(page)
    await search(page, **{"E-mail (in the certificate)": "ALICE@example.com", "From (UTC)": since})
    assert await result_serials(page) == {mine["serial"]}

    await search(page, **{"From (UTC)": since})
    assert await result_serials(page) == {*batch_serials, mine["serial"]}
    await page.screenshot(path=shot(artifacts / "search-results.png"), full_page=True)
    exported = {}
    for fmt, label in (("jsonl", "Export JSON Lines"), ("csv", "Export CSV")):
        async with page.expect_download() as info:
            await page.get_by_role("link", name=label).click()
        exported[fmt] = Path(await (await info.value).path()).read_bytes()
    lines = [json.loads(line) for line in exported["jsonl"].decode().splitlines()]
    assert {r["serial"] for r in lines} == {*batch_serials, mine["serial"]}
    assert all(r["status"] == "completed" and r["key_destroyed"] for r in lines)
    assert next(r for r in lines if r["serial"] == two["serial"])["digests"] == [
        hashlib.sha256(b"invoice-2").hexdigest(),
        digest_hex,
    ]
    rows = list(csv.DictReader(io.StringIO(exported["csv"].decode())))
    assert {r["serial"] for r in rows} == {*batch_serials, mine["serial"]}
    assert {r["subject"] for r in rows} == {"demo-batch", "alice"}

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{audit_site.url}/api/v1/trust-bundle") as r,
    ):
        log_bundle = (await r.json())["log"]
    log_origin = log_bundle["origin"]
    spki = base64.b64decode(log_bundle["verifier_key"].split("+", 2)[2])[1:]
    log_key = serialization.load_der_public_key(spki)
    assert isinstance(log_key, ec.EllipticCurvePublicKey)
    manifests = page.get_by_role("link", name="manifest")
    for index, fmt in enumerate(("jsonl", "csv")):
        async with page.expect_download() as info:
            await manifests.nth(index).click()
        manifest = json.loads(Path(await (await info.value).path()).read_text())
        assert manifest["format"] == fmt and manifest["rows"] == 3
        assert manifest["sha256"] == hashlib.sha256(exported[fmt]).hexdigest()
        # the form's value as the browser sent it: datetime-local drops ":00" seconds
        assert list(manifest["filters"]) == ["since"]
        assert datetime.fromisoformat(manifest["filters"]["since"]) == datetime.fromisoformat(since)
        checkpoint = manifest["checkpoint"]
        assert checkpoint["size"] >= 3, "the log holds at least this test's three records"
        body = f"\n{checkpoint['size']}\n{checkpoint['root_hash']}\n"
        assert body in checkpoint["note"] and "\n\n\u2014 " in checkpoint["note"]
        # Signed by the log key as a C2SP note "<origin>/export" (checked from the spec text).
        text = verify_note_independently(manifest["signed_note"], log_key, log_origin)
        assert text.split("\n")[0] == log_origin + "/export"
        assert json.loads(text.split("\n")[1]) == {
            k: v for k, v in manifest.items() if k != "signed_note"
        }

    await page.get_by_role("link", name=two["serial"]).click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(two["serial"])
    evidence = page.locator("#key-evidence tbody")
    for flag in ("always_sensitive", "never_extractable", "local", "sensitive"):
        row = evidence.get_by_role("row", name=flag, exact=False).filter(
            has=page.get_by_role("rowheader", name=flag, exact=True)
        )
        await expect(row.get_by_role("cell")).to_have_text(["true", "yes"])
    for flag in ("extractable", "token"):
        row = evidence.get_by_role("row").filter(
            has=page.get_by_role("rowheader", name=flag, exact=True)
        )
        await expect(row.get_by_role("cell")).to_have_text(["false", "yes"])
    await expect(page.locator("#destruction-summary")).to_have_text(
        "Destroyed and confirmed absent"
    )
    await expect(
        page.locator("#destruction").get_by_role("row", name="confirmed_absent")
    ).to_contain_text("true")
    await expect(page.locator("#digests tbody tr")).to_have_count(2)
    await expect(page.locator("#digests")).to_contain_text(digest_hex)
    await expect(page.locator("#digests tbody tr").first).to_contain_text(" UTC")
    await expect(page.locator("#digests tbody tr").last).to_contain_text(" UTC")
    await page.screenshot(path=shot(artifacts / "record-detail.png"), full_page=True)
    await context.close()


async def test_refused_requests_are_found_with_outcome_refused(
    audit_site: AuditSite, browser: Browser, artifacts: Path
) -> None:
    """A policy refusal (alice, a profile she may not use) and a refusal before
    authentication (a token that is not a JWT) are log entries the search shows as refused;
    by identity only alice's, found through the subject index."""
    alice = await audit_site.idp.user_token("alice", DEMO_PASSWORDS["alice"], "demo-web")
    since = await after_this_second()
    body = {"hash_algorithm": "sha256", "hashes": [base64.b64encode(b"d" * 32).decode()]}
    async with aiohttp.ClientSession() as http:
        for token, extra, status in (
            (alice, {"profile": "no-such-profile"}, 403),
            ("not-a-jwt", {}, 401),
        ):
            async with http.post(
                f"{audit_site.url}/api/v1/signatures",
                json={**body, **extra},
                headers=api_headers(token),
            ) as r:
                assert r.status == status, await r.text()

    context = await browser.new_context()
    page = await context.new_page()
    await log_in(page, audit_site, "carol")
    await search(page, **{"Outcome": "refused", "From (UTC)": since})
    rows = page.locator("#refusals tbody tr")
    await expect(rows).to_have_count(2)
    texts = await rows.all_inner_texts()
    assert "token.malformed" in texts[0] and "not authenticated" in texts[0]
    assert "profile-not-allowed" in texts[1] and "no-such-profile" in texts[1]
    await page.screenshot(path=shot(artifacts / "search-refused.png"), full_page=True)
    await search(
        page, **{"Outcome": "refused", "Identity (token subject)": "alice", "From (UTC)": since}
    )
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("alice")
    await expect(rows.first).to_contain_text("profile-not-allowed")
    await search(page, **{"Outcome": "refused", "Relying party (client id)": "demo-web"})
    await expect(page.get_by_role("alert")).to_contain_text("Outcome refused")
    await context.close()


async def test_a_person_without_the_auditor_role_gets_403(
    audit_site: AuditSite, browser: Browser, artifacts: Path
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{audit_site.url}/audit")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(DEMO_PASSWORDS["alice"])
    async with page.expect_response(lambda r: "/audit/callback" in r.url) as info:
        await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()
    assert (await info.value).status == 403
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "This account does not have the auditor role"
    )
    assert await session_cookie(context) is None
    await page.screenshot(path=shot(artifacts / "not-an-auditor.png"), full_page=True)
    await context.close()


async def test_without_a_session_the_browser_is_sent_to_login_and_back(
    audit_site: AuditSite, browser: Browser
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    response = await page.goto(f"{audit_site.url}/audit/records/00ff?x=1")
    assert response is not None and page.url.startswith(audit_site.idp.issuer)
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await page.get_by_label("Username").fill("carol")
    await page.get_by_label("Password").fill(DEMO_PASSWORDS["carol"])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{audit_site.url}/audit/records/00ff?x=1")
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "No certificate with serial 00ff"
    )
    async with aiohttp.ClientSession() as http:
        for path in ("/audit", "/audit/export.csv", "/audit/manifest.jsonl.json"):
            async with http.get(audit_site.url + path, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"].startswith("/audit/login?next=")
    await context.close()


async def test_a_forged_or_foreign_state_is_refused(
    audit_site: AuditSite, browser: Browser
) -> None:
    victim = await browser.new_context()
    page = await victim.new_page()
    await page.goto(f"{audit_site.url}/audit")
    assert page.url.startswith(audit_site.idp.issuer)
    forged = await page.goto(f"{audit_site.url}/audit/callback?code=x&state=forged")
    assert forged is not None and forged.status == 400
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "The login could not be completed"
    )
    assert await session_cookie(victim) is None

    # A real login's state, taken to another browser (login CSRF, RFC 6749 §10.12): refused,
    # because that browser holds no flow cookie for it.
    attacker = await browser.new_context()
    a_page = await attacker.new_page()
    seen: list[str] = []
    a_page.on("request", lambda req: seen.append(req.url))
    await a_page.goto(f"{audit_site.url}/audit")
    authorize = next(u for u in seen if "/auth?" in u or "/authorize" in u.split("?")[0])
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    foreign = await page.goto(f"{audit_site.url}/audit/callback?code=x&state={state}")
    assert foreign is not None and foreign.status == 400
    assert await session_cookie(victim) is None
    await victim.close()
    await attacker.close()


async def test_logout_needs_its_csrf_token_and_ends_the_session(
    audit_site: AuditSite, browser: Browser
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await log_in(page, audit_site, "carol")
    cookie = await session_cookie(context)
    assert cookie
    jar = {SESSION_COOKIE: cookie}
    async with aiohttp.ClientSession(cookies=jar) as http:
        async with http.post(
            f"{audit_site.url}/audit/logout", data={"csrf": "wrong"}, allow_redirects=False
        ) as r:
            assert r.status == 403
        async with http.get(f"{audit_site.url}/audit", allow_redirects=False) as r:
            assert r.status == 200, "a refused logout must leave the session alone"

    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url(f"{audit_site.url}/audit/logged-out")
    await expect(page.get_by_role("heading", level=1)).to_have_text("You are logged out")
    async with (
        aiohttp.ClientSession(cookies=jar) as http,
        http.get(f"{audit_site.url}/audit", allow_redirects=False) as r,
    ):
        assert r.status == 303 and r.headers["Location"].startswith("/audit/login")
    await context.close()


async def test_an_idle_session_expires(audit_site: AuditSite, browser: Browser) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await log_in(page, audit_site, "carol")
    jar = {SESSION_COOKIE: await session_cookie(context) or ""}
    async with aiohttp.ClientSession(cookies=jar) as http:
        audit_site.clock.advance(29 * 60)
        async with http.get(f"{audit_site.url}/audit", allow_redirects=False) as r:
            assert r.status == 200
        audit_site.clock.advance(31 * 60)
        async with http.get(f"{audit_site.url}/audit", allow_redirects=False) as r:
            assert r.status == 303
    await context.close()


async def test_bad_input_gets_an_html_page_with_the_field_named(
    audit_site: AuditSite, browser: Browser
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await log_in(page, audit_site, "carol")
    bad = await page.goto(f"{audit_site.url}/audit?status=bogus&subject=x")
    assert bad is not None and bad.status == 400
    await expect(page.get_by_role("alert")).to_have_text(
        "Outcome: choose issued, completed, failed or refused."
    )
    await expect(page.get_by_label("Identity (token subject)")).to_have_value("x")
    assert "default-src 'none'" in bad.headers["content-security-policy"]
    jar = {SESSION_COOKIE: await session_cookie(context) or ""}
    async with (
        aiohttp.ClientSession(cookies=jar) as http,
        http.get(f"{audit_site.url}/audit/export.csv?digest=zz", allow_redirects=False) as r,
    ):
        assert r.status == 400 and r.content_type == "text/html"
        assert "Digest: give a SHA-256/384/512 digest" in await r.text()
    await context.close()
