"""A signature whose TSA certificate was revoked is refused by ``qes verify`` and by pyHanko.

Issue 15 item 3: the revocation data is the issuing CA's CRL (the TSA certificate's CRL
distribution point), either in the PDF's DSS (B-LT), in the CMS (CAdES B-LT) or given to
``qes verify --crl``. Revoked at or before the token's genTime: refused for every reason.
Revoked later for key compromise (or no reason): refused unless a later document time-stamp
proves the token existed before (RFC 3161 §4); for a harmless reason (superseded): accepted.
pyHanko's AdES validation with revocation checking refuses the same B-LT PDF.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import build_crl
from ca.revocation import Revocation
from signer.formats.cms import CmsSigner, cades_b_t
from signer.formats.ltv import ValidationData, add_validation_data, cades_b_lt
from signer.formats.verify import (
    SignatureReport,
    TrustBundle,
    load_crls,
    load_trust_bundle,
    verify_cades,
    verify_pades,
)
from tests.support.pki import NOW, Clock, Pki, make_pki, pem
from tests.support.service import qes
from tests.unit.signer.test_ltv import NEXT_DAY, _b_t, adesverify

BEFORE = NOW - timedelta(hours=1)  # before the signature-time-stamp's genTime (NOW)
AFTER = NOW + timedelta(hours=2)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def _crl(
    pki: Pki,
    revoked: dict[int, datetime] | None = None,
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
) -> bytes:
    """The issuing CA's CRL, made three hours after the signature, listing ``revoked``."""
    entries = [Revocation(serial, when, reason) for serial, when in (revoked or {}).items()]
    crl = build_crl(
        pki.issuing_key, pki.chain.issuing, NOW + timedelta(hours=3), timedelta(days=7), entries
    )
    return crl.public_bytes(Encoding.DER)


def _b_lt(pki: Pki, issuing_crl: bytes, signed: bytes | None = None) -> bytes:
    """``signed`` (default: a new B-T PDF) with the root's CRL and ``issuing_crl`` in its DSS."""
    root_crl = build_crl(pki.root_key, pki.chain.root, NOW + timedelta(hours=3), timedelta(days=7))
    data = ValidationData(
        (pki.chain.issuing, pki.chain.root, pki.tsa_certificate),
        (root_crl.public_bytes(Encoding.DER), issuing_crl),
    )
    return add_validation_data(_b_t(pki) if signed is None else signed, data)


def _trust(pki: Pki) -> TrustBundle:
    return load_trust_bundle(pem(pki.chain.root) + pem(pki.chain.issuing))


def _tsa_check(report: SignatureReport) -> str:
    (check,) = [c for c in report.checks if c.name == "tsa-certificate"]
    return f"{check.ok} {check.detail}"


def test_revoked_before_the_time_stamp_is_refused_from_the_dss(pki: Pki) -> None:
    serial = pki.tsa_certificate.serial_number
    revoked = _b_lt(pki, _crl(pki, {serial: BEFORE}))
    (report,) = verify_pades(revoked, _trust(pki), now=NEXT_DAY)
    assert [c.name for c in report.failures] == ["tsa-certificate"], report.failures
    assert report.failures[0].detail == (
        "revoked (no reason given) at 2026-03-01T11:00:00Z, before its genTime 2026-03-01T12:00:00Z"
    )
    (fine,) = verify_pades(_b_lt(pki, _crl(pki)), _trust(pki), now=NEXT_DAY)
    assert fine.valid, fine.failures


def test_pyhanko_refuses_the_same_pdf(pki: Pki, tmp_path: Path) -> None:
    serial = pki.tsa_certificate.serial_number
    (tmp_path / "root.pem").write_bytes(pem(pki.chain.root))
    for name, crl in (("good", _crl(pki)), ("revoked", _crl(pki, {serial: BEFORE}))):
        (tmp_path / f"{name}.pdf").write_bytes(_b_lt(pki, crl))
    valid, output = adesverify(tmp_path / "good.pdf", tmp_path / "root.pem", NEXT_DAY)
    assert valid, output
    valid, output = adesverify(tmp_path / "revoked.pdf", tmp_path / "root.pem", NEXT_DAY)
    assert not valid
    assert "revoked" in output.lower(), output


