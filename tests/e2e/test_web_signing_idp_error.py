"""The IdP answers a signer's login with an error (issue 4: "an IdP error"), in Debian's Chromium.

The dev IdP's pages have no "deny" button, so the browser is sent to the callback with the
parameters an IdP puts there when it refuses (RFC 6749 §4.1.2.1: ``error``, optional
``error_description``, and the ``state`` of the authorization request), for the real pending
flow that this browser started at the IdP. The request must end with nothing signed, the RP
must get the mapped error with its own ``state``, and the sign URL must no longer work. A
callback carrying an error but another browser's ``state`` must change nothing.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

from playwright.async_api import Browser, Page, expect

from tests.e2e.test_web_signing import (
    Rp,
    Site,
    back_at_rp,
    create,
    documents,
    fetch,
    nothing_signed,
    records_of,
)


async def at_idp(browser: Browser, site: Site, sign_url: str) -> tuple[Page, str]:
    """A browser sent to the IdP by ``sign_url``, and the ``state`` of its authorization
    request (what the IdP would echo back)."""
    page = await (await browser.new_context()).new_page()
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url))
    await page.goto(sign_url)
    assert page.url.startswith(site.idp.issuer), page.url
    authorize = next(u for u in seen if u.startswith(site.idp.issuer) and "state=" in u)
    return page, parse_qs(urlsplit(authorize).query)["state"][0]


def idp_error(site: Site, error: str, state: str) -> str:
    query = {"error": error, "error_description": f"dev IdP says {error}", "state": state}
    return f"{site.url}/sign/callback?{urlencode(query)}"


async def test_the_signer_denies_at_the_idp_the_rp_gets_access_denied(
    site: Site, rp: Rp, browser: Browser
) -> None:
    before = await records_of(site, rp)
    created = await create(site, rp, documents(b"denied at the IdP"))
    page, state = await at_idp(browser, site, created["sign_url"])

    await page.goto(idp_error(site, "access_denied", state))
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    assert back_at_rp(page.url, rp) == {"error": ["access_denied"], "state": [created["state"]]}
    assert (await fetch(site, rp, created["id"]))["status"] == "cancelled"
    await nothing_signed(site, rp, created["id"])
    assert await records_of(site, rp) == before

    again = await page.goto(created["sign_url"])  # the request is used up
    assert again is not None and again.status == 409
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "This signing request is cancelled"
    )
    replay = await page.goto(idp_error(site, "access_denied", state))  # the flow is gone too
    assert replay is not None and replay.status == 400
    await page.context.close()


async def test_login_required_is_a_refusal_and_server_error_fails_the_request(
    site: Site, rp: Rp, browser: Browser
) -> None:
    login = await create(site, rp, documents(b"login required"))
    page, state = await at_idp(browser, site, login["sign_url"])
    await page.goto(idp_error(site, "login_required", state))
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    assert back_at_rp(page.url, rp) == {"error": ["access_denied"], "state": [login["state"]]}
    assert (await fetch(site, rp, login["id"]))["status"] == "cancelled"
    await nothing_signed(site, rp, login["id"])
    await page.context.close()

    broken = await create(site, rp, documents(b"IdP down"))
    page, state = await at_idp(browser, site, broken["sign_url"])
    await page.goto(idp_error(site, "temporarily_unavailable", state))
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    assert back_at_rp(page.url, rp) == {"error": ["server_error"], "state": [broken["state"]]}
    assert (await fetch(site, rp, broken["id"]))["status"] == "failed"
    await nothing_signed(site, rp, broken["id"])
    again = await page.goto(broken["sign_url"])
    assert again is not None and again.status == 409
    await page.context.close()


async def test_an_error_with_a_foreign_state_ends_nothing(
    site: Site, rp: Rp, browser: Browser
) -> None:
    created = await create(site, rp, documents(b"not yours to deny"))
    victim, _ = await at_idp(browser, site, created["sign_url"])
    attacker, state = await at_idp(browser, site, created["sign_url"])
    forged = await victim.goto(idp_error(site, "access_denied", "forged"))
    assert forged is not None and forged.status == 400
    assert victim.url.startswith(site.url)
    await expect(victim.get_by_role("heading", level=1)).to_have_text(
        "The login could not be completed"
    )
    await victim.goto(created["sign_url"])  # the victim has a new flow of its own
    foreign = await victim.goto(idp_error(site, "access_denied", state))
    assert foreign is not None and foreign.status == 400
    assert (await fetch(site, rp, created["id"]))["status"] == "pending"
    await victim.context.close()
    await attacker.context.close()
