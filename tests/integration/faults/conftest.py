"""Fixtures of the fault tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pg import scratch_database


@pytest.fixture
def own_database(pg_admin: str) -> Iterator[str]:
    """A database of the test's own, dropped at its end (for `qes serve` processes to kill)."""
    with scratch_database(pg_admin) as url:
        yield url