def test_a_given_crl_refuses_a_b_t_pdf_on_the_command_line(pki: Pki, tmp_path: Path) -> None:
    serial = pki.tsa_certificate.serial_number
    pdf, bundle, crl = tmp_path / "b-t.pdf", tmp_path / "trust.pem", tmp_path / "issuing.crl"
    pdf.write_bytes(_b_t(pki))
    bundle.write_bytes(pem(pki.chain.root) + pem(pki.chain.issuing))
    crl.write_bytes(pem_crl(_crl(pki, {serial: BEFORE})))  # PEM; DER works as well
    at = NEXT_DAY.strftime("%Y-%m-%dT%H:%M:%SZ")
    plain = qes("verify", pdf, "--trust", bundle, "--at", at)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    refused = qes("verify", pdf, "--trust", bundle, "--at", at, "--crl", crl)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    expected = "  FAILED      tsa-certificate: revoked (no reason given) at 2026-03-01T11:00:00Z"
    assert expected in refused.stdout
    (loaded,) = load_crls(crl.read_bytes())
    assert loaded.issuer.dump() == pki.chain.issuing.subject.public_bytes()


def test_cades_b_lt_with_the_revoking_crl_is_refused(pki: Pki) -> None:
    key, cert = pki.signer()
    tsa = pki.tsa(clock=Clock(NOW))
    document = b"order 4711\n"
    signer = CmsSigner(
        cert, (pki.chain.issuing, pki.chain.root), key,
        lambda d, a: tsa.timestamp_digest(d, a, pki.tsa_key),
    )  # fmt: skip
    b_t = cades_b_t(hashlib.sha256(document).digest(), "sha256", signer, signing_time=NOW)
    serial = pki.tsa_certificate.serial_number
    data = ValidationData((pki.tsa_certificate,), (_crl(pki, {serial: BEFORE}),))
    report = verify_cades(document, cades_b_lt(b_t, data), _trust(pki), now=NEXT_DAY)
    assert [c.name for c in report.failures] == ["tsa-certificate"], report.failures


@pytest.mark.parametrize(
    ("reason", "archived", "refused"),
    [
        (x509.ReasonFlags.key_compromise, False, True),  # nothing shows the token came first
        (x509.ReasonFlags.key_compromise, True, False),  # a document time-stamp before it does
        (x509.ReasonFlags.superseded, False, False),  # the key was not lost: tokens stand
    ],
)
def test_revoked_after_the_time_stamp(
    pki: Pki, reason: x509.ReasonFlags, archived: bool, refused: bool
) -> None:
    serial = pki.tsa_certificate.serial_number
    signed = _b_t(pki)
    if archived:  # a document time-stamp at NOW + 1 min by another, unrevoked TSA of the CA
        other_key, other_cert = pki.successor_tsa(2, NOW - timedelta(minutes=5))
        stamper = pki.tsa(certificate=other_cert, clock=Clock(NOW + timedelta(minutes=1)))
        signed = _time_stamped_by(
            signed, lambda d: stamper.timestamp_digest(d, "sha256", other_key)
        )
    pdf = _b_lt(pki, _crl(pki, {serial: AFTER}, reason=reason), signed)  # the CRL comes later
    (report,) = verify_pades(pdf, _trust(pki), now=NEXT_DAY)
    assert report.valid is not refused, report.checks
    if refused:
        assert _tsa_check(report).startswith(
            "False revoked (key_compromise) at 2026-03-01T14:00:00Z; nothing proves the token"
        )


def pem_crl(der: bytes) -> bytes:
    return x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)


def _time_stamped_by(pdf: bytes, stamp: object) -> bytes:
    from signer.formats.ltv import embed_document_time_stamp, prepare_document_time_stamp

    prepared = prepare_document_time_stamp(pdf)
    return embed_document_time_stamp(prepared, stamp(prepared.digest))  # type: ignore[operator]


def test_a_crl_signed_by_someone_else_refuses_nothing(pki: Pki) -> None:
    other = make_pki()
    serial = pki.tsa_certificate.serial_number
    forged = build_crl(
        other.issuing_key, other.chain.issuing, NOW, timedelta(days=7), {serial: BEFORE}
    ).public_bytes(Encoding.DER)
    assert x509.load_der_x509_crl(forged).issuer == pki.chain.issuing.subject
    (report,) = verify_pades(_b_lt(pki, forged), _trust(pki), now=NEXT_DAY)
    assert report.valid, report.failures
