"""Approvers in a real browser (Debian's Chromium via Playwright): two members of
``seal-approvers`` log in at the real IdP login page, see the seal job's request (who asks,
why, every digest with its label, the commitment, the expiry), approve it, and the requester
collects the signature, which OpenSSL verifies against its chain. A non-member sees nothing.
The policy is the development policy file (deploy/dev/policy.toml). Screenshots go to
tests/e2e/artifacts/ (gitignored); their paths are printed."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from playwright.async_api import Browser, Page, expect

from tests.support.approvals import SEAL_CLIENT, commitment
from tests.support.idp import (
    DEMO_CLIENTS,
    DEMO_PASSWORDS,
    DEMO_SECRETS,
    RunningIdp,
    start_idp,
    with_redirect_uri,
)
from tests.support.service import DEV_CONFIG, api_headers, free_port, service_env
from tests.support.softhsm import SoftHsmToken

UI_CLIENT = "demo-approvals-ui"


@pytest.fixture(scope="module")
def approvals_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def approvals_idp(
    tmp_path_factory: pytest.TempPathFactory, approvals_port: int
) -> Iterator[RunningIdp]:
    uri = f"http://127.0.0.1:{approvals_port}/approvals/callback"
    clients = with_redirect_uri(DEMO_CLIENTS, UI_CLIENT, uri)
    with start_idp(tmp_path_factory.mktemp("approvals-idp"), clients=clients) as running:
        yield running


@pytest.fixture
async def approvals_site(
    softhsm_token: SoftHsmToken,
    database_url: str,
    approvals_idp: RunningIdp,
    approvals_port: int,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[str]:
    from signer.app import create_app
    from signer.http.kit.state import SERVICES
    from signer.settings.config import load_settings

    env = service_env(
        token=softhsm_token,
        database_url=database_url,
        idp=approvals_idp,
        port=approvals_port,
        data_dir=tmp_path_factory.mktemp("qes-approvals-data"),
        QES__APPROVALS__UI_CLIENT_ID=UI_CLIENT,
        QES__APPROVALS__UI_ISSUER="demo_people",
        QES_APPROVALS_UI_CLIENT_SECRET=DEMO_SECRETS[UI_CLIENT],
    )
    app = create_app(load_settings(DEV_CONFIG, env=env))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", approvals_port).start()
        yield f"http://127.0.0.1:{approvals_port}"
        services = app[SERVICES]
        leftover = await services.hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
        assert leftover == [], f"session objects left in the HSM after the test: {leftover}"
    finally:
        await runner.cleanup()


def shot(path: Path) -> Path:
    print(f"screenshot: {path}")
    return path


async def log_in(page: Page, site: str, idp: RunningIdp, user: str, path: str) -> None:
    """Through the IdP's own login form, as a person would."""
    await page.goto(site + path)
    assert page.url.startswith(idp.issuer), page.url
    await page.get_by_label("Username").fill(user)
    await page.get_by_label("Password").fill(DEMO_PASSWORDS[user])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{site}/approvals**")


async def api(
    method: str, url: str, token: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, headers=api_headers(token)) as resp,
    ):
        return resp.status, await resp.json()


async def approve_in_browser(
    browser: Browser, site: str, idp: RunningIdp, user: str, held: dict[str, Any], shots: Path
) -> Page:
    context = await browser.new_context()
    page = await context.new_page()
    await log_in(page, site, idp, user, "/approvals")
    await expect(
        page.get_by_role("heading", name="Requests waiting for your approval")
    ).to_be_visible()
    await page.screenshot(path=shot(shots / f"approvals-{user}-list.png"), full_page=True)
    await page.locator(f'a[href="/approvals/{held["id"]}"]').click()
    await expect(page.locator("#reason")).to_have_text("Annual accounts 2026: company seal")
    await expect(page.locator("#commitment")).to_have_text(held["digest_commitment"])
    for doc in held["documents"]:
        digest = base64.b64decode(doc["digest"]).hex()
        row = page.locator("#documents tbody tr", has_text=digest)
        await expect(row).to_contain_text(doc["label"])
    await page.screenshot(path=shot(shots / f"approvals-{user}-detail.png"), full_page=True)
    await page.get_by_role("button", name="Approve these digests").click()
    await expect(page.locator("#message")).to_contain_text("You approved")
    await page.screenshot(path=shot(shots / f"approvals-{user}-approved.png"), full_page=True)
    return page


