"""TLS on the listener (issue 13, item 1), against a real `qes serve` and checked with OpenSSL:
TLS 1.3 only (a TLS 1.2 client is refused), HSTS, a batch signature over https, certificate
rotation without restart, mutual TLS, and one-line start-up errors naming the setting."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from io import BytesIO
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.signers.csc_signer import (
    CSCServiceSessionInfo,
    CSCSigner,
    fetch_certs_in_csc_credential,
)

from tests.support.csc import HashBoundAuthorization, new_credential
from tests.support.idp import (
    DEMO_SECRETS,
    RunningIdp,
)
from tests.support.pdfs import multi_page_pdf
from tests.support.prod import (
    TlsFiles,
    check_with_openssl,
    https_web_signer,
    leaf,
    make_tls_files,
    post_json,
    sign_request_body,
    write_pair,
)
from tests.support.prod import tls_signer as tls_signer_process
from tests.support.service import DEV_CONFIG, ROOT, SignerProcess
from tests.support.softhsm import SoftHsmToken
from tests.support.webflow import sign_across

RELOAD_SECONDS = 0.3


@pytest.fixture(scope="module")
def tls_signer(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SignerProcess, TlsFiles, object]]:
    work = tmp_path_factory.mktemp("tls")
    with tls_signer_process(
        token=softhsm_token,
        database_url=database_url,
        idp=idp,
        work=work,
        QES__SERVER__TLS__RELOAD_SECONDS=str(RELOAD_SECONDS),
    ) as running:
        yield running


def s_client(port: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *map(str, args)],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def served_serial(port: int, ca: Path) -> int:
    """The serial of the certificate a fresh TLS 1.3 handshake gets."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-CAfile", str(ca),
         "-verify_return_error", "-showcerts"],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return x509.load_pem_x509_certificates(done.stdout.encode())[0].serial_number


def test_tls12_refused_tls13_accepted(tls_signer: tuple[SignerProcess, TlsFiles, object]) -> None:
    signer, files, _ = tls_signer
    old = s_client(signer.port, "-tls1_2", "-CAfile", files.ca)
    assert old.returncode != 0, old.stdout + old.stderr
    assert "CONNECTION ESTABLISHED" not in old.stderr, old.stderr  # no TLS 1.2 session
    new = s_client(signer.port, "-tls1_3", "-CAfile", files.ca, "-verify_return_error")
    assert new.returncode == 0, new.stderr
    assert "Protocol version: TLSv1.3" in new.stderr, new.stderr


async def test_batch_signature_over_https_with_hsts(
    tls_signer: tuple[SignerProcess, TlsFiles, object], idp: RunningIdp, tmp_path: Path
) -> None:
    signer, files, _ = tls_signer
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    content = b"signed over TLS 1.3"
    status, headers, result = post_json(
        f"{signer.url}/api/v1/signatures",
        sign_request_body(content),
        {"Authorization": f"Bearer {token}"},
        files.client_context(),
    )
    assert status == 201
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert result["record_url"].startswith(f"https://127.0.0.1:{signer.port}/")
    check_with_openssl(result, content, tmp_path)


def test_client_certificates_are_checked(
    tls_signer: tuple[SignerProcess, TlsFiles, object],
) -> None:
    """``client_auth = "optional"``: a client may present a certificate, which must chain to
    ``client_ca_file``; one from another CA is refused in the handshake."""
    signer, files, server_ca = tls_signer
    url = f"{signer.url}/healthz"
    for ctx in (files.client_context(), files.client_context(with_certificate=True)):
        with urllib.request.urlopen(url, timeout=10, context=ctx) as r:  # noqa: S310
            assert r.status == 200
    stranger = files.client_cert.parent / "stranger"
    cert, key = leaf(server_ca, "stranger", server=False)  # type: ignore[arg-type]
    write_pair(cert, key, stranger.with_suffix(".crt"), stranger.with_suffix(".key"))
    ctx = files.client_context()
    ctx.load_cert_chain(stranger.with_suffix(".crt"), stranger.with_suffix(".key"))
    # TLS 1.3: the server checks the client's certificate after the client's Finished, and
    # drops the connection before any HTTP response.
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url, timeout=10, context=ctx)  # noqa: S310


