"""The signing policy and the kill switch in the CSC v2 OAuth2 credential flow: after the
owner's login the rule and the suspensions are checked before consent, and a refusal ends
the authorisation with a page that says why and a way back to the client. A real `qes serve`,
the real dev IdP; the signature made afterwards is verified with `cryptography`."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from tests.support.idp import (
    DEMO_CLIENTS,
    DEMO_PASSWORDS,
    DEMO_SECRETS,
    RunningIdp,
    start_idp,
    with_redirect_uri,
)
from tests.support.service import DEV_CONFIG, ROOT, SignerProcess, free_port, service_env
from tests.support.softhsm import SoftHsmToken

SHA256 = "2.16.840.1.101.3.4.2.1"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
RP_URI = "https://rp.example.com/csc-callback"
_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')
POLICY = """\
[[rule]]
name = "people"
email_domains = ["example.com"]
max_digests = 1
"""


@pytest.fixture(scope="module")
def site(
    softhsm_token: SoftHsmToken,
    database_url: str,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SignerProcess, RunningIdp, dict[str, str]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    work = tmp_path_factory.mktemp("policy-csc-oauth2")
    (work / "policy.toml").write_text(POLICY)
    clients = with_redirect_uri(DEMO_CLIENTS, "demo-signer-web", f"{url}/sign/callback")
    clients = with_redirect_uri(clients, "demo-signer-web", f"{url}/csc/v2/oauth2/callback")
    with start_idp(work / "idp", clients=clients) as idp:
        env = service_env(
            token=softhsm_token,
            database_url=database_url,
            idp=idp,
            port=port,
            data_dir=work,
            QES__WEB_SIGNING__CLIENT_ID="demo-signer-web",
            QES__WEB_SIGNING__ISSUER="demo_people",
            QES_WEB_SIGNING_CLIENT_SECRET=DEMO_SECRETS["demo-signer-web"],
            QES__POLICY__FILE=f'"{work / "policy.toml"}"',
        )
        signer = SignerProcess(env, port, work / "signer.log").start()
        try:
            yield signer, idp, env
        finally:
            signer.stop()


def qes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer", *args, "--config", str(DEV_CONFIG)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, check=False,
        timeout=120,
    )  # fmt: skip


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def csc(
    http: aiohttp.ClientSession, url: str, method: str, token: str, body: dict[str, Any]
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{url}/csc/v2/{method}", json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def refused_at_callback(
    http: aiohttp.ClientSession,
    signer: SignerProcess,
    idp: RunningIdp,
    client_id: str,
    credential: str,
    digests: list[bytes],
) -> tuple[int, str]:
    """oauth2/authorize for ``digests``, alice's login; the signer's answer at the callback."""
    challenge = b64url(hashlib.sha256(secrets.token_urlsafe(48).encode()).digest())
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": RP_URI,
        "scope": "credential",
        "credentialID": credential,
        "numSignatures": str(len(digests)),
        "hashes": ",".join(b64url(d) for d in digests),
        "hashAlgorithmOID": SHA256,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "client-state",
    }
    callback = f"{signer.url}/csc/v2/oauth2/callback"
    async with http.get(
        f"{signer.url}/csc/v2/oauth2/authorize?{urlencode(params)}", allow_redirects=False
    ) as r:
        assert r.status in (302, 303), await r.text()
        authorize = r.headers["Location"]
    page = await idp._follow(http, "GET", authorize, None, callback)
    action = _FORM_ACTION.search(page)
    assert action, page[:300]
    form = {"username": "alice", "password": DEMO_PASSWORDS["alice"]}
    back = await idp._follow(http, "POST", urljoin(authorize, action[1]), form, callback)
    assert back.startswith(callback + "?"), back[:300]
    async with http.get(back, allow_redirects=False) as r:
        return r.status, await r.text()


async def test_oauth2_credential_flow_is_under_the_kill_switch_and_the_policy(
    site: tuple[SignerProcess, RunningIdp, dict[str, str]],
) -> None:
    signer, idp, env = site
    added = qes(env, "client", "add", "Policy CSC client", "--redirect-uri", RP_URI)
    assert added.returncode == 0, added.stderr
    client = re.search(r"client_id: (\S+)", added.stdout)
    assert client
    alice = await idp.user_token("alice", DEMO_PASSWORDS["alice"], "demo-web")
    digest = hashlib.sha256(b"contract").digest()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        status, body = await csc(http, signer.url, "credentials/list", alice, {})
        assert status == 200, body
        credential = body["credentialIDs"][-1]
        asked = {"credentialID": credential}  # makes the key, as a wallet's first read does
        status, body = await csc(http, signer.url, "credentials/info", alice, asked)
        assert status == 200, body

        done = qes(env, "suspend", "identity", idp.issuer, "alice", "--reason", "oauth2 test")
        assert done.returncode == 0, done.stderr
        try:
            status, page = await refused_at_callback(
                http, signer, idp, client[1], credential, [digest]
            )
        finally:
            assert qes(env, "resume", "identity", idp.issuer, "alice").returncode == 0
        assert status == 403
        assert "Signing is suspended for this identity, client or service" in page
        assert "does not allow this authorisation. Nothing was authorised." in page
        assert "error=access_denied" in page  # the way back tells the client

        # the rule allows one digest per request: two are refused the same way
        two = [digest, hashlib.sha256(b"annex").digest()]
        status, page = await refused_at_callback(http, signer, idp, client[1], credential, two)
        assert status == 403
        assert "The signing policy allows fewer digests per request" in page

        # nothing was authorised: the credential still signs one digest through v2 + SAD
        body = {
            "credentialID": credential,
            "numSignatures": 1,
            "hashes": [base64.b64encode(digest).decode()],
            "hashAlgorithmOID": SHA256,
        }
        status, auth = await csc(http, signer.url, "credentials/authorize", alice, body)
        assert status == 200, auth
        status, info = await csc(
            http,
            signer.url,
            "credentials/info",
            alice,
            {"credentialID": credential, "certificates": "single"},
        )
        assert status == 200, info
        sign = {
            "credentialID": credential,
            "SAD": auth["SAD"],
            "hashes": body["hashes"],
            "hashAlgorithmOID": SHA256,
            "signAlgo": ECDSA_SHA256,
        }
        status, signed = await csc(http, signer.url, "signatures/signHash", alice, sign)
        assert status == 200, signed
    cert = x509.load_der_x509_certificate(base64.b64decode(info["cert"]["certificates"][0]))
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(
        base64.b64decode(signed["signatures"][0]),
        digest,
        ec.ECDSA(utils.Prehashed(hashes.SHA256())),
    )


async def test_a_client_without_the_csc_scope_cannot_start_the_oauth2_flow(
    site: tuple[SignerProcess, RunningIdp, dict[str, str]],
) -> None:
    """Scopes (issue 17): RFC 6749 §4.1.2.1 ``unauthorized_client`` back to the client."""
    signer, _, env = site
    found = {}
    for scope in ("api:web-signing", "api:csc"):
        added = qes(env, "client", "add", "Scoped", "--redirect-uri", RP_URI, "--scope", scope)
        client = re.search(r"client_id: (\S+)", added.stdout)
        assert added.returncode == 0 and client, added.stderr
        params = {
            "response_type": "code", "client_id": client[1], "redirect_uri": RP_URI,
            "scope": "credential", "credentialID": "cred-1", "numSignatures": "1",
            "hashes": b64url(hashlib.sha256(b"doc").digest()), "hashAlgorithmOID": SHA256,
            "code_challenge": b64url(bytes(32)), "code_challenge_method": "S256", "state": "s",
        }  # fmt: skip
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{signer.url}/csc/v2/oauth2/authorize?{urlencode(params)}", allow_redirects=False
            ) as r,
        ):
            assert r.status in (302, 303), await r.text()
            found[scope] = r.headers["Location"]
    refused = found["api:web-signing"]
    assert refused.startswith(RP_URI + "?") and "error=unauthorized_client" in refused
    assert "state=s" in refused
    # in scope: checked further, up to the (unknown) credential
    assert "error=invalid_request&error_description=credentialID" in found["api:csc"]
