"""A `qes serve` child process per test module, for the CLI to talk to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.idp import RunningIdp
from tests.support.service import SignerProcess, running_signer
from tests.support.softhsm import SoftHsmToken


@pytest.fixture(scope="module")
def signer(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SignerProcess]:
    work = tmp_path_factory.mktemp("cli-signer")
    with running_signer(
        token=softhsm_token, database_url=database_url, idp=idp, work=work
    ) as process:
        yield process
