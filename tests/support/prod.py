"""Helpers of the production tests (issue 13): a TLS test PKI, one signature sent over
http(s) and checked with OpenSSL, and a scrape parsed with prometheus-client's own parser."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from tests.support.idp import (
    DEMO_CLIENTS,
    DEMO_SECRETS,
    RunningIdp,
    start_idp,
    with_redirect_uri,
)
from tests.support.service import SignerProcess, free_port, service_env
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_verify_chain, openssl_verify_signature


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path

    def client_context(self, *, with_certificate: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if with_certificate:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


_CA_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    cn: str,
    *,
    server: bool,
    valid: timedelta = timedelta(days=7),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5) - max(timedelta(0), -valid))
        .not_valid_after(now + valid)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca[1], hashes.SHA256()), key


def write_pair(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path, key_path: Path
) -> None:
    """Replace both files (as cert-manager does: new content under the same names)."""
    tmp_cert, tmp_key = cert_path.with_suffix(".new"), key_path.with_suffix(".newkey")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(tmp_key, key)
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)


def make_tls_files(directory: Path) -> tuple[TlsFiles, Any]:
    """A server CA with a server certificate for 127.0.0.1, and a client CA with one client."""
    directory.mkdir(parents=True, exist_ok=True)
    server_ca = _ca("QES Test TLS CA")
    client_ca = _ca("QES Test Client CA")
    files = TlsFiles(
        ca=directory / "ca.pem",
        cert=directory / "tls.crt",
        key=directory / "tls.key",
        client_ca=directory / "client-ca.pem",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    files.ca.write_bytes(server_ca[0].public_bytes(serialization.Encoding.PEM))
    files.client_ca.write_bytes(client_ca[0].public_bytes(serialization.Encoding.PEM))
    write_pair(*leaf(server_ca, "127.0.0.1", server=True), files.cert, files.key)
    write_pair(*leaf(client_ca, "rp.example", server=False), files.client_cert, files.client_key)
    return files, server_ca


def ephemeral_keys(token: Any) -> list[Any]:
    """Objects a separate process sees in ``token`` that are not long-lived keys: ephemeral
    keys made as token objects by mistake, CSC credential keys, unlabelled objects (the rule
    of tests/conftest.py; other tests' long-lived keys in the session token are fine)."""
    from signer.keys.credential import CREDENTIAL_PREFIX
    from signer.keys.session import EPHEMERAL_LABEL

    return [
        o
        for o in token.list_objects()
        if o.label in ("", EPHEMERAL_LABEL) or o.label.startswith(CREDENTIAL_PREFIX)
    ]


def sign_request_body(content: bytes) -> dict[str, Any]:
    digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
    return {"hash_algorithm": "sha256", "hashes": [digest]}


def check_with_openssl(result: dict[str, Any], content: bytes, work: Path) -> None:
    """The returned chain verifies and the raw ECDSA signature verifies over ``content``."""
    work.mkdir(parents=True, exist_ok=True)
    parts = result["chain"].split("-----END CERTIFICATE-----\n")
    leaf_pem, issuing, root = work / "leaf.pem", work / "issuing.pem", work / "root.pem"
    for path, text in zip((leaf_pem, issuing, root), parts, strict=False):
        path.write_text(text + "-----END CERTIFICATE-----\n")
    openssl_verify_chain(root, issuing, leaf_pem)
    (work / "doc").write_bytes(content)
    (work / "doc.sig").write_bytes(base64.b64decode(result["signatures"][0]))
    done = openssl_verify_signature(leaf_pem, work / "doc.sig", work / "doc", "sha256")
    assert "Verified OK" in done.stdout, done.stdout + done.stderr


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``url`` (text exposition) by name and sorted labels."""
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@contextmanager
def tls_signer(
    *,
    token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    work: Path,
    **extra: str,
) -> Iterator[tuple[SignerProcess, TlsFiles, Any]]:
    """`qes serve` on its TLS listener (a test server CA, client certificates optional and
    checked against a test client CA) with ``extra`` overrides; stopped on exit."""
    files, server_ca = make_tls_files(work / "pki")
    port = free_port()
    env = service_env(
        token=token,
        database_url=database_url,
        idp=idp,
        port=port,
        data_dir=work,
        QES__SERVER__PUBLIC_URL=f"https://127.0.0.1:{port}",
        QES__SERVER__TLS__CERTIFICATE_FILE=f'"{files.cert}"',
        QES__SERVER__TLS__KEY_FILE=f'"{files.key}"',
        QES__SERVER__TLS__CLIENT_CA_FILE=f'"{files.client_ca}"',
        QES__SERVER__TLS__CLIENT_AUTH="optional",
        **extra,
    )
    process = SignerProcess(env, port, work / "signer.log", tls=files.client_context())
    process.start()
    try:
        yield process, files, server_ca
    finally:
        process.stop()


def post_json(url: str, body: Any, headers: dict[str, str], ctx: ssl.SSLContext | None) -> Any:
    request = urllib.request.Request(  # noqa: S310
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60, context=ctx) as r:  # noqa: S310
        return r.status, dict(r.headers), json.loads(r.read())


@dataclass(frozen=True)
class HttpsWebSigner:
    signer: SignerProcess
    idp: RunningIdp
    files: TlsFiles

    @property
    def url(self) -> str:
        return self.signer.url


@contextmanager
def https_web_signer(
    token: SoftHsmToken, database_url: str, work: Path
) -> Iterator[HttpsWebSigner]:
    """`qes serve` with ``[server.tls]`` (a throwaway test CA's certificate) and web signing on,
    with a dev IdP whose ``demo-signer-web`` client returns to its https callback."""
    files, _ = make_tls_files(work / "pki")
    port = free_port()
    public = f"https://127.0.0.1:{port}"
    clients = with_redirect_uri(DEMO_CLIENTS, "demo-signer-web", f"{public}/sign/callback")
    with start_idp(work / "idp", clients=clients) as idp:
        env = service_env(
            token=token, database_url=database_url, idp=idp, port=port, data_dir=work,
            QES__SERVER__PUBLIC_URL=public,
            QES__SERVER__TLS__CERTIFICATE_FILE=f'"{files.cert}"',
            QES__SERVER__TLS__KEY_FILE=f'"{files.key}"',
            QES__WEB_SIGNING__CLIENT_ID="demo-signer-web",
            QES__WEB_SIGNING__ISSUER="demo_people",
            QES_WEB_SIGNING_CLIENT_SECRET=DEMO_SECRETS["demo-signer-web"],
        )  # fmt: skip
        signer = SignerProcess(env, port, work / "signer.log", tls=files.client_context())
        signer.start()
        try:
            yield HttpsWebSigner(signer, idp, files)
        finally:
            signer.stop()
