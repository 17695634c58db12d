"""The client's side of a CSC integration, shared by the CSC and TLS tests."""

from __future__ import annotations

from typing import Any

import aiohttp
from pyhanko.sign.signers.csc_signer import CSCAuthorizationInfo, CSCAuthorizationManager


class HashBoundAuthorization(CSCAuthorizationManager):
    """The client's part of a CSC integration (pyHanko leaves it to the caller): ask
    ``credentials/authorize`` for a SAD bound to exactly the hashes about to be signed."""

    def __init__(self, http: aiohttp.ClientSession, *args: Any) -> None:
        super().__init__(*args)
        self.http = http
        self.requests: list[dict[str, Any]] = []

    async def authorize_signature(self, hash_b64s: list[str]) -> CSCAuthorizationInfo:
        body = self.format_csc_auth_request(hash_b64s=hash_b64s)
        self.requests.append(body)
        url = self.csc_session_info.endpoint_url("credentials/authorize")
        async with self.http.post(url, json=body, headers=self.auth_headers) as resp:
            resp.raise_for_status()
            return self.parse_csc_auth_response(await resp.json())


async def new_credential(http: aiohttp.ClientSession, url: str, token: str) -> str:
    """A credential with its key and certificate (``credentials/list``, then ``info``)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{url}/csc/v1/credentials/list", json={}, headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    credential_id = str(body["credentialIDs"][0])
    info = {"credentialID": credential_id}  # list reserves the ID; info makes the key
    async with http.post(f"{url}/csc/v1/credentials/info", json=info, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    return credential_id
