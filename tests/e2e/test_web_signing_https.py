"""The web-signing flow in Debian's Chromium over https (issue 13: "a web-signing flow in
Chromium ... over https with a test CA").

`qes serve` listens with ``[server.tls]`` on a certificate from a throwaway test CA. Chromium
trusts exactly that certificate's key through ``--ignore-certificate-errors-spki-list`` (a pin of
one SubjectPublicKeyInfo, not a blanket ignore: a browser without the pin refuses the page). The
pin needs no NSS tools or profile set-up, and the same key pinned is what the server serves.
The person logs in at the dev IdP, consents on the https page and is sent back to the RP; the
result verifies with OpenSSL. The screenshot goes to tests/e2e/artifacts/ (gitignored).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Response, expect

from tests.e2e.test_web_signing import (
    RP_NAME,
    Rp,
    Site,
    back_at_rp,
    create,
    documents,
    fetch,
    idp_login,
    shot,
    verify_raw,
)
from tests.support.chromium import launched, spki_pin
from tests.support.idp import FakeClock
from tests.support.prod import ephemeral_keys, https_web_signer
from tests.support.softhsm import SoftHsmToken

HSTS = "max-age=31536000; includeSubDomains"


async def test_one_document_signed_in_chromium_over_https(
    softhsm_token: SoftHsmToken,
    database_url: str,
    ca_ready: None,
    rp: Rp,
    rp_app: None,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    with https_web_signer(softhsm_token, database_url, tmp_path) as web:
        public, files, idp = web.url, web.files, web.idp
        # The process keeps its own (real) clock; this one is not wired to it.
        site = Site(public, idp, FakeClock(), database_url, tls=files.client_context())
        content = b"Lease agreement, signed over https\n" * 20
        created = await create(site, rp, documents(content), format="raw")
        assert created["sign_url"] == f"{public}/sign/{created['id']}"

        # Without the pin the browser refuses the test CA's certificate.
        async with launched() as plain:
            page = await (await plain.new_context()).new_page()
            with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
                await page.goto(created["sign_url"])

        pin = f"--ignore-certificate-errors-spki-list={spki_pin(files.cert)}"
        async with launched(pin) as browser:
            page = await (await browser.new_context()).new_page()
            seen: list[Response] = []
            page.on("response", lambda r: seen.append(r))
            await page.goto(created["sign_url"])
            await idp_login(page, site, "alice")
            await page.wait_for_url(f"{public}/sign/*/consent")
            assert page.url.startswith("https://127.0.0.1:"), page.url
            assert await page.evaluate("location.protocol + ' ' + isSecureContext") == (
                "https: true"
            )
            consent = next(r for r in reversed(seen) if r.url == page.url)
            assert consent.status == 200
            assert await consent.header_value("strict-transport-security") == HSTS
            security = await consent.security_details()
            assert security is not None and security.get("protocol") == "TLS 1.3", security
            await expect(page.get_by_role("heading", level=1)).to_have_text(
                f"{RP_NAME} asks you to sign 1 document"
            )
            await page.screenshot(
                path=shot(artifacts / "web-signing-https-consent.png"), full_page=True
            )
            await page.get_by_role("button", name="Sign", exact=True).click()
            await page.wait_for_url(f"{rp.redirect_uri}?**")
            assert back_at_rp(page.url, rp) == {
                "id": [created["id"]], "state": [created["state"]]
            }  # fmt: skip
            await page.context.close()

        result = await fetch(site, rp, created["id"])
        assert result["status"] == "completed" and result["signer"] == {"subject": "alice"}
        assert result["result"]["record_url"].startswith(f"{public}/")
        verify_raw(result["result"], content, tmp_path)
    assert ephemeral_keys(softhsm_token) == []
