"""The signing policy in the web-signing flow (issue 7): a rule's ``acr`` steps the login up
through the dev IdP's second factor (the existing step-up), and a suspended signer is told so
on the signer's page, before any consent. A real `qes serve`, the real dev IdP, OpenSSL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.idp import (
    DEMO_CLIENTS,
    DEMO_PASSWORDS,
    DEMO_SECRETS,
    DEMO_USERS,
    RunningIdp,
    start_idp,
    with_redirect_uri,
)
from tests.support.service import DEV_CONFIG, ROOT, SignerProcess, free_port, service_env
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_verify_chain, openssl_verify_signature

PWD = "urn:qes-signer:dev-idp:pwd"
MFA = "urn:qes-signer:dev-idp:mfa"
OTP = {u["username"]: u["otp"] for u in DEMO_USERS if "otp" in u}
RP_URI = "https://rp.example.com/signed"
_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')

POLICY = f"""\
acr_levels = ["{PWD}", "{MFA}"]

[[rule]]
name = "carol-needs-approval"
issuers = ["ISSUER"]
subjects = ["carol"]
approvals = {{ required = 1, group = "auditors" }}

[[rule]]
name = "people-need-mfa"
email_domains = ["example.com"]
acr = "{MFA}"

[approver_groups.auditors]
roles = ["qes-auditor"]
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
    work = tmp_path_factory.mktemp("policy-web")
    policy = work / "policy.toml"
    clients = with_redirect_uri(DEMO_CLIENTS, "demo-signer-web", f"{url}/sign/callback")
    clients = with_redirect_uri(clients, "demo-audit-ui", f"{url}/audit/callback")
    with start_idp(work / "idp", clients=clients) as idp:
        policy.write_text(POLICY.replace("ISSUER", idp.issuer))
        env = service_env(
            token=softhsm_token,
            database_url=database_url,
            idp=idp,
            port=port,
            data_dir=work,
            QES__WEB_SIGNING__CLIENT_ID="demo-signer-web",
            QES__WEB_SIGNING__ISSUER="demo_people",
            QES_WEB_SIGNING_CLIENT_SECRET=DEMO_SECRETS["demo-signer-web"],
            QES__POLICY__FILE=f'"{policy}"',
            QES__AUDIT__UI_CLIENT_ID="demo-audit-ui",
            QES__AUDIT__UI_ISSUER="demo_people",
            QES_AUDIT_UI_CLIENT_SECRET=DEMO_SECRETS["demo-audit-ui"],
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


@pytest.fixture(scope="module")
def registered(site: tuple[SignerProcess, RunningIdp, dict[str, str]]) -> tuple[str, str]:
    """A registered RP: its client id and secret."""
    added = qes(site[2], "client", "add", "Policy RP", "--redirect-uri", RP_URI)
    assert added.returncode == 0, added.stderr
    client_id = re.search(r"client_id: (\S+)", added.stdout)
    secret = re.search(r"client_secret: (\S+)", added.stdout)
    assert client_id and secret
    return client_id[1], secret[1]


@pytest.fixture(scope="module")
def rp(registered: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(*registered)}


async def create(http: aiohttp.ClientSession, url: str, rp: dict[str, str], data: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    body = {
        "documents": [{"label": "order.txt", "digest": digest}],
        "format": "raw",
        "profile": "advanced",
        "redirect_uri": RP_URI,
        "state": "st-policy",
    }
    async with http.post(f"{url}/api/v1/signing-requests", json=body, headers=rp) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])


async def login(
    http: aiohttp.ClientSession,
    idp: RunningIdp,
    authorize: str,
    callback: str,
    *,
    otp: bool,
    user: str = "alice",
) -> str:
    """The IdP's pages as a browser posts them (password, then the code when asked)."""
    page = await idp._follow(http, "GET", authorize, None, callback)
    action = _FORM_ACTION.search(page)
    assert action, page[:300]
    form = {"username": user, "password": DEMO_PASSWORDS[user]}
    after = await idp._follow(http, "POST", urljoin(authorize, action[1]), form, callback)
    if otp:
        assert "One-time code" in after, after[:300]  # the IdP asks for the second factor
        action = _FORM_ACTION.search(after)
        assert action
        code = {"otp": OTP["alice"]}
        after = await idp._follow(http, "POST", urljoin(authorize, action[1]), code, callback)
    assert after.startswith(callback + "?"), after[:300]
    return after


async def start(http: aiohttp.ClientSession, url: str, request_id: str) -> str:
    async with http.get(f"{url}/sign/{request_id}", allow_redirects=False) as r:
        assert r.status == 303, await r.text()
        return r.headers["Location"]


