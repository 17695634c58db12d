"""A webhook receiver as an RP runs one (aiohttp, loopback) and its MAC check, done with the
standard library only: the key is ``HMAC-SHA-256(secret_hash, "qes-signer webhook v1")`` and
the MAC covers ``X-Qes-Timestamp + "." + body`` (signer.flows.webhooks)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Receiver:
    url: str
    #: Answer 500 to this many POSTs first.
    fail_first: int = 0
    #: Seconds each POST takes to answer (a slow receiver).
    delay: float = 0.0
    seen: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)

    async def accepted(self, within: float = 20.0) -> tuple[dict[str, str], bytes]:
        """The first POST answered 2xx (waits for the background delivery)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for headers, body, status in self.seen:
                if status == 200:
                    return headers, body
            await asyncio.sleep(0.1)
        raise AssertionError(f"no accepted webhook within {within} s; saw {self.seen}")

    def bodies(self) -> list[dict[str, Any]]:
        """Every POST's JSON body, in order of arrival."""
        return [json.loads(body) for _, body, _ in self.seen]


@asynccontextmanager
async def receiving(hooks: Receiver, port: int) -> AsyncIterator[Receiver]:
    """``hooks`` listening on ``127.0.0.1:port`` (at ``/hook``) until the block ends."""

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if hooks.delay:
            await asyncio.sleep(hooks.delay)
        status = 500 if hooks.fail_first > 0 else 200
        hooks.fail_first -= 1
        hooks.seen.append((dict(request.headers), body, status))
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield hooks
    finally:
        await runner.cleanup()


def verified_with(secret_hash: bytes, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The body, if its MAC (key derived from ``secret_hash``) and timestamp are right."""
    key = hmac.new(secret_hash, b"qes-signer webhook v1", hashlib.sha256).digest()
    timestamp = headers["X-Qes-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 300, timestamp
    mac = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Qes-Signature-256"], f"sha256={mac}")
    assert headers["Content-Type"] == "application/json"
    payload: dict[str, Any] = json.loads(body)
    return payload
