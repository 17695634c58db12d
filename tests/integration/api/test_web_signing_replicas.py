"""Any replica serves any step of the web signing flow (issue 4, item 6): two `qes serve`
processes on one database behind one public URL; each step goes to the other process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.idp import DEMO_CLIENTS, DEMO_SECRETS, RunningIdp, start_idp, with_redirect_uri
from tests.support.service import SignerProcess, free_port, service_env
from tests.support.softhsm import SoftHsmToken
from tests.support.webflow import sign_across


@pytest.fixture(scope="module")
def replicas(
    softhsm_token: SoftHsmToken,
    database_url: str,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SignerProcess, SignerProcess, RunningIdp, dict[str, str]]]:
    port_a, port_b = free_port(), free_port()
    public = f"http://127.0.0.1:{port_a}"
    work = tmp_path_factory.mktemp("replicas")
    clients = with_redirect_uri(DEMO_CLIENTS, "demo-signer-web", f"{public}/sign/callback")
    with start_idp(work / "idp", clients=clients) as idp:
        envs = [
            service_env(
                token=softhsm_token,
                database_url=database_url,
                idp=idp,
                port=port,
                data_dir=work,
                QES__SERVER__PUBLIC_URL=public,
                QES__WEB_SIGNING__CLIENT_ID="demo-signer-web",
                QES__WEB_SIGNING__ISSUER="demo_people",
                QES_WEB_SIGNING_CLIENT_SECRET=DEMO_SECRETS["demo-signer-web"],
            )
            for port in (port_a, port_b)
        ]
        a = SignerProcess(envs[0], port_a, work / "a.log").start()
        try:
            b = SignerProcess(envs[1], port_b, work / "b.log").start()
            try:
                yield a, b, idp, envs[0]
            finally:
                b.stop()
        finally:
            a.stop()


async def test_each_step_on_another_replica(
    replicas: tuple[SignerProcess, SignerProcess, RunningIdp, dict[str, str]], tmp_path: Path
) -> None:
    a, b, idp, env = replicas
    await sign_across(a.url, b.url, idp, env, tmp_path)