async def test_two_approvers_approve_in_the_browser_then_the_requester_collects(
    approvals_site: str, approvals_idp: RunningIdp, browser: Browser, artifacts: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    site, idp = approvals_site, approvals_idp
    seal = await idp.client_token(SEAL_CLIENT, DEMO_SECRETS[SEAL_CLIENT])
    documents = [b"balance sheet 2026\n" * 30, b"notes to the accounts\n" * 40]
    digests = [hashlib.sha256(d).digest() for d in documents]
    code, held = await api("POST", f"{site}/api/v1/signatures", seal, {
        "hash_algorithm": "sha256", "hashes": [base64.b64encode(d).decode() for d in digests],
        "format": "cades", "labels": ["Balance sheet.pdf", "Notes.pdf"],
        "reason": "Annual accounts 2026: company seal",
    })  # fmt: skip
    assert code == 202, held
    assert held["digest_commitment"] == commitment(digests)

    first = await approve_in_browser(browser, site, idp, "dana", held, artifacts)
    await expect(first.locator("#count")).to_have_text("1 of 2")
    assert (await api("GET", held["status_url"], seal))[1]["status"] == "pending"
    second = await approve_in_browser(browser, site, idp, "erik", held, artifacts)
    await expect(second.locator("#status")).to_have_text("completed")
    await expect(second.locator("#count")).to_have_text("2 of 2")
    await expect(second.get_by_role("button", name="Approve these digests")).to_have_count(0)

    # A non-member logs in too: nothing waits for her, and the request is not hers to see.
    context = await browser.new_context()
    page = await context.new_page()
    await log_in(page, site, idp, "alice", "/approvals")
    await expect(page.locator("#no-pending")).to_be_visible()
    await page.goto(f"{site}/approvals/{held['id']}")
    await expect(page.get_by_role("heading", name="No such approval request")).to_be_visible()
    await page.screenshot(path=shot(artifacts / "approvals-non-member.png"), full_page=True)

    # The requester collects the signatures; OpenSSL verifies them against the chain.
    code, done = await api("GET", held["status_url"], seal)
    assert code == 200 and done["status"] == "completed", done
    chain = x509.load_pem_x509_certificates(done["chain"].encode())
    (tmp_path / "root.pem").write_bytes(chain[-1].public_bytes(Encoding.PEM))
    for n, (doc, sig) in enumerate(zip(documents, done["signatures"], strict=True)):
        (tmp_path / f"d{n}").write_bytes(doc)
        (tmp_path / f"d{n}.p7s").write_bytes(base64.b64decode(sig))
        verified = subprocess.run(
            ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
             str(tmp_path / f"d{n}.p7s"), "-content", str(tmp_path / f"d{n}"), "-CAfile",
             str(tmp_path / "root.pem"), "-purpose", "any", "-cades", "-out", os.devnull],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stderr
        assert "Verification successful" in verified.stderr
    by = [d["by"] for d in done["approval"]["decisions"]]
    assert by == ["Dana Approver", "Erik Prüfer"]


async def test_one_denial_in_the_browser_ends_the_request(
    approvals_site: str, approvals_idp: RunningIdp, browser: Browser, artifacts: Path
) -> None:
    site, idp = approvals_site, approvals_idp
    seal = await idp.client_token(SEAL_CLIENT, DEMO_SECRETS[SEAL_CLIENT])
    digest = hashlib.sha256(b"wire transfer 1,000,000 EUR").digest()
    code, held = await api("POST", f"{site}/api/v1/signatures", seal, {
        "hash_algorithm": "sha256", "hashes": [base64.b64encode(digest).decode()],
        "labels": ["Transfer order.pdf"], "reason": "Urgent transfer",
    })  # fmt: skip
    assert code == 202, held
    context = await browser.new_context()
    page = await context.new_page()
    await log_in(page, site, idp, "fiona", f"/approvals/{held['id']}")
    await expect(page.locator("#reason")).to_have_text("Urgent transfer")
    await page.get_by_role("button", name="Deny").click()
    await expect(page.locator("#status")).to_have_text("denied")
    await expect(page.locator("#message")).to_contain_text("denied")
    await page.screenshot(path=shot(artifacts / "approvals-fiona-denied.png"), full_page=True)
    code, body = await api("GET", held["status_url"], seal)
    assert code == 200 and body["status"] == "denied" and "signatures" not in body
    code, problem = await api(
        "POST", f"{held['status_url']}/approve",
        await idp.user_token("dana", DEMO_PASSWORDS["dana"], "demo-web"),
        {"digest_commitment": held["digest_commitment"]},
    )  # fmt: skip
    assert (code, problem["type"]) == (409, "/problems/approval-not-pending")
