"""An ``acr`` step-up (issue 4) in Debian's Chromium through the real dev IdP.

A signing request that requires ``MFA`` sends ``acr_values`` with it; the dev IdP then follows
the password with a second-factor page (the user's demo one-time code, ``otp`` in
``deploy/dev-idp/demo.json``) and only after the right code asserts ``MFA`` with
``amr: [pwd, otp]``. A browser that already holds a password-level IdP session is asked for
the second factor again; a wrong code never reaches the consent page. The fixtures (a dev IdP,
the signer on a real port, a registered RP) are those of ``test_web_signing.py``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
from playwright.async_api import Browser, Page, expect

from tests.e2e import test_web_signing as web
from tests.e2e.test_web_signing import (
    MFA,
    PWD,
    Rp,
    Site,
    back_at_rp,
    create,
    documents,
    fetch,
    nothing_signed,
    shot,
    verify_raw,
)
from tests.support.idp import DEMO_PASSWORDS, DEMO_USERS

OTPS = {u["username"]: u["otp"] for u in DEMO_USERS if "otp" in u}

# The fixtures of test_web_signing.py, instantiated again for this module (module scope).
sign_port, sign_idp, sign_env = web.sign_port, web.sign_idp, web.sign_env
rp_port, rp, rp_app, site = web.rp_port, web.rp, web.rp_app, web.site


async def password(page: Page, site: Site, user: str) -> None:
    """The IdP's first page: username and password (always asked: ``prompt=login``)."""
    assert page.url.startswith(site.idp.issuer), page.url
    await page.get_by_label("Username").fill(user)
    await page.get_by_label("Password").fill(DEMO_PASSWORDS[user])
    await page.get_by_role("button", name="Sign in").click()


async def second_factor_asked(page: Page, site: Site) -> None:
    """The IdP, not the signer, shows the one-time code page."""
    await expect(page.get_by_label("One-time code")).to_be_visible()
    assert page.url.startswith(site.idp.issuer), page.url
    assert "/consent" not in page.url


async def enter_code(page: Page, code: str) -> None:
    await page.get_by_label("One-time code").fill(code)
    await page.get_by_role("button", name="Verify").click()


async def activation_acr(site: Site, request_id: str) -> str | None:
    """The ``acr`` bound into the consumed signature activation data of the request."""
    conn = await asyncpg.connect(site.database_url)
    try:
        acr = await conn.fetchval(
            "SELECT acr FROM signature_activations WHERE request_id=$1 AND consumed_at IS NOT NULL",
            uuid.UUID(request_id),
        )
    finally:
        await conn.close()
    return None if acr is None else str(acr)


async def second_factor_then_sign(page: Page, site: Site, rp: Rp, created: dict[str, Any],
                                  content: bytes, folder: Path) -> None:  # fmt: skip
    """The right code on the IdP's second-factor page, the consent page at MFA, Sign, back at
    the RP; OpenSSL verifies the signature and the activation was bound to MFA."""
    await enter_code(page, OTPS["alice"])
    await page.wait_for_url(f"{site.url}/sign/*/consent")
    await expect(page.locator("dd", has_text="alice at")).to_contain_text(f"({MFA})")
    await page.get_by_role("button", name="Sign", exact=True).click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    assert back_at_rp(page.url, rp) == {"id": [created["id"]], "state": [created["state"]]}
    result = await fetch(site, rp, created["id"])
    assert result["status"] == "completed" and result["signer"] == {"subject": "alice"}
    verify_raw(result["result"], content, folder)
    assert await activation_acr(site, created["id"]) == MFA


async def test_an_mfa_request_gets_the_second_factor_and_signs_at_mfa(
    site: Site, rp: Rp, browser: Browser, artifacts: Path, tmp_path: Path
) -> None:
    content = b"Loan agreement, needs two factors\n" * 20
    created = await create(site, rp, documents(content), format="raw", acr=MFA)
    page = await (await browser.new_context()).new_page()
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url))
    await page.goto(created["sign_url"])
    authorize = next(u for u in seen if u.startswith(site.idp.issuer) and "state=" in u)
    assert parse_qs(urlsplit(authorize).query)["acr_values"] == [MFA]

    await password(page, site, "alice")
    await second_factor_asked(page, site)
    await page.screenshot(path=shot(artifacts / "web-signing-second-factor.png"), full_page=True)
    await second_factor_then_sign(page, site, rp, created, content, tmp_path)
    await page.context.close()


async def test_a_password_session_is_stepped_up_for_an_mfa_request(
    site: Site, rp: Rp, browser: Browser, tmp_path: Path
) -> None:
    """One browser: a PWD request signs after the password alone (an IdP session at PWD);
    the next request requires MFA and the IdP asks for the second factor before consent."""
    page = await (await browser.new_context()).new_page()
    first = await create(site, rp, documents(b"password is enough"), acr=PWD)
    await page.goto(first["sign_url"])
    await password(page, site, "alice")
    await page.wait_for_url(f"{site.url}/sign/*/consent")  # no second factor was asked
    await expect(page.locator("dd", has_text="alice at")).to_contain_text(f"({PWD})")
    await page.get_by_role("button", name="Sign", exact=True).click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    assert await activation_acr(site, first["id"]) == PWD
    assert await page.context.cookies(site.idp.issuer), "the IdP keeps a session in this browser"

    content = b"Now with the second factor\n" * 10
    second = await create(site, rp, documents(content), format="raw", acr=MFA)
    await page.goto(second["sign_url"])
    await password(page, site, "alice")
    await second_factor_asked(page, site)
    await nothing_signed(site, rp, second["id"])
    await second_factor_then_sign(page, site, rp, second, content, tmp_path)
    await page.context.close()


async def test_a_wrong_code_never_reaches_consent(site: Site, rp: Rp, browser: Browser) -> None:
    created = await create(site, rp, documents(b"wrong code"), acr=MFA)
    page = await (await browser.new_context()).new_page()
    signer_pages: list[str] = []
    page.on("request", lambda req: signer_pages.append(req.url))
    await page.goto(created["sign_url"])
    await password(page, site, "alice")
    await second_factor_asked(page, site)
    signer_pages.clear()
    wrong = "000000" if OTPS["alice"] != "000000" else "111111"
    for code in (wrong, "", OTPS["bob"]):  # not even another user's code
        await enter_code(page, code)
        await expect(page.get_by_role("alert")).to_have_text("Invalid one-time code")
        await second_factor_asked(page, site)
    assert not [u for u in signer_pages if u.startswith(site.url)], signer_pages
    consent = await page.goto(f"{site.url}/sign/{created['id']}/consent")
    assert consent is not None and consent.status == 403
    await nothing_signed(site, rp, created["id"])
    assert (await fetch(site, rp, created["id"]))["status"] == "pending"
    await page.context.close()
