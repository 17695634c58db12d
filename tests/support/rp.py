"""A relying party of the web-signing API, registered as an operator does (`qes client add`)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from tests.support.service import DEV_CONFIG, run_qes


@dataclass(frozen=True)
class Rp:
    client_id: str
    secret: str
    redirect_uri: str

    @property
    def auth(self) -> dict[str, str]:
        """HTTP Basic headers (RFC 7617) with the client id and secret."""
        return {"Authorization": aiohttp.encode_basic_auth(self.client_id, self.secret)}

    @property
    def secret_hash(self) -> bytes:
        """``SHA-256(client_secret)``: what its webhook key derives from."""
        return hashlib.sha256(self.secret.encode()).digest()


def parse_added(stdout: str, redirect_uri: str) -> Rp:
    """The RP from `qes client add`'s output."""
    client_id = re.search(r"client_id: (\S+)", stdout)
    secret = re.search(r"client_secret: (\S+)", stdout)
    assert client_id and secret, stdout
    return Rp(client_id[1], secret[1], redirect_uri)


async def add_rp(env: Mapping[str, str], name: str, redirect_uri: str) -> Rp:
    """Registered through the real command line (without blocking the event loop)."""
    code, out, err = await run_qes(
        "client", "add", name, "--redirect-uri", redirect_uri, "--config", str(DEV_CONFIG),
        env=env,
    )  # fmt: skip
    assert code == 0, err
    return parse_added(out, redirect_uri)
