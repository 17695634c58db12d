"""Certificate-bound access tokens (RFC 8705 §3) on the TLS listener: a `qes serve` whose batch
issuer is marked ``mtls`` honours a token only over a connection that presented the client
certificate whose SHA-256 is the token's ``cnf.x5t#S256``.

The tokens carry the claims the dev IdP gives demo-batch and are signed with its real key (the
dev IdP itself does not run TLS, so it cannot see a client certificate to bind).
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.prod import TlsFiles, post_json, sign_request_body, tls_signer
from tests.support.service import SignerProcess
from tests.support.softhsm import SoftHsmToken


@pytest.fixture(scope="module")
def mtls_signer(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SignerProcess, TlsFiles]]:
    work = tmp_path_factory.mktemp("mtls")
    with tls_signer(
        token=softhsm_token,
        database_url=database_url,
        idp=idp,
        work=work,
        QES__ISSUERS__DEMO_ORGANISATIONS__SENDER_CONSTRAINT='"mtls"',
    ) as (process, files, _):
        yield process, files


def thumbprint(cert: Path) -> str:
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def bound(idp: RunningIdp, x5t: str) -> str:
    org = {"identity_type": "organisation", "org_id": "NTRDE-HRB12345"}
    return idp.mint(**org, cnf={"x5t#S256": x5t})


def post(signer: SignerProcess, token: str, ctx: ssl.SSLContext) -> tuple[int, dict[str, Any]]:
    url = f"{signer.url}/api/v1/signatures"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        status, _, body = post_json(url, sign_request_body(b"bound"), auth, ctx)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read()))
    return status, body


def test_a_certificate_bound_token_signs_only_with_its_certificate(
    mtls_signer: tuple[SignerProcess, TlsFiles], idp: RunningIdp
) -> None:
    signer, files = mtls_signer
    with_cert = files.client_context(with_certificate=True)
    token = bound(idp, thumbprint(files.client_cert))
    status, body = post(signer, token, with_cert)
    assert status == 201, body
    # stolen: the same token over a connection without the certificate
    status, body = post(signer, bound(idp, thumbprint(files.client_cert)), files.client_context())
    assert (status, body["type"]) == (401, "/problems/token-sender-constrained"), body
    # bound to another certificate
    status, body = post(signer, bound(idp, thumbprint(files.cert)), with_cert)
    assert (status, body["type"]) == (401, "/problems/token-binding-mismatch"), body


async def test_an_unbound_token_of_an_mtls_issuer_is_refused(
    mtls_signer: tuple[SignerProcess, TlsFiles], idp: RunningIdp
) -> None:
    signer, files = mtls_signer
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    status, body = post(signer, token, files.client_context(with_certificate=True))
    assert (status, body["type"]) == (401, "/problems/token-sender-constrained"), body
