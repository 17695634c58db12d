"""Revocation of the issuing CA and TSA certificates: CRL entries, the delegated OCSP
responder certificate and RFC 6960 answers, each judged by OpenSSL and pkilint."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from ca.authority import build_crl
from ca.errors import PolicyError
from ca.ocsp import (
    RESPONDER_RENEW_BEFORE,
    IssuerStatus,
    build_responder_certificate,
    renewable,
    renewal_due,
    respond,
)
from ca.revocation import REASONS, Revocation, reason_from_name
from tests.support.pki import NAMES, Pki, make_pki, pem
from tests.support.pkilint import lint, write_pem

DAY = timedelta(days=1)


def _hex(serial: int) -> str:
    """A serial as ``openssl crl -text`` prints it: upper-case hex of whole octets."""
    digits = f"{serial:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )


@pytest.fixture
def pki() -> Pki:
    return make_pki(datetime.now(UTC))  # OpenSSL checks OCSP times against the real clock


def test_reasons_are_the_rfc_5280_names_without_hold() -> None:
    assert reason_from_name("keyCompromise") is x509.ReasonFlags.key_compromise
    assert "certificateHold" not in REASONS and "removeFromCRL" not in REASONS
    for bad in ("certificateHold", "aACompromise", "key_compromise", ""):
        with pytest.raises(PolicyError, match="reason"):
            reason_from_name(bad)


def test_revocation_values() -> None:
    now = datetime(2026, 5, 1, 10, 0, 0, 999, tzinfo=UTC)
    r = Revocation(2**70, now, x509.ReasonFlags.key_compromise, now - DAY)
    assert r.revoked_at == now.replace(microsecond=0)
    assert r.encoded_reason is x509.ReasonFlags.key_compromise
    assert Revocation(2**70, now).encoded_reason is None  # unspecified: no reasonCode
    with pytest.raises(PolicyError, match="invalidity_date"):
        Revocation(2**70, now, invalidity_date=now + DAY)
    with pytest.raises(PolicyError, match="reason"):
        Revocation(2**70, now, x509.ReasonFlags.certificate_hold)
    with pytest.raises(PolicyError, match="clock"):
        Revocation(2**70, now.replace(tzinfo=None))


def test_crl_entries_with_reason_and_invalidity_date(pki: Pki, tmp_path: Path) -> None:
    now = pki.clock()
    tsa = pki.tsa_certificate
    entries = [
        Revocation(tsa.serial_number, now - DAY, x509.ReasonFlags.key_compromise, now - 2 * DAY),
        Revocation(2**66 + 5, now - DAY),
    ]
    crl = build_crl(pki.issuing_key, pki.chain.issuing, now, 7 * DAY, entries, crl_number=4711)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 4711
    path = tmp_path / "issuing.crl"
    path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    root, issuing = write_pem(tmp_path, "root.pem", pki.chain.root), tmp_path / "issuing.pem"
    issuing.write_bytes(pem(pki.chain.issuing) + pem(pki.chain.root))
    done = openssl("crl", "-inform", "DER", "-in", path, "-CAfile", issuing, "-noout", "-text")
    assert done.returncode == 0 and "verify OK" in done.stderr, done.stderr
    text = done.stdout
    assert f"Serial Number: {_hex(tsa.serial_number)}" in text
    assert "Key Compromise" in text and "Invalidity Date" in text
    assert text.count("Reason Code") == 1  # unspecified is left out (RFC 5280 §5.3.1)
    assert "CRL Number" in text and "4711" in text
    pem_path = tmp_path / "issuing.pem.crl"
    pem_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    assert lint("lint_crl", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", pem_path)[0] == []
    # OpenSSL refuses the revoked TSA certificate with this CRL
    tsa_pem = write_pem(tmp_path, "tsa.pem", tsa)
    untrusted = write_pem(tmp_path, "issuing-only.pem", pki.chain.issuing)
    refused = openssl(
        "verify", "-crl_check", "-CAfile", root, "-untrusted", untrusted,
        "-CRLfile", pem_path, tsa_pem,
    )  # fmt: skip
    assert refused.returncode != 0 and "revoked" in refused.stdout + refused.stderr


def test_crl_refuses_a_serial_twice(pki: Pki) -> None:
    now = pki.clock()
    with pytest.raises(PolicyError, match="twice"):
        build_crl(pki.root_key, pki.chain.root, now, DAY, [Revocation(2**65, now), 2**65])
    with pytest.raises(PolicyError, match="crl_number"):
        build_crl(pki.root_key, pki.chain.root, now, DAY, crl_number=-1)


@dataclass(frozen=True)
class Responders:
    key: ec.EllipticCurvePrivateKey
    root: x509.Certificate  # answers for the issuing CA
    issuing: x509.Certificate  # answers for the TSA


def responders(pki: Pki) -> Responders:
    key = ec.generate_private_key(ec.SECP256R1())
    now, cn = pki.clock(), "Example OCSP Responder"
    made = {
        name: build_responder_certificate(
            issuer_key, issuer, key.public_key(), NAMES, cn, now=now - DAY, lifetime=30 * DAY
        )
        for name, issuer_key, issuer in (
            ("root", pki.root_key, pki.chain.root),
            ("issuing", pki.issuing_key, pki.chain.issuing),
        )
    }
    return Responders(key, made["root"], made["issuing"])


def test_responder_certificate_profile(pki: Pki, tmp_path: Path) -> None:
    r = responders(pki)
    cert = r.issuing
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING]
    assert cert.extensions.get_extension_for_class(x509.OCSPNoCheck).critical is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    for issuer, responder in ((pki.chain.root, r.root), (pki.chain.issuing, r.issuing)):
        responder.verify_directly_issued_by(issuer)
        issuer_pem = write_pem(tmp_path, "issuer.pem", issuer)
        responder_pem = write_pem(tmp_path, "responder.pem", responder)
        assert lint("lint_pkix_cert", "-s", "WARNING", responder_pem)[0] == []
        assert lint("lint_pkix_signer_signee_cert_chain", issuer_pem, responder_pem)[0] == []
    with pytest.raises(PolicyError, match="outlive"):
        build_responder_certificate(
            pki.root_key, pki.chain.root, r.key.public_key(), NAMES, "x", now=pki.clock(),
            lifetime=3650 * 10 * DAY,
        )  # fmt: skip
    with pytest.raises(PolicyError, match="issuer"):
        build_responder_certificate(
            pki.root_key, pki.chain.root, pki.root_key.public_key(), NAMES, "x",
            now=pki.clock(), lifetime=DAY,
        )  # fmt: skip


def test_a_responder_is_renewed_a_third_before_its_end_unless_it_ends_with_its_ca(
    pki: Pki,
) -> None:
    """RFC 6960 §4.2.2.2.1: with id-pkix-ocsp-nocheck a responder certificate is short-lived
    and renewed once a third of its life is left; one cut to its CA's end (a past issuing CA
    generation near its end) is not: a new one could live no longer."""
    key, now = ec.generate_private_key(ec.SECP256R1()), pki.clock()
    issuing = pki.chain.issuing

    def made(lifetime: timedelta) -> x509.Certificate:
        return build_responder_certificate(
            pki.issuing_key, issuing, key.public_key(), NAMES, "R", now=now, lifetime=lifetime
        )

    full = made(90 * DAY)
    renew_at = full.not_valid_after_utc - RESPONDER_RENEW_BEFORE
    assert renewable(full, issuing)
    assert not renewal_due(full, issuing, renew_at - timedelta(seconds=1))
    assert renewal_due(full, issuing, renew_at)
    cut = made(issuing.not_valid_after_utc - now)  # as `qes init` cuts it near the CA's end
    assert not renewable(cut, issuing)
    assert not renewal_due(cut, issuing, cut.not_valid_after_utc - DAY)
    almost = made(issuing.not_valid_after_utc - now - 2 * DAY)  # a renewal gains two days
    assert renewal_due(almost, issuing, almost.not_valid_after_utc - DAY)


def _statuses(pki: Pki, r: Responders, revoked: Revocation | None) -> list[IssuerStatus]:
    return [
        IssuerStatus(pki.chain.root, r.root, {pki.chain.issuing.serial_number: None}),
        IssuerStatus(
            pki.chain.issuing,
            r.issuing,
            {pki.tsa_certificate.serial_number: revoked},
            extra=(pki.chain.issuing,),
        ),
    ]


def _ask(
    tmp_path: Path,
    issuer: Path,
    cert: Path,
    statuses: list[IssuerStatus],
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
) -> tuple[subprocess.CompletedProcess[str], bytes]:
    """``openssl ocsp`` makes the request (with a nonce), we answer, OpenSSL checks the
    signature, the responder's authority and the nonce (``-issuer``/``-cert`` would make a new
    request with another nonce, so the status is read from ``-resp_text``)."""
    req, resp = tmp_path / "req.der", tmp_path / "resp.der"
    made = openssl("ocsp", "-issuer", issuer, "-cert", cert, "-reqout", req)
    assert made.returncode == 0, made.stderr
    resp.write_bytes(respond(req.read_bytes(), statuses, key, now, timedelta(hours=1)))
    root = tmp_path / "root.pem"
    checked = openssl(
        "ocsp", "-reqin", req, "-respin", resp, "-CAfile", root, "-resp_text",
    )  # fmt: skip
    return checked, resp.read_bytes()


def test_ocsp_good_revoked_and_unknown_checked_by_openssl(pki: Pki, tmp_path: Path) -> None:
    r, now = responders(pki), pki.clock()
    files = pki.write(tmp_path)
    good, resp = _ask(tmp_path, files["issuing"], files["tsa"], _statuses(pki, r, None), r.key, now)
    assert "Response verify OK" in good.stderr, good.stdout + good.stderr
    assert "Cert Status: good" in good.stdout
    pem_resp = tmp_path / "resp.der"
    assert lint("lint_ocsp_response", "-s", "WARNING", pem_resp)[0] == []

    gone = Revocation(pki.tsa_certificate.serial_number, now - DAY, x509.ReasonFlags.superseded)
    revoked, _ = _ask(tmp_path, files["issuing"], files["tsa"], _statuses(pki, r, gone), r.key, now)
    assert "Response verify OK" in revoked.stderr, revoked.stdout + revoked.stderr
    assert "Cert Status: revoked" in revoked.stdout
    assert "Revocation Reason: superseded (0x4)" in revoked.stdout

    # the issuing CA, answered by the root's delegated responder
    issuing_ca, _ = _ask(
        tmp_path, files["root"], files["issuing"], _statuses(pki, r, None), r.key, now
    )
    assert "Response verify OK" in issuing_ca.stderr, issuing_ca.stdout + issuing_ca.stderr
    assert "Cert Status: good" in issuing_ca.stdout

    _, leaf = pki.signer()  # issued by the issuing CA, but not one the responder knows
    leaf_pem = write_pem(tmp_path, "leaf.pem", leaf)
    unknown, _ = _ask(tmp_path, files["issuing"], leaf_pem, _statuses(pki, r, None), r.key, now)
    assert "Response verify OK" in unknown.stderr, unknown.stdout + unknown.stderr
    assert "Cert Status: unknown" in unknown.stdout
    parsed = ocsp.load_der_ocsp_response(resp)
    assert parsed.this_update_utc == now.replace(microsecond=0)
    assert parsed.next_update_utc == parsed.this_update_utc + timedelta(hours=1)
    assert parsed.responder_key_hash is not None


def test_ocsp_malformed_and_unauthorized(pki: Pki, tmp_path: Path) -> None:
    r, now = responders(pki), pki.clock()
    statuses = _statuses(pki, r, None)
    for junk in (b"", b"\x30\x03\x02\x01\x01", b"not der at all", b"\x30" * 9000):
        answer = ocsp.load_der_ocsp_response(respond(junk, statuses, r.key, now, DAY))
        assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    other = make_pki(now)  # a CA this responder does not answer for
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(other.tsa_certificate, other.chain.issuing, hashes.SHA256())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    answer = ocsp.load_der_ocsp_response(respond(request, statuses, r.key, now, DAY))
    assert answer.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    long_nonce = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(pki.tsa_certificate, pki.chain.issuing, hashes.SHA256())
        .add_extension(x509.OCSPNonce(b"n" * 33), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    answer = ocsp.load_der_ocsp_response(respond(long_nonce, statuses, r.key, now, DAY))
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
