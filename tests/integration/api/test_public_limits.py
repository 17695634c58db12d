"""Anonymous endpoints under per-address and global limits shared by replicas, and the trust
bundle built once per change (issue 17, item 8). Real PostgreSQL, two app instances on one
database; each test runs at its own fixed instant (an injected clock) so its one-minute window
is its own."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from signer.app import create_app
from signer.http.kit.state import SERVICES, TRUST_BUNDLE_CACHE
from signer.policy.public_limits import PublicLimiter, PublicRateLimited
from signer.storage.db import create_pool
from signer.storage.public_limits import PublicLimitStore
from signer.translog.log import load_privacy_key


class _Clock:
    """A fixed instant 10 s into a minute of 2020 no other test uses; ``advance`` moves it."""

    def __init__(self) -> None:
        minute = secrets.randbelow(500_000)
        self.now = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=minute, seconds=10)

    def __call__(self) -> datetime:
        return self.now


def _limited(settings: Any, *, per_address: int, total: int) -> Any:
    server = dataclasses.replace(
        settings.server,
        public_per_address_per_minute=per_address,
        public_total_per_minute=total,
    )
    return dataclasses.replace(settings, server=server)


async def _replicas(
    aiohttp_client: Callable[..., Any], settings: Any, clock: _Clock
) -> tuple[TestClient, TestClient]:
    first = await aiohttp_client(create_app(settings, clock=clock))
    second = await aiohttp_client(create_app(settings, clock=clock))
    return first, second


async def test_per_address_limit_is_shared_by_replicas(
    aiohttp_client: Callable[..., Any], settings: Any, ca_ready: None
) -> None:
    clock = _Clock()
    a, b = await _replicas(aiohttp_client, _limited(settings, per_address=4, total=0), clock)
    for client, path in ((a, "/openapi.json"), (b, "/api/v1/trust-bundle")) * 2:
        assert (await client.get(path)).status == 200
    for client in (a, b):
        resp = await client.get("/openapi.json")
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "50"  # the window ends 50 s after hh:mm:10
        assert resp.content_type == "application/problem+json"
        assert (await resp.json())["type"] == "/problems/public-rate-limited"
    assert (await a.get("/healthz")).status == 200  # not a limited endpoint
    clock.now += timedelta(minutes=1)
    assert (await b.get("/openapi.json")).status == 200


async def test_global_limit_counts_every_address_on_every_replica(
    aiohttp_client: Callable[..., Any], settings: Any, ca_ready: None
) -> None:
    clock = _Clock()
    a, b = await _replicas(aiohttp_client, _limited(settings, per_address=0, total=3), clock)
    statuses = [(await c.get("/openapi.json")).status for c in (a, b, a, b)]
    assert statuses == [200, 200, 200, 429]


async def test_addresses_are_counted_apart(settings: Any, ca_ready: None) -> None:
    clock = _Clock()
    assert settings.database.url is not None
    pool = await create_pool(
        settings.database.url.reveal(), min_size=1, max_size=2, command_timeout=10
    )
    try:
        limiter = PublicLimiter(
            store=PublicLimitStore(pool),
            key=load_privacy_key(settings),
            per_address=2,
            total=100,
            clock=clock,
        )
        for _ in range(2):
            await limiter.admit("192.0.2.1")
        refused = None
        try:
            await limiter.admit("192.0.2.1")
        except PublicRateLimited as exc:
            refused = exc
        assert refused is not None and refused.retry_after == 50
        await limiter.admit("192.0.2.2")  # another address has its own count
        stored = await pool.fetch(
            "SELECT source FROM public_rate_windows WHERE window_start = $1",
            clock.now.replace(second=0),
        )
        sources = {bytes(r["source"]) for r in stored}
        assert len(sources) == 3  # two addresses and all-sources
        assert not any(b"192.0.2" in s for s in sources)  # keyed hashes, never the address
    finally:
        await pool.close()


async def test_trust_bundle_is_built_once_not_per_request(
    aiohttp_client: Callable[..., Any], settings: Any, ca_ready: None
) -> None:
    """The first request builds it (one HSM hop for the log key); after that it is served
    without the HSM: with the HSM closed, the same bytes still come back."""
    app = create_app(settings)
    client = await aiohttp_client(app)
    first = await client.get("/api/v1/trust-bundle")
    assert first.status == 200
    body = await first.read()
    app[SERVICES].hsm.close()
    again = await client.get("/api/v1/trust-bundle")
    assert again.status == 200 and await again.read() == body
    accept = {"Accept": "application/pem-certificate-chain"}
    pem = await client.get("/api/v1/trust-bundle", headers=accept)
    assert pem.status == 200 and (await pem.text()).count("BEGIN CERTIFICATE") >= 3
    assert len(app[TRUST_BUNDLE_CACHE]) == 1
