"""Fixtures for idp_adapter against the real development IdP (node, oidc-provider 9)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

# These directories are not packages; make `tests.support` importable under plain `pytest`.
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from idp_adapter import IssuerRegistry, IssuerSettings  # noqa: E402
from tests.support.idp import FakeClock, MakeRegistry, RunningIdp, start_idp  # noqa: E402


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIdp]:
    with start_idp(tmp_path_factory.mktemp("idp")) as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def make_registry(http: aiohttp.ClientSession, clock: FakeClock) -> MakeRegistry:
    def make(*issuers: IssuerSettings, **kw: Any) -> IssuerRegistry:
        return IssuerRegistry(issuers, http, clock, **kw)

    return make
