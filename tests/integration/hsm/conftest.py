"""Fixtures for the HSM integration tests: one real SoftHSM2 token per test process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from signer.keys import Hsm
from tests.support.softhsm import SoftHsmToken, session_token

# Long-lived keys these tests create; any other object left in the token is a leak.
LONG_LIVED = {"it-hsm-p256": "P-256", "it-hsm-p384": "P-384"}


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> SoftHsmToken:
    return session_token(tmp_path_factory)


@pytest.fixture(scope="session")
def long_lived() -> dict[str, str]:
    """Labels (and curves) of the long-lived keys created by the ``hsm`` fixture."""
    return dict(LONG_LIVED)


@pytest.fixture(scope="session")
def hsm(softhsm_token: SoftHsmToken) -> Iterator[Hsm]:
    opened = Hsm.open(softhsm_token.settings(sessions=4))
    try:
        for label, curve in LONG_LIVED.items():
            opened.run_sync(lambda s, lb=label, c=curve: s.create_token_key(lb, c, replace=True))
        yield opened
    finally:
        opened.close()
