"""Shared fixtures: one real SoftHSM2 token, one scratch PostgreSQL database and one real
OpenID Provider (node oidc-provider) per test process, and the signer app wired to them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.support import leaks
from tests.support.idp import DEMO_PASSWORDS, DEMO_SECRETS, RunningIdp, start_idp
from tests.support.pg import admin_url, scratch_database
from tests.support.service import (
    DEV_CONFIG,
    SignerProcess,
    SignerTestServer,
    assert_hsm_clean,
    free_port,
    running_signer,
    service_env,
)
from tests.support.softhsm import SoftHsmToken, session_token


@pytest.fixture(scope="session", autouse=True)
def token_leak_scan_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where the session-end token-leak scan looks (tests/support/leaks.py)."""
    leaks.state.basetemp = tmp_path_factory.getbasetemp()
    leaks.state.dir = tmp_path_factory.mktemp("test-process-logs")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep the test process's own output and log records of every test phase (pytest captures
    them; these are the in-process signer's logs) for the token-leak scan."""
    if leaks.state.dir is None or not report.sections:
        return
    with (leaks.state.dir / "pytest-captured.log").open("a", errors="surrogateescape") as out:
        for title, content in report.sections:
            out.write(f"== {report.nodeid} {title}\n{content}\n")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Issue 18: after the whole run, no log line of any process holds a token a test sent,
    whole or as its signature segment. A finding fails the run."""
    files = leaks.log_files()
    findings = leaks.scan(files, leaks.state.tokens)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and leaks.state.tokens:
        reporter.write_line(
            f"token-leak scan: {len(leaks.state.tokens)} tokens sent, {len(files)} log files "
            f"read, {len(findings)} findings"
        )
    if not findings:
        return
    if reporter is not None:
        for f in findings[:50]:
            reporter.write_line(f"TOKEN LEAK: a {f.what} in {f.path}:{f.line}", red=True)
        reporter.stats.setdefault("token leak", []).extend(findings)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


@pytest.fixture
def signer_for(
    softhsm_token: SoftHsmToken, database_url: str, idp: RunningIdp, tmp_path: Path
) -> Callable[..., SignerProcess]:
    """Makes a `qes serve` child process (not started) on this session's token, database and
    IdP, on a free port, logging to ``tmp_path / log``; ``extra`` are settings as environment
    variables (``QES__SERVER__WORKERS="2"``)."""

    def make(*, log: str = "signer.log", **extra: str) -> SignerProcess:
        port = free_port()
        env = service_env(
            token=softhsm_token,
            database_url=database_url,
            idp=idp,
            port=port,
            data_dir=tmp_path,
            **extra,
        )
        return SignerProcess(env, port, tmp_path / log)

    return make


@pytest.fixture(scope="session")
def settings(signer_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from signer.settings.config import load_settings

    return load_settings(DEV_CONFIG, env=signer_env)


@pytest.fixture(scope="session")
def ca_ready(settings, signer_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """`qes init` once per session, through the same code path as the CLI (both sides of the
    key ceremony: the session's token and its offline root token)."""
    from signer.cli.service import _init
    from signer.settings.offline import load_offline_settings

    offline = load_offline_settings(DEV_CONFIG, env=signer_env)
    asyncio.run(_init(settings, force=False, offline=offline))


@pytest.fixture(scope="session")
def serve(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., AbstractContextManager[SignerProcess]]:
    """``serve(name, **overrides)``: `qes serve` on the session's token, database and IdP,
    in a fresh work directory ``name`` (a context manager; stopped on exit)."""

    def start(name: str, **extra: str) -> AbstractContextManager[SignerProcess]:
        work = tmp_path_factory.mktemp(name)
        return running_signer(
            token=softhsm_token, database_url=database_url, idp=idp, work=work, **extra
        )

    return start


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., object],
    settings,
    ca_ready,  # type: ignore[no-untyped-def]
) -> AsyncIterator[TestClient]:
    from signer.app import create_app

    app = create_app(settings)
    test_client = await aiohttp_client(SignerTestServer(app))  # type: ignore[operator]
    yield test_client
    await assert_hsm_clean(app)


@pytest.fixture
async def batch_token(idp: RunningIdp) -> str:
    return await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])


@pytest.fixture
async def auditor_token(idp: RunningIdp) -> str:
    return await idp.client_token("demo-auditor", DEMO_SECRETS["demo-auditor"])


@pytest.fixture
async def alice_token(idp: RunningIdp) -> str:
    return await idp.user_token("alice", DEMO_PASSWORDS["alice"], "demo-web")
