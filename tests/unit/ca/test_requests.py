"""ca.requests: what crosses the air gap in the key ceremony (issue 15 item 1), with in-memory
keys; OpenSSL judges the request and what the root makes of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import build_root_certificate
from ca.ceremony import CeremonyError
from ca.ocsp import RESPONDER_LIFETIME
from ca.requests import (
    CrlRequest,
    build_request,
    certificate_sha256,
    issue_from_request,
    requested_key,
    sign_crl_request,
    spki_sha256,
    verify_root_crl,
)
from ca.revocation import Revocation
from tests.support.pki import NAMES, POLICY
from tests.support.verify import run

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _root() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, build_root_certificate(key, NAMES, NOW, timedelta(days=7300))


def _issue(
    role: str, root: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], csr: bytes
) -> x509.Certificate:
    return issue_from_request(
        role, root[0], root[1], csr, NAMES, POLICY,
        ocsp_common_name="Example OCSP Responder", now=NOW, lifetime=timedelta(days=3650),
    )  # fmt: skip


def test_the_root_issues_for_the_requested_key_only(tmp_path: Path) -> None:
    root = _root()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = build_request(key, NAMES.issuing_name())
    (tmp_path / "req.der").write_bytes(csr)
    done = run("openssl", "req", "-inform", "DER", "-in", tmp_path / "req.der", "-verify", "-noout")
    assert done.returncode == 0 and "verify OK" in done.stdout + done.stderr, done.stderr
    assert spki_sha256(requested_key(csr)) == spki_sha256(key.public_key())
    issuing = _issue("issuing", root, csr)
    responder = _issue("ocsp-root", root, build_request(key, NAMES.service_name("x")))
    assert spki_sha256(issuing.public_key()) == spki_sha256(key.public_key())
    assert issuing.subject == NAMES.issuing_name()  # the CA's names, not the request's
    assert responder.not_valid_after_utc - responder.not_valid_before_utc == RESPONDER_LIFETIME
    for name, cert in (("issuing", issuing), ("responder", responder)):
        (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    (tmp_path / "root.pem").write_bytes(root[1].public_bytes(Encoding.PEM))
    for name in ("issuing", "responder"):
        done = run("openssl", "verify", "-attime", str(int(NOW.timestamp()) + 60),
                   "-CAfile", tmp_path / "root.pem", tmp_path / f"{name}.pem")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    tampered = bytearray(csr)
    tampered[-3] ^= 0x01
    with pytest.raises(CeremonyError, match="does not verify"):
        requested_key(bytes(tampered))
    with pytest.raises(CeremonyError, match="not a PKCS#10"):
        requested_key(b"hello")
    with pytest.raises(CeremonyError, match="role 'tsa'"):
        _issue("tsa", root, csr)


def test_crl_request_round_trip_and_the_signed_crl() -> None:
    root, other = _root(), _root()
    revoked = (
        Revocation(
            0xABC, NOW - timedelta(days=1), x509.ReasonFlags.key_compromise, NOW - timedelta(days=2)
        ),
    )
    request = CrlRequest(certificate_sha256(root[1]), 1_800_000_000, revoked)
    assert CrlRequest.parse(request.to_json()) == request
    with pytest.raises(CeremonyError, match="not as `qes ca request crl` writes it"):
        CrlRequest.parse(b'{"root_sha256": "00"}')
    crl = sign_crl_request(root[0], root[1], request, NOW, timedelta(days=90))
    der = crl.public_bytes(Encoding.DER)
    found, signer = verify_root_crl(der, (other[1], root[1]))
    assert signer == root[1] and found.next_update_utc == NOW + timedelta(days=90)
    assert found.get_revoked_certificate_by_serial_number(0xABC) is not None
    with pytest.raises(CeremonyError, match="made for another root"):
        sign_crl_request(other[0], other[1], request, NOW, timedelta(days=90))
    with pytest.raises(CeremonyError, match="not signed by the stored root"):
        verify_root_crl(der, (other[1],))
