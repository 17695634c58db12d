"""CAdES baseline B-LT (``signer.formats.ltv.cades_b_lt``) judged by OpenSSL and ``qes verify``.

The validation data goes into the SignedData's ``certificates`` and ``crls`` (EN 319 122-1
§6.3; EU DSS's B-LT checks require the certificate-values and revocation-values attributes to
be absent). pyHanko reads no revocation data from a detached CMS, so the independent checks
are OpenSSL's: the signature still verifies, and the CRLs taken from the CMS show the issuing
CA and the TSA certificate unrevoked (``openssl verify -crl_check``), while a CRL that lists
the TSA certificate makes that check fail.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import build_crl
from signer.formats import FormatError
from signer.formats.cms import CmsSigner, cades_b_t
from signer.formats.ltv import ValidationData, cades_b_lt
from signer.formats.verify import load_trust_bundle, verify_cades
from tests.support.pki import NOW, Clock, Pki, make_pki, pem
from tests.support.verify import run

DOCUMENT = b"invoice 2026-0042\n" * 40


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def _crls(pki: Pki, revoked_tsa: bool = False) -> tuple[bytes, ...]:
    tsa_serial = pki.tsa_certificate.serial_number
    return (
        build_crl(pki.root_key, pki.chain.root, NOW, timedelta(days=7)).public_bytes(Encoding.DER),
        build_crl(
            pki.issuing_key, pki.chain.issuing, NOW, timedelta(days=7),
            {tsa_serial: NOW - timedelta(days=1)} if revoked_tsa else (),
        ).public_bytes(Encoding.DER),
    )  # fmt: skip


def _b_t(pki: Pki) -> bytes:
    key, cert = pki.signer()
    tsa = pki.tsa(clock=Clock(NOW))
    return cades_b_t(
        hashlib.sha256(DOCUMENT).digest(),
        "sha256",
        CmsSigner(
            cert,
            (pki.chain.issuing, pki.chain.root),
            key,
            lambda digest, algorithm: tsa.timestamp_digest(digest, algorithm, pki.tsa_key),
        ),
        signing_time=NOW,
    )


def _data(pki: Pki, crls: tuple[bytes, ...]) -> ValidationData:
    return ValidationData((pki.chain.issuing, pki.chain.root, pki.tsa_certificate), crls)


def test_b_lt_keeps_the_signature_and_adds_the_validation_data(pki: Pki, tmp_path: Path) -> None:
    b_t = _b_t(pki)
    data = _data(pki, _crls(pki))
    b_lt = cades_b_lt(b_t, data)
    before, after = cms.ContentInfo.load(b_t)["content"], cms.ContentInfo.load(b_lt)["content"]
    assert after["signer_infos"].dump() == before["signer_infos"].dump()
    assert len(after["crls"]) == 2 and len(after["certificates"]) == 4  # + the TSA certificate
    assert cades_b_lt(b_lt, data) == b_lt  # nothing twice

    files = {name: tmp_path / name for name in ("doc", "sig.p7s", "root.pem", "trust.pem")}
    files["doc"].write_bytes(DOCUMENT)
    files["sig.p7s"].write_bytes(b_lt)
    files["root.pem"].write_bytes(pem(pki.chain.root))
    verified = run(
        "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", files["sig.p7s"],
        "-content", files["doc"], "-CAfile", files["root.pem"], "-purpose", "any", "-cades",
        "-attime", str(int((NOW + timedelta(minutes=1)).timestamp())), "-out", "/dev/null",
    )  # fmt: skip
    assert "Verification successful" in verified.stderr, verified.stderr

    bundle = pem(pki.chain.root) + pem(pki.chain.issuing)
    report = verify_cades(DOCUMENT, b_lt, load_trust_bundle(bundle), now=NOW + timedelta(days=1))
    assert report.valid and report.form == "CAdES-B-LT", report.failures


def _crl_check(pki: Pki, signature: bytes, tmp_path: Path) -> str:
    """``openssl verify -crl_check_all`` of the TSA certificate with only the CRLs found in
    ``signature``'s SignedData: what an offline verifier has."""
    signed = cms.ContentInfo.load(signature)["content"]
    crls = tmp_path / "crls.pem"
    crls.write_bytes(
        b"".join(
            b"-----BEGIN X509 CRL-----\n"
            + base64.encodebytes(c.chosen.dump())
            + b"-----END X509 CRL-----\n"
            for c in signed["crls"]
        )
    )
    (tmp_path / "root.pem").write_bytes(pem(pki.chain.root))
    (tmp_path / "issuing.pem").write_bytes(pem(pki.chain.issuing))
    (tmp_path / "tsa.pem").write_bytes(pem(pki.tsa_certificate))
    done = run(
        "openssl", "verify", "-crl_check_all", "-CAfile", tmp_path / "root.pem", "-untrusted",
        tmp_path / "issuing.pem", "-CRLfile", crls, "-purpose", "any",
        "-attime", str(int((NOW + timedelta(minutes=1)).timestamp())), tmp_path / "tsa.pem",
    )  # fmt: skip
    return done.stdout + done.stderr


def test_the_embedded_crls_show_the_tsa_unrevoked_or_revoked(pki: Pki, tmp_path: Path) -> None:
    good = cades_b_lt(_b_t(pki), _data(pki, _crls(pki)))
    assert ": OK" in _crl_check(pki, good, tmp_path)
    bad = cades_b_lt(_b_t(pki), _data(pki, _crls(pki, revoked_tsa=True)))
    assert "certificate revoked" in _crl_check(pki, bad, tmp_path)


def test_not_a_cms_is_refused(pki: Pki) -> None:
    with pytest.raises(FormatError, match="not a DER CMS SignedData"):
        cades_b_lt(b"\x30\x03\x02\x01\x00", _data(pki, _crls(pki)))