async def test_policy_acr_steps_the_login_up_then_signs(
    site: tuple[SignerProcess, RunningIdp, dict[str, str]], rp: dict[str, str], tmp_path: Path
) -> None:
    signer, idp, _ = site
    data = b"web order needing a second factor\n"
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        request_id = await create(http, signer.url, rp, data)
        authorize = await start(http, signer.url, request_id)
        assert "acr_values" not in parse_qs(urlsplit(authorize).query)  # the RP asked none
        callback = await login(http, idp, authorize, f"{signer.url}/sign/callback", otp=False)
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            assert r.headers["Location"] == f"/sign/{request_id}"  # log in again, stronger
        authorize = await start(http, signer.url, request_id)
        assert parse_qs(urlsplit(authorize).query)["acr_values"] == [MFA]
        callback = await login(http, idp, authorize, f"{signer.url}/sign/callback", otp=True)
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            consent = r.headers["Location"]
        assert consent == f"/sign/{request_id}/consent"
        async with http.get(f"{signer.url}{consent}") as r:
            page = await r.text()
        csrf = _CSRF.search(page)
        assert csrf
        form = {"csrf": csrf[1], "decision": "sign"}
        async with http.post(f"{signer.url}{consent}", data=form, allow_redirects=False) as r:
            assert r.status == 303
            assert parse_qs(urlsplit(r.headers["Location"]).query)["id"] == [request_id]
        async with http.get(f"{signer.url}/api/v1/signing-requests/{request_id}", headers=rp) as r:
            result: dict[str, Any] = await r.json()
    assert result["status"] == "completed", result
    signed = result["result"]
    paths = {}
    for name, cert in zip(
        ("leaf", "issuing", "root"),
        x509.load_pem_x509_certificates(signed["chain"].encode()),
        strict=True,
    ):
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(Encoding.PEM))
    openssl_verify_chain(paths["root"], paths["issuing"], paths["leaf"])
    (tmp_path / "doc").write_bytes(data)
    (tmp_path / "sig").write_bytes(base64.b64decode(signed["documents"][0]["signature"]))
    done = openssl_verify_signature(paths["leaf"], tmp_path / "sig", tmp_path / "doc", "sha256")
    assert done.returncode == 0 and "Verified OK" in done.stdout


async def test_suspended_signer_is_told_on_the_signing_page(
    site: tuple[SignerProcess, RunningIdp, dict[str, str]], rp: dict[str, str]
) -> None:
    signer, idp, env = site
    done = qes(env, "suspend", "identity", idp.issuer, "alice", "--reason", "web test")
    assert done.returncode == 0, done.stderr
    try:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            request_id = await create(http, signer.url, rp, b"never signed\n")
            authorize = await start(http, signer.url, request_id)
            callback = await login(http, idp, authorize, f"{signer.url}/sign/callback", otp=False)
            async with http.get(callback, allow_redirects=False) as r:
                assert r.status == 403
                page = await r.text()
            async with http.get(
                f"{signer.url}/api/v1/signing-requests/{request_id}", headers=rp
            ) as r:
                still = await r.json()
    finally:
        assert qes(env, "resume", "identity", idp.issuer, "alice").returncode == 0
    assert "Signing is suspended by the service&#39;s administrator" in page, page
    assert "Nothing was signed" in page
    assert still["status"] == "pending"  # refused before consent: the RP's request stays open


async def test_audit_ui_shows_what_is_suspended(
    site: tuple[SignerProcess, RunningIdp, dict[str, str]],
) -> None:
    signer, idp, env = site
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(f"{signer.url}/audit/login", allow_redirects=False) as r:
            assert r.status in (302, 303), await r.text()
            authorize = r.headers["Location"]
        callback = await login(
            http, idp, authorize, f"{signer.url}/audit/callback", otp=False, user="carol"
        )
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status in (302, 303), await r.text()
        async with http.get(f"{signer.url}/audit") as r:
            assert r.status == 200
            assert "Signing is suspended" not in await r.text()
        done = qes(env, "suspend", "client", "payroll-rp", "--reason", "leaked secret")
        assert done.returncode == 0, done.stderr
        try:
            async with http.get(f"{signer.url}/audit") as r:  # the CLI committed: < 1 s since
                page = await r.text()
            if "Signing is suspended" not in page:  # the NOTIFY may still be on its way
                await asyncio.sleep(1.0)
                async with http.get(f"{signer.url}/audit") as r:
                    page = await r.text()
        finally:
            assert qes(env, "resume", "client", "payroll-rp").returncode == 0
        assert "Signing is suspended (kill switch)" in page
        assert "Relying party <strong>payroll-rp</strong>" in page
        assert "reason: leaked secret" in page
        await asyncio.sleep(1.0)
        async with http.get(f"{signer.url}/audit") as r:
            assert "Signing is suspended" not in await r.text()


async def test_suspended_rp_client_cannot_create_or_start_requests(
    site: tuple[SignerProcess, RunningIdp, dict[str, str]],
    rp: dict[str, str],
    registered: tuple[str, str],
) -> None:
    signer, _, env = site
    client_id = registered[0]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        waiting = await create(http, signer.url, rp, b"created before the suspension\n")
        done = qes(env, "suspend", "client", client_id, "--reason", "rp compromised")
        assert done.returncode == 0, done.stderr
        try:
            await asyncio.sleep(0.5)  # NOTIFY reaches the serving process
            digest = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
            body = {
                "documents": [{"label": "x", "digest": digest}],
                "format": "raw",
                "redirect_uri": RP_URI,
                "state": "s",
            }
            async with http.post(
                f"{signer.url}/api/v1/signing-requests", json=body, headers=rp
            ) as r:
                assert r.status == 403
                assert r.content_type == "application/problem+json"
                assert (await r.json())["type"] == "/problems/suspended"
            async with http.get(f"{signer.url}/sign/{waiting}", allow_redirects=False) as r:
                assert r.status == 403  # told before any login
                assert "Signing is suspended" in await r.text()
        finally:
            assert qes(env, "resume", "client", client_id).returncode == 0
        await asyncio.sleep(0.5)
        assert (await start(http, signer.url, waiting)).startswith(site[1].issuer)


async def test_a_rule_needing_approvals_is_refused_before_consent(
    site: tuple[SignerProcess, RunningIdp, dict[str, str]], rp: dict[str, str]
) -> None:
    signer, idp, _ = site
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        request_id = await create(http, signer.url, rp, b"carol's order\n")
        authorize = await start(http, signer.url, request_id)
        callback = await login(
            http, idp, authorize, f"{signer.url}/sign/callback", otp=False, user="carol"
        )
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status == 403
            page = await r.text()
    assert "The signing policy requires approval for this request." in page
