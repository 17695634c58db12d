"""The CSC v2 OAuth2 credential flow with ``[web_signing] credential_acr`` set to the dev IdP's
mfa level: the login asks for the second factor, and the credential token carries that
``acr``. A wrong one-time code never reaches the consent page. Fixtures are those of
``test_csc_oauth2.py`` (its IdP, sweeper and the shared web-signing site), instantiated for
this module with the stricter setting.
"""

from __future__ import annotations

import hashlib

import asyncpg
import pytest
from playwright.async_api import Browser, expect

from tests.e2e import test_csc_oauth2 as flow
from tests.e2e.test_web_signing import MFA, Rp, Site
from tests.e2e.test_web_signing_step_up import OTPS, enter_code, password, second_factor_asked

sign_idp, credentials_swept = flow.sign_idp, flow.credentials_swept


@pytest.fixture(scope="module")
def sign_env(sign_env: dict[str, str]) -> dict[str, str]:
    return {
        **sign_env,
        "QES__CSC__SWEEP_INTERVAL_SECONDS": "0.2",
        "QES__WEB_SIGNING__CREDENTIAL_ACR": MFA,
    }


async def token_acr(site: Site, credential_id: str) -> tuple[str | None, list[str]]:
    """The ``acr``/``amr`` bound into the credential's authorization (the core's table)."""
    conn = await asyncpg.connect(site.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT acr, amr FROM csc_authorizations WHERE credential_id=$1", credential_id
        )
    finally:
        await conn.close()
    assert row is not None
    return row["acr"], list(row["amr"])


async def test_the_login_steps_up_and_the_token_carries_the_acr(
    site: Site, rp: Rp, browser: Browser
) -> None:
    token = await flow.alice_token(site)
    credential_id = await flow.new_credential(site, token)
    digest = hashlib.sha256(b"step-up contract").digest()
    verifier, challenge = flow.pkce()
    url, state = flow.authorize_url(site, rp, credential_id, [digest], challenge)

    page = await (await browser.new_context()).new_page()
    await page.goto(url)
    await password(page, site, "alice")
    await second_factor_asked(page, site)
    await enter_code(page, OTPS["alice"])
    await page.wait_for_url(f"{site.url}/csc/v2/oauth2/consent/*")
    await expect(page.locator("#hashes")).to_contain_text(digest.hex())
    await expect(page.locator("#authorisation-details")).to_contain_text(MFA)
    code = await flow.approve(page, rp, state)

    status, issued = await flow.redeem(site, rp, code, verifier)
    assert status == 200, issued
    acr, amr = await token_acr(site, credential_id)
    assert acr == MFA and "otp" in amr
    status, body = await flow.sign_hash(site, issued["access_token"], credential_id, [digest])
    assert status == 200 and len(body["signatures"]) == 1, body


async def test_a_wrong_second_factor_never_reaches_the_consent(
    site: Site, rp: Rp, browser: Browser
) -> None:
    token = await flow.alice_token(site)
    credential_id = await flow.new_credential(site, token)
    _, challenge = flow.pkce()
    url, _ = flow.authorize_url(site, rp, credential_id, [hashlib.sha256(b"x").digest()], challenge)
    page = await (await browser.new_context()).new_page()
    await page.goto(url)
    await password(page, site, "alice")
    await second_factor_asked(page, site)
    await enter_code(page, "000000")
    await expect(page.get_by_label("One-time code")).to_be_visible()
    assert page.url.startswith(site.idp.issuer) and "/consent" not in page.url
    await page.context.close()
    row = await flow.oauth2_row(site, credential_id)
    assert row["status"] == "login" and row["code_hash"] is None
    await flow.unused(site, credential_id)
