"""A `qes serve` child process per test module, for the CLI to talk to."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from tests.support.service import SignerProcess


@pytest.fixture(scope="module")
def signer(serve: Callable[..., AbstractContextManager[SignerProcess]]) -> Iterator[SignerProcess]:
    with serve("cli-signer") as process:
        yield process
