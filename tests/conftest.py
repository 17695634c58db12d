"""Shared fixtures: one real SoftHSM2 token, one scratch PostgreSQL database and one real
OpenID Provider (node oidc-provider) per test process, and the signer app wired to them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from aiohttp.test_utils import TestClient

from tests.support.idp import DEMO_PASSWORDS, DEMO_SECRETS, RunningIdp, start_idp
from tests.support.pg import admin_url, scratch_database
from tests.support.service import DEV_CONFIG, free_port, service_env
from tests.support.softhsm import SoftHsmToken, session_token


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> SoftHsmToken:
    return session_token(tmp_path_factory)


@pytest.fixture(scope="session", autouse=True)
def no_ephemeral_key_survives() -> Iterator[None]:
    """After the whole session, a separate process lists the test token: every object must be
    a labelled long-lived key; an ephemeral key made as a token object by mistake, a CSC
    credential key (``qes-cred:…``) that outlived its test, or an unlabelled object, fails
    the run. (Session objects die with their process by design; the
    ``client`` fixture checks those in-process after every API test.)"""
    yield
    from signer.keys.credential import CREDENTIAL_PREFIX
    from signer.keys.session import EPHEMERAL_LABEL
    from tests.support import softhsm

    token = softhsm._SESSION_TOKEN
    if token is None:  # no test in this run touched the HSM
        return
    leftovers = [
        o
        for o in token.list_objects()
        if o.label in ("", EPHEMERAL_LABEL) or o.label.startswith(CREDENTIAL_PREFIX)
    ]
    assert leftovers == [], f"ephemeral or CSC credential keys survived in the token: {leftovers}"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[str]:
    with admin_url() as url:
        yield url


@pytest.fixture(scope="session")
def database_url(pg_admin: str) -> Iterator[str]:
    with scratch_database(pg_admin) as url:
        yield url


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIdp]:
    with start_idp(tmp_path_factory.mktemp("idp-session")) as running:
        yield running


@pytest.fixture(scope="session")
def signer_env(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    return service_env(
        token=softhsm_token,
        database_url=database_url,
        idp=idp,
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("qes-data"),
    )


@pytest.fixture(scope="session")
def settings(signer_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from signer.settings.config import load_settings

    return load_settings(DEV_CONFIG, env=signer_env)


@pytest.fixture(scope="session")
def ca_ready(settings) -> None:  # type: ignore[no-untyped-def]
    """`qes init` once per session, through the same code path as the CLI."""
    from signer.cli.service import _init

    asyncio.run(_init(settings, force=False))


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., object],
    settings,
    ca_ready,  # type: ignore[no-untyped-def]
) -> AsyncIterator[TestClient]:
    from signer.app import create_app
    from signer.http.kit.state import SERVICES

    app = create_app(settings)
    test_client = await aiohttp_client(app)  # type: ignore[operator]
    yield test_client
    services = app[SERVICES]
    leftover = await services.hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
    assert leftover == [], f"session objects left in the HSM after the test: {leftover}"
    assert services.hsm.live_ephemeral_keys() == 0
    credential_keys = await services.hsm.run(lambda s: s.credential_labels())
    assert credential_keys == set(), f"CSC credential keys left in the HSM: {credential_keys}"


@pytest.fixture
async def batch_token(idp: RunningIdp) -> str:
    return await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])


@pytest.fixture
async def auditor_token(idp: RunningIdp) -> str:
    return await idp.client_token("demo-auditor", DEMO_SECRETS["demo-auditor"])


@pytest.fixture
async def alice_token(idp: RunningIdp) -> str:
    return await idp.user_token("alice", DEMO_PASSWORDS["alice"], "demo-web")
