"""Outgoing HTTP from the service's own flows (webhooks), over the app's one client session."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from signer.flows.webhooks import Post


def poster(http: aiohttp.ClientSession) -> Post:
    """A webhook POST over ``http``: never follows redirects; any 2xx is delivered, anything
    else (another status, no answer within ``seconds``, a network error) is a failed attempt."""

    async def post(
        url: str, body: bytes, headers: Mapping[str, str], seconds: float
    ) -> tuple[bool, str]:
        try:
            async with http.post(
                url,
                data=body,
                headers=dict(headers),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as resp:
                return 200 <= resp.status < 300, f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return False, type(exc).__name__

    return post
