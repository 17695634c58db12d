"""Fixtures shared by the API tests: the signing-record count, an app with web signing on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.support.service import DEV_CONFIG, WEB_ENV


@pytest.fixture
async def records(database_url: str) -> AsyncIterator[Callable[[], Any]]:
    """Counts the signing records (one per certificate issued)."""
    conn = await asyncpg.connect(database_url)

    async def count() -> int:
        return int(await conn.fetchval("SELECT count(*) FROM signing_records"))

    yield count
    await conn.close()


@pytest.fixture
async def web(
    aiohttp_client: Callable[..., Any], signer_env: dict[str, str], ca_ready: None
) -> AsyncIterator[TestClient]:
    """The app with web signing (``/api/v1/signing-requests``) on."""
    from signer.app import create_app
    from signer.settings.config import load_settings

    app = create_app(load_settings(DEV_CONFIG, env={**signer_env, **WEB_ENV}))
    yield await aiohttp_client(app)
