"""Completion webhooks of signing requests (issue 4), through the real browser flow.

A receiver in this test (aiohttp, on a free loopback port) records each POST; the MAC is
checked with the standard library only, the way an RP would: the key is
``HMAC-SHA-256(SHA-256(client_secret), "qes-signer webhook v1")`` and the MAC covers
``X-Qes-Timestamp + "." + body``. Signed, cancelled and expired requests deliver; a receiver
that fails twice gets the delivery on the third attempt, and the attempts are visible in the
RP's GET; a bad ``webhook_url`` is a 422 problem.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser

from tests.e2e.test_web_signing import Rp, Site, back_at_rp, create, documents, fetch, to_consent
from tests.support.service import free_port
from tests.support.webhooks import Receiver, receiving, verified_with


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    async with receiving(Receiver(f"http://127.0.0.1:{port}/hook"), port) as hooks:
        yield hooks


def verified(rp: Rp, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The body, if its MAC and timestamp are right (what an RP's receiver does)."""
    return verified_with(hashlib.sha256(rp.secret.encode()).digest(), headers, body)


async def test_a_signed_request_delivers_a_signed_webhook(
    site: Site, rp: Rp, browser: Browser, receiver: Receiver
) -> None:
    created = await create(site, rp, documents(b"hook me"), webhook_url=receiver.url)
    page = await to_consent(browser, site, created["sign_url"])
    await page.get_by_role("button", name="Sign", exact=True).click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")
    assert back_at_rp(page.url, rp) == {"id": [created["id"]], "state": [created["state"]]}
    await page.context.close()

    headers, body = await receiver.accepted()
    assert verified(rp, headers, body) == {
        "id": created["id"],
        "state": created["state"],
        "status": "completed",
    }
    # A forged body or a replayed MAC with another timestamp does not verify.
    with pytest.raises(AssertionError):
        verified(rp, headers, body.replace(b"completed", b"cancelled"))
    with pytest.raises(AssertionError):
        verified(rp, {**headers, "X-Qes-Timestamp": str(int(time.time()) + 1)}, body)
    with pytest.raises(AssertionError):
        verified(Rp(rp.client_id, "another secret", rp.redirect_uri), headers, body)
    shown = (await fetch(site, rp, created["id"]))["webhook"]
    assert shown["url"] == receiver.url and shown["attempts"] == 1
    assert shown["last_result"] == "HTTP 200" and shown["delivered_at"] is not None


async def test_a_cancelled_request_delivers_and_a_failing_receiver_gets_it_on_retry(
    site: Site, rp: Rp, browser: Browser, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    created = await create(site, rp, documents(b"no thanks"), webhook_url=receiver.url)
    page = await to_consent(browser, site, created["sign_url"])
    await page.get_by_role("button", name="Cancel").click()
    await page.wait_for_url(f"{rp.redirect_uri}?**")  # not held up by the failing receiver
    assert back_at_rp(page.url, rp)["error"] == ["access_denied"]
    await page.context.close()

    headers, body = await receiver.accepted()
    assert [status for _, _, status in receiver.seen] == [500, 500, 200]
    assert verified(rp, headers, body) == {
        "id": created["id"],
        "state": created["state"],
        "status": "cancelled",
    }
    shown = (await fetch(site, rp, created["id"]))["webhook"]
    assert shown["attempts"] == 3 and shown["last_result"] == "HTTP 200"
    assert shown["delivered_at"] is not None


async def test_a_request_found_expired_delivers(site: Site, rp: Rp, receiver: Receiver) -> None:
    created = await create(site, rp, documents(b"forgotten"), webhook_url=receiver.url)
    site.clock.advance(16 * 60)
    assert (await fetch(site, rp, created["id"]))["status"] == "expired"
    headers, body = await receiver.accepted()
    assert verified(rp, headers, body)["status"] == "expired"
    await asyncio.sleep(0.5)
    assert len(receiver.seen) == 1  # reading it again does not send it again
    assert (await fetch(site, rp, created["id"]))["status"] == "expired"
    await asyncio.sleep(0.5)
    assert len(receiver.seen) == 1


async def test_a_bad_webhook_url_is_a_422_problem(site: Site, rp: Rp, receiver: Receiver) -> None:
    await create(site, rp, documents(b"x"), webhook_url=receiver.url)  # the same body is fine
    bad = [
        "http://example.com/hook",  # http off loopback
        "ftp://127.0.0.1/hook",
        "https://rp.example.com/hook#fragment",
        "/relative/hook",
        "",
    ]
    async with aiohttp.ClientSession() as http:
        for url in bad:
            body = {
                "documents": documents(b"x"),
                "redirect_uri": rp.redirect_uri,
                "state": "s",
                "webhook_url": url,
            }
            async with http.post(
                f"{site.url}/api/v1/signing-requests", json=body, headers=rp.auth
            ) as r:
                problem = await r.json(content_type=None)
                assert r.status == 422, (url, problem)
                assert r.content_type == "application/problem+json"
                assert problem["type"] == "/problems/invalid-request", problem
