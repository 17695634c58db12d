"""A web-signing flow whose steps go to two base URLs in turn (issue 4, item 6; issue 13, item 7):
two replicas directly, or one load balancer that alternates between them."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.idp import DEMO_PASSWORDS, RunningIdp
from tests.support.service import DEV_CONFIG, ROOT
from tests.support.verify import openssl_verify_chain, openssl_verify_signature

_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def sign_across(
    first: str,
    second: str,
    idp: RunningIdp,
    env: Mapping[str, str],
    tmp_path: Path,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Register a relying party, create a signing request, log in, consent and collect the
    result, each step on ``first`` or ``second`` in turn (``first`` is the public URL); the
    signature is checked with OpenSSL."""
    rp_uri = "https://rp.example.com/signed"
    added = subprocess.run(
        [sys.executable, "-m", "signer", "client", "add", "Replica RP", "--redirect-uri", rp_uri,
         "--config", str(DEV_CONFIG)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, check=False,
        timeout=120,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    client_id = re.search(r"client_id: (\S+)", added.stdout)
    secret = re.search(r"client_secret: (\S+)", added.stdout)
    assert client_id and secret
    rp = {"Authorization": aiohttp.encode_basic_auth(client_id[1], secret[1])}
    content = b"signed across replicas"
    digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
    body = {
        "documents": [{"label": "x.txt", "digest": digest}],
        "format": "raw",
        "redirect_uri": rp_uri,
        "state": "st-1",
    }
    jar = aiohttp.CookieJar(unsafe=True)
    connector = aiohttp.TCPConnector(ssl=tls if tls is not None else True)
    async with aiohttp.ClientSession(cookie_jar=jar, connector=connector) as http:
        async with http.post(f"{first}/api/v1/signing-requests", json=body, headers=rp) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
        request_id = created["id"]
        assert created["sign_url"] == f"{first}/sign/{request_id}"  # the public URL

        async with http.get(f"{second}/sign/{request_id}", allow_redirects=False) as r:  # B
            assert r.status == 303
            authorize = r.headers["Location"]
        callback = await _idp_login(http, idp, authorize, f"{first}/sign/callback")
        async with http.get(callback, allow_redirects=False) as r:  # A: the public URL
            assert r.status == 303, await r.text()
            consent_path = r.headers["Location"]
        async with http.get(f"{second}{consent_path}") as r:  # B
            assert r.status == 200
            page = await r.text()
        assert "Alice Example" in page and hashlib.sha256(content).hexdigest() in page
        csrf = _CSRF.search(page)
        assert csrf
        form = {"csrf": csrf[1], "decision": "sign"}
        async with http.post(f"{first}{consent_path}", data=form, allow_redirects=False) as r:
            assert r.status == 303, await r.text()  # A
            back = r.headers["Location"]
        assert parse_qs(urlsplit(back).query) == {"id": [request_id], "state": ["st-1"]}
        async with http.get(f"{second}/api/v1/signing-requests/{request_id}", headers=rp) as r:
            result = await r.json()
    assert result["status"] == "completed", result
    signed = result["result"]
    leaf, issuing, root = x509.load_pem_x509_certificates(signed["chain"].encode())
    paths = {}
    for name, cert in (("leaf", leaf), ("issuing", issuing), ("root", root)):
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(Encoding.PEM))
    openssl_verify_chain(paths["root"], paths["issuing"], paths["leaf"])
    doc, sig = tmp_path / "doc", tmp_path / "doc.sig"
    doc.write_bytes(content)
    sig.write_bytes(base64.b64decode(signed["documents"][0]["signature"]))
    verified = openssl_verify_signature(paths["leaf"], sig, doc, "sha256")
    assert verified.returncode == 0 and "Verified OK" in verified.stdout, verified.stderr


async def _idp_login(
    http: aiohttp.ClientSession, idp: RunningIdp, authorize: str, redirect_uri: str
) -> str:
    """The IdP's login form, as a browser would post it; returns the callback URL."""
    page = await idp._follow(http, "GET", authorize, None, redirect_uri)
    action = _FORM_ACTION.search(page)
    assert action, page[:300]
    form = {"username": "alice", "password": DEMO_PASSWORDS["alice"]}
    callback = await idp._follow(http, "POST", urljoin(authorize, action[1]), form, redirect_uri)
    assert callback.startswith(redirect_uri + "?"), callback
    return callback