def test_certificate_rotates_without_restart(
    tls_signer: tuple[SignerProcess, TlsFiles, object],
) -> None:
    signer, files, server_ca = tls_signer
    before = served_serial(signer.port, files.ca)
    pid = signer.proc.pid if signer.proc else None
    new_cert, new_key = leaf(server_ca, "127.0.0.1", server=True)  # type: ignore[arg-type]
    # Half a rotation (the new key, the old certificate) does not check out: the old pair stays.
    spare = files.cert.parent / "spare"
    write_pair(new_cert, new_key, spare.with_suffix(".crt"), spare.with_suffix(".key"))
    files.key.write_bytes(spare.with_suffix(".key").read_bytes())
    time.sleep(RELOAD_SECONDS * 4)
    assert served_serial(signer.port, files.ca) == before
    assert "tls_reload_failed" in signer.log.read_text()
    files.cert.write_bytes(spare.with_suffix(".crt").read_bytes())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and served_serial(signer.port, files.ca) == before:
        time.sleep(RELOAD_SECONDS)
    assert served_serial(signer.port, files.ca) == new_cert.serial_number
    assert signer.proc is not None and signer.proc.pid == pid and signer.proc.poll() is None
    assert signer.ready()


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer", "serve", "--config", str(DEV_CONFIG)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("missing certificate", "server.tls.certificate_file: cannot read"),
        ("not a certificate", "server.tls.certificate_file:"),
        ("key of another certificate", "server.tls.key_file: the key does not match"),
        ("unreadable key", "server.tls.key_file: cannot read"),
        ("expired certificate", "server.tls.certificate_file: the certificate expired"),
        ("tls 1.1", "server.tls.min_version: must be"),
        ("http public url", "server.public_url: must be an https URL"),
    ],
)
def test_bad_tls_settings_stop_the_start_in_one_line(tmp_path: Path, case: str, named: str) -> None:
    import os

    files, server_ca = make_tls_files(tmp_path / "pki")
    tls = {"CERTIFICATE_FILE": str(files.cert), "KEY_FILE": str(files.key)}
    public = "https://signer.example.com"
    extra: dict[str, str] = {}
    if case == "missing certificate":
        tls["CERTIFICATE_FILE"] = str(tmp_path / "nope.crt")
    elif case == "not a certificate":
        files.cert.write_text("hello\n")
    elif case == "key of another certificate":
        other = leaf(server_ca, "other", server=True)  # type: ignore[arg-type]
        write_pair(other[0], leaf(server_ca, "x", server=True)[1], files.cert, files.key)  # type: ignore[arg-type]
    elif case == "unreadable key":
        tls["KEY_FILE"] = str(tmp_path / "missing.key")
    elif case == "expired certificate":
        old = leaf(server_ca, "127.0.0.1", server=True, valid=-timedelta(days=1))  # type: ignore[arg-type]
        write_pair(*old, files.cert, files.key)
    elif case == "tls 1.1":
        extra["QES__SERVER__TLS__MIN_VERSION"] = '"1.1"'
    elif case == "http public url":
        public = "http://signer.example.com"
    env = {
        **os.environ,
        "QES_HSM_PIN": "1234",
        "QES_DATABASE_URL": "postgresql://127.0.0.1:1/none",
        "QES__SERVER__PUBLIC_URL": public,
        **{f"QES__SERVER__TLS__{k}": f'"{v}"' for k, v in tls.items()},
        **extra,
    }
    done = _serve(env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert named in lines[0], lines[0]


async def test_web_signing_flow_over_https(
    softhsm_token: SoftHsmToken,
    database_url: str,
    ca_ready: None,
    tmp_path: Path,
) -> None:
    """A person signs through a web app with every step on the TLS listener (HSTS on the
    pages); the relying party's result verifies with OpenSSL."""
    with https_web_signer(softhsm_token, database_url, tmp_path) as web:
        public, tls = web.url, web.files.client_context()
        await sign_across(public, public, web.idp, web.signer.env, tmp_path, tls=tls)
        # The browser pages carry HSTS too (here: an unknown request's page).
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(  # noqa: S310
                f"{public}/sign/00000000-0000-0000-0000-000000000000", timeout=10, context=tls
            )
        assert missing.value.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_pyhanko_csc_signer_over_https(
    tls_signer: tuple[SignerProcess, TlsFiles, object], idp: RunningIdp, tmp_path: Path
) -> None:
    """An unmodified pyHanko CSCSigner signs a PDF through the TLS listener (trusting the test
    CA); the pyHanko CLI validates it."""
    signer, files, _ = tls_signer
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    connector = aiohttp.TCPConnector(ssl=files.client_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        credential_id = await new_credential(http, signer.url, token)
        session = CSCServiceSessionInfo(
            service_url=signer.url, credential_id=credential_id, oauth_token=token
        )
        credential = await fetch_certs_in_csc_credential(http, session)
        auth = HashBoundAuthorization(http, session, credential)
        pdf_signer = signers.PdfSigner(
            signers.PdfSignatureMetadata(
                field_name="Signature1", subfilter=fields.SigSeedSubFilter.PADES,
                md_algorithm="sha256",
            ),
            signer=CSCSigner(http, auth_manager=auth),
        )  # fmt: skip
        out = await pdf_signer.async_sign_pdf(IncrementalPdfFileWriter(BytesIO(multi_page_pdf(1))))
    signed, root = tmp_path / "signed.pdf", tmp_path / "root.pem"
    signed.write_bytes(out.getvalue())
    root.write_bytes(
        x509.load_der_x509_certificate(credential.chain[-1].dump()).public_bytes(Encoding.PEM)
    )
    done = subprocess.run(
        [str(Path(sys.executable).parent / "pyhanko"), "sign", "validate", "--trust", str(root),
         "--trust-replace", "--no-revocation-check", "--executive-summary", str(signed)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith(":VALID"), done.stdout
