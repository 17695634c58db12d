"""The audit UI in a real browser: Debian's Chromium driven by Playwright (never a downloaded
browser), the signer listening on a real port, and a dev IdP of its own whose ``demo-audit-ui``
client knows that port's redirect URI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.chromium import launched
from tests.support.idp import (
    DEMO_CLIENTS,
    DEMO_SECRETS,
    FakeClock,
    RunningIdp,
    start_idp,
    with_redirect_uri,
)
from tests.support.service import DEV_CONFIG, free_port, service_env
from tests.support.softhsm import SoftHsmToken

ARTIFACTS = Path(__file__).parent / "artifacts"


@dataclass
class AuditSite:
    url: str
    idp: RunningIdp
    clock: FakeClock


@pytest.fixture(scope="session")
def audit_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def audit_idp(tmp_path_factory: pytest.TempPathFactory, audit_port: int) -> Iterator[RunningIdp]:
    uri = f"http://127.0.0.1:{audit_port}/audit/callback"
    clients = with_redirect_uri(DEMO_CLIENTS, "demo-audit-ui", uri)
    with start_idp(tmp_path_factory.mktemp("audit-idp"), clients=clients) as running:
        yield running


@pytest.fixture(scope="session")
def audit_settings(  # type: ignore[no-untyped-def]
    softhsm_token: SoftHsmToken,
    database_url: str,
    audit_idp: RunningIdp,
    audit_port: int,
    tmp_path_factory: pytest.TempPathFactory,
):
    from signer.settings.config import load_settings

    env = service_env(
        token=softhsm_token,
        database_url=database_url,
        idp=audit_idp,
        port=audit_port,
        data_dir=tmp_path_factory.mktemp("qes-audit-data"),
        QES__AUDIT__UI_CLIENT_ID="demo-audit-ui",
        QES__AUDIT__UI_ISSUER="demo_people",
        QES_AUDIT_UI_CLIENT_SECRET=DEMO_SECRETS["demo-audit-ui"],
    )
    return load_settings(DEV_CONFIG, env=env)


@pytest.fixture
async def audit_site(
    audit_settings,  # type: ignore[no-untyped-def]
    ca_ready: None,
    audit_idp: RunningIdp,
    audit_port: int,
) -> AsyncIterator[AuditSite]:
    """The signer app on its public port; afterwards the same HSM check as ``client``."""
    from signer.app import create_app
    from signer.http.kit.state import SERVICES

    clock = FakeClock()
    app = create_app(audit_settings, clock=clock)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", audit_port).start()
        yield AuditSite(f"http://127.0.0.1:{audit_port}", audit_idp, clock)
        services = app[SERVICES]
        leftover = await services.hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
        assert leftover == [], f"session objects left in the HSM after the test: {leftover}"
        assert services.hsm.live_ephemeral_keys() == 0
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with launched() as chromium:
        yield chromium


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# The web-signing fixtures of test_web_signing.py (signer, dev IdP, registered RP), shared by
# the other web-signing modules; module-scoped ones are set up once per module that uses them.
from tests.e2e.test_web_signing import (  # noqa: E402
    rp,
    rp_app,
    rp_port,
    sign_env,
    sign_idp,
    sign_port,
    site,
)

__all__ = ["rp", "rp_app", "rp_port", "sign_env", "sign_idp", "sign_port", "site"]
