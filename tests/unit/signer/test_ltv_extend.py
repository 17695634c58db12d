"""`qes ltv extend` against the service's public endpoints, played by the test PKI.

A thread serves what ``qes serve`` publishes without authentication (``/ca/root.cer``,
``/ca/issuing.cer``, ``/ca/root.crl``, the issuing CA's ``/ca/issuing/{key_id}.cer|.crl``,
RFC 6960 ``/ocsp``, RFC 3161 ``/tsa``) with the production ``ca`` functions; the command runs
as a child process. The PKI is made an hour before the real clock, which the command judges the
newest time-stamp's TSA certificate against. What the running service gives is checked in
``tests/integration/cli/test_ltv_cli.py``; that an archive kept up this way validates ten years
on, in ``test_ltv_decades.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.dss import DocumentSecurityStore

from ca.authority import build_crl
from ca.ocsp import IssuerStatus, build_responder_certificate, respond
from signer.formats.ltv import document_time_stamps
from signer.formats.verify import load_trust_bundle, verify_pades
from tests.support.pdfs import multi_page_pdf
from tests.support.pki import NAMES, Pki, make_pki, pem, signed_pdf
from tests.support.service import qes


def _b_t(pki: Pki, when: datetime) -> bytes:
    return signed_pdf(pki, when)


def _handler(pki: Pki) -> type[BaseHTTPRequestHandler]:
    def crl(key: object, issuer: object) -> bytes:
        now = datetime.now(UTC)
        return build_crl(key, issuer, now, timedelta(days=7)).public_bytes(Encoding.DER)  # type: ignore[arg-type]

    responder_key = ec.generate_private_key(ec.SECP256R1())
    responder = build_responder_certificate(
        pki.issuing_key, pki.chain.issuing, responder_key.public_key(), NAMES,
        "Example OCSP Responder", now=pki.clock.now, lifetime=timedelta(days=90),
    )  # fmt: skip
    status = IssuerStatus(pki.chain.issuing, responder, {pki.tsa_certificate.serial_number: None})

    def ocsp(query: bytes) -> bytes:
        return respond(query, [status], responder_key, datetime.now(UTC), timedelta(days=7))

    key_id = pki.chain.issuing.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value.digest.hex()
    routes = {
        "/ca/root.cer": lambda: pki.chain.root.public_bytes(Encoding.DER),
        "/ca/issuing.cer": lambda: pki.chain.issuing.public_bytes(Encoding.DER),
        f"/ca/issuing/{key_id}.cer": lambda: pki.chain.issuing.public_bytes(Encoding.DER),
        "/ca/root.crl": lambda: crl(pki.root_key, pki.chain.root),
        f"/ca/issuing/{key_id}.crl": lambda: crl(pki.issuing_key, pki.chain.issuing),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(routes[self.path]() if self.path in routes else None)

        def do_POST(self) -> None:
            query = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/ocsp":
                self._answer(ocsp(query))
                return
            tsa = pki.tsa(clock=lambda: datetime.now(UTC))
            self._answer(tsa.respond(query, pki.tsa_key) if self.path == "/tsa" else None)

        def _answer(self, body: bytes | None) -> None:
            self.send_response(404 if body is None else 200)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def pki() -> Pki:
    """Made an hour ago: the signature is older than every archive time-stamp."""
    return make_pki(datetime.now(UTC) - timedelta(hours=1))


@pytest.fixture(scope="module")
def service(pki: Pki) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(pki))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_extend_makes_b_t_into_b_lta_and_again(pki: Pki, service: str, tmp_path: Path) -> None:
    signed = tmp_path / "contract.pdf"
    original = _b_t(pki, pki.clock.now + timedelta(seconds=30))  # within the leaf's 10 minutes
    signed.write_bytes(original)
    done = qes("ltv", "extend", signed, "--url", service)
    assert done.returncode == 0, done.stderr
    first = signed.read_bytes()
    out = done.stdout
    assert out.startswith(f"{signed}: archive time-stamp 1 at "), out
    assert "by CN=Example Time-Stamping Unit 1," in out and "extend again before " in out
    assert first.startswith(original) and len(document_time_stamps(first)) == 1
    dss = DocumentSecurityStore.read_dss(PdfFileReader(BytesIO(first)))
    held = {c.dump() for c in dss.load_certs()}
    for cert in (pki.tsa_certificate, pki.chain.issuing, pki.chain.root):
        assert cert.public_bytes(Encoding.DER) in held
    assert len(dss.crls) == 2 and len(dss.ocsps) == 1 and len(held) == 4  # + the responder

    again = tmp_path / "contract.2.pdf"
    done = qes("ltv", "extend", signed, "--url", service, "--out", again)
    assert done.returncode == 0, done.stderr
    assert signed.read_bytes() == first
    second = again.read_bytes()
    assert second.startswith(first) and len(document_time_stamps(second)) == 2

    trust = load_trust_bundle(pem(pki.chain.root) + pem(pki.chain.issuing))
    (report,) = verify_pades(second, trust, now=datetime.now(UTC) + timedelta(days=365))
    assert report.valid, report.failures
    assert report.form == "PAdES-B-LTA"


def test_an_expired_tsa_certificate_is_refused_in_one_line(tmp_path: Path) -> None:
    """Four years ago the TSA certificate (three years) was new; now nothing added can show
    it was valid and unrevoked when it stamped. No request is made (the URL leads nowhere)."""
    then = datetime.now(UTC) - timedelta(days=4 * 365)
    old = make_pki(then)
    signed = tmp_path / "old.pdf"
    signed.write_bytes(_b_t(old, then))
    done = qes("ltv", "extend", signed, "--url", "http://127.0.0.1:9")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"qes: {signed}: the newest time-stamp's TSA certificate (CN="), line
    assert line.endswith("; it can no longer be extended"), line


def test_a_pdf_without_time_stamp_is_refused(tmp_path: Path) -> None:
    unsigned = tmp_path / "plain.pdf"
    unsigned.write_bytes(multi_page_pdf(1))
    done = qes("ltv", "extend", unsigned, "--url", "http://127.0.0.1:9")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line == f"qes: {unsigned}: no time-stamp to preserve (sign at B-T or later first)"
