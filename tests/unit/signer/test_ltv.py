"""PAdES B-LT and B-LTA (``signer.formats.ltv``) judged by pyHanko's AdES validator.

``pyhanko sign adesverify`` runs *with* revocation checking (EN 319 102-1 §5.2.6: revocation
data required for every certificate that has any): a B-T PDF carries no CRL for the issuing
CA, so it fails for that reason, while the same signature with the DSS of B-LT, and with the
document time-stamp of B-LTA, validates from the PDF alone (no fetching: the CRL URLs of the
test PKI lead nowhere). The assertions name pyHanko's reasons, so a PDF that fails for another
reason fails the test.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.dss import DocumentSecurityStore

from ca.authority import build_crl
from signer.formats import PdfError
from signer.formats.ltv import (
    ValidationData,
    add_validation_data,
    document_time_stamps,
    embed_document_time_stamp,
    prepare_document_time_stamp,
)
from signer.formats.verify import TrustBundle, load_trust_bundle, verify_pades
from tests.support.pki import NOW, Clock, Pki, make_pki, pem, signed_pdf
from tests.unit.signer.test_verify import PYHANKO, _iso, _run

NEXT_DAY = NOW + timedelta(days=1)  # leaf expired, CRLs of the signing moment still fresh
TEN_YEARS = NOW + timedelta(days=3652)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def _stamp(pki: Pki, when: datetime, digest: bytes) -> bytes:
    return pki.tsa(clock=Clock(when)).timestamp_digest(digest, "sha256", pki.tsa_key)


def _validation_data(pki: Pki, when: datetime) -> ValidationData:
    """The chain, the TSA certificate, and the CRLs covering the issuing CA (root's CRL) and
    the TSA (issuing CA's CRL): what the service has in-process."""
    crls = tuple(
        build_crl(key, issuer, when, timedelta(days=7)).public_bytes(Encoding.DER)
        for key, issuer in ((pki.root_key, pki.chain.root), (pki.issuing_key, pki.chain.issuing))
    )
    return ValidationData((pki.chain.issuing, pki.chain.root, pki.tsa_certificate), crls)


def _b_t(pki: Pki) -> bytes:
    return signed_pdf(pki, NOW)


def _time_stamped(pki: Pki, pdf: bytes, when: datetime) -> bytes:
    prepared = prepare_document_time_stamp(pdf)
    return embed_document_time_stamp(prepared, _stamp(pki, when, prepared.digest))


@pytest.fixture(scope="module")
def levels(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("ltv")
    b_t = _b_t(pki)
    b_lt = add_validation_data(b_t, _validation_data(pki, NOW + timedelta(minutes=1)))
    b_lta = _time_stamped(pki, b_lt, NOW + timedelta(minutes=1))
    files = {"b-t": b_t, "b-lt": b_lt, "b-lta": b_lta, "root": pem(pki.chain.root)}
    paths = {}
    for name, data in files.items():
        paths[name] = directory / f"{name}.pdf"
        paths[name].write_bytes(data)
    return paths


def adesverify(pdf: Path, root: Path, at: datetime) -> tuple[bool, str]:
    """``pyhanko sign adesverify`` with revocation checking, at ``at``: (valid, output)."""
    done = _run(
        PYHANKO, "sign", "adesverify", "--trust", root, "--trust-replace",
        "--validation-time", _iso(at), "--executive-summary", pdf,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.count(":") >= 2]
    valid = bool(lines) and all(line.endswith(":VALID") for line in lines)
    assert valid == (done.returncode == 0), done.stdout + done.stderr
    return valid, done.stdout + done.stderr


def test_b_t_lacks_the_issuing_cas_revocation_data(levels: dict[str, Path]) -> None:
    valid, output = adesverify(levels["b-t"], levels["root"], NEXT_DAY)
    assert not valid
    assert "no revocation information could be found for intermediate certificate" in output


@pytest.mark.parametrize("level", ["b-lt", "b-lta"])
def test_long_term_levels_validate_from_the_pdf_alone(levels: dict[str, Path], level: str) -> None:
    valid, output = adesverify(levels[level], levels["root"], NEXT_DAY)
    assert valid, output


def test_ten_years_later_b_t_fails_with_the_reason_named(levels: dict[str, Path]) -> None:
    """The issuing CA (5 years in this PKI) has expired: nothing in a B-T PDF proves that it
    was valid and unrevoked when the signature was made."""
    valid, output = adesverify(levels["b-t"], levels["root"], TEN_YEARS)
    assert not valid
    assert "intermediate certificate 1 expired" in output


def test_dss_holds_the_validation_data(pki: Pki, levels: dict[str, Path]) -> None:
    reader = PdfFileReader(BytesIO(levels["b-lt"].read_bytes()))
    dss = DocumentSecurityStore.read_dss(reader)
    held = {c.dump() for c in dss.load_certs()}
    for cert in (pki.chain.issuing, pki.chain.root, pki.tsa_certificate):
        assert cert.public_bytes(Encoding.DER) in held
    assert len(dss.crls) == 2


def test_each_archive_time_stamp_is_one_more_incremental_update(
    pki: Pki, levels: dict[str, Path]
) -> None:
    b_lta = levels["b-lta"].read_bytes()
    later = NOW + timedelta(days=365)
    extended = _time_stamped(pki, add_validation_data(b_lta, _validation_data(pki, later)), later)
    assert extended.startswith(b_lta)
    stamps = document_time_stamps(extended)
    assert len(stamps) == 2
    gen_times = [s["encap_content_info"]["content"].parsed["gen_time"].native for s in stamps]
    assert gen_times == [NOW + timedelta(minutes=1), later]
    reader = PdfFileReader(BytesIO(extended))
    assert [s.field_name for s in reader.embedded_signatures] == [
        "Signature1",
        "DocTimeStamp1",
        "DocTimeStamp2",
    ]


def test_a_token_over_another_document_is_refused(pki: Pki, levels: dict[str, Path]) -> None:
    prepared = prepare_document_time_stamp(levels["b-lt"].read_bytes())
    other = _stamp(pki, NOW, hashlib.sha256(b"another document").digest())
    with pytest.raises(PdfError, match="does not cover this document"):
        embed_document_time_stamp(prepared, other)
    with pytest.raises(PdfError, match="not an RFC 3161 TimeStampToken"):
        embed_document_time_stamp(prepared, b"\x30\x03\x02\x01\x00")


def test_validation_data_needs_certificates() -> None:
    with pytest.raises(PdfError, match="no certificates"):
        ValidationData(())


def _trust(pki: Pki) -> TrustBundle:
    return load_trust_bundle(b"".join(pem(c) for c in (pki.chain.root, pki.chain.issuing)))


def test_qes_verify_judges_the_signature_and_each_document_time_stamp(
    pki: Pki, levels: dict[str, Path]
) -> None:
    """`qes verify` on B-LT and B-LTA: one report per signature (a document time-stamp is no
    signature), its form named, and the B-LTA's document time-stamp checked: it covers the
    document and its TSA chains to the trusted root."""
    trust = _trust(pki)
    for level, form in (("b-t", "PAdES-B-T"), ("b-lt", "PAdES-B-LT"), ("b-lta", "PAdES-B-LTA")):
        (report,) = verify_pades(levels[level].read_bytes(), trust, now=NEXT_DAY)
        assert report.valid, (level, report.failures)
        assert report.form == form, (level, report.form)
    (report,) = verify_pades(levels["b-lta"].read_bytes(), trust, now=NEXT_DAY)
    (check,) = [c for c in report.checks if c.name == "document-time-stamps"]
    assert check.ok and "1 document time-stamp" in check.detail, check


def test_qes_verify_refuses_a_document_time_stamp_it_cannot_trust(
    pki: Pki, levels: dict[str, Path]
) -> None:
    """A document time-stamp by a TSA outside the trust bundle fails its check (and so the
    report), naming why."""
    other = make_pki()
    stamped = levels["b-lt"].read_bytes()
    prepared = prepare_document_time_stamp(stamped)
    foreign = embed_document_time_stamp(prepared, _stamp(other, NOW, prepared.digest))
    (report,) = verify_pades(foreign, _trust(pki), now=NEXT_DAY)
    assert [c.name for c in report.failures] == ["document-time-stamps"], report.failures
    assert "DocTimeStamp1" in report.failures[0].detail
