"""Offline validation (``signer.formats.verify``) against pyHanko's own verdicts (STANDARDS.md §5).

Every case is also judged by the ``pyhanko`` CLI as a subprocess: ``sign validate`` at the
time-stamp's genTime (pyHanko's point-in-time validation, the moment our signer-chain check
uses), and ``sign adesverify`` years later for PDFs. The assertions name the failing checks,
so a verifier that fails for the wrong reason fails the test.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from ca.profiles import LegalPerson, Level, NaturalPerson
from ca.tsa import TimeStampAuthority
from signer.formats.cms import CmsSigner, cades_b_t, pades_b_t
from signer.formats.pdf import embed, prepare
from signer.formats.verify import (
    SignatureReport,
    TrustBundle,
    VerifyError,
    load_trust_bundle,
    render_text,
    verify_cades,
    verify_pades,
)
from tests.support.pdfs import multi_page_pdf
from tests.support.pki import NOW, Clock, Pki, make_pki, pem
from tests.unit.signer.test_formats import DOCUMENT, flip_last_byte
from tests.unit.signer.test_formats import _tampered as changed_page

PYHANKO = str(Path(sys.executable).parent / "pyhanko")
INSIDE_VALIDITY = NOW + timedelta(minutes=5)
YEARS_LATER = NOW + timedelta(days=2 * 365 + 30)  # leaf long expired, TSA certificate not yet
AFTER_TSA_EXPIRY = NOW + timedelta(days=4 * 365)
LATE = timedelta(minutes=30)  # a TSA clock this far ahead stamps after the leaf's notAfter


@dataclass(frozen=True)
class Case:
    """A document, its signature files and the trust bundle files, on disk for pyHanko."""

    document: Path
    cades: Path
    pdf: Path
    gen_time: datetime


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def signer(pki: Pki) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    return pki.signer()


@pytest.fixture(scope="module")
def trust_files(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The service's bundle (root, issuing CA, TSA), its root alone (pyHanko's --trust), and
    another PKI's bundle and root with the very same names but other keys."""
    other = make_pki()
    directory = tmp_path_factory.mktemp("trust")
    files = {
        "bundle": (pki.chain.root, pki.chain.issuing, pki.tsa_certificate),
        "root": (pki.chain.root,),
        "other-bundle": (other.chain.root, other.chain.issuing, other.tsa_certificate),
        "other-root": (other.chain.root,),
    }
    paths = {}
    for name, certs in files.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(b"".join(pem(c) for c in certs))
    return paths


@pytest.fixture(scope="module")
def trust(trust_files: dict[str, Path]) -> TrustBundle:
    return load_trust_bundle(trust_files["bundle"].read_bytes())


def make_case(
    pki: Pki,
    signer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    directory: Path,
    tsa_delay: timedelta = timedelta(0),
) -> Case:
    """CAdES over DOCUMENT and a three-page PAdES, both B-T, time-stamped ``tsa_delay`` after
    NOW by the built-in TSA (``ca.tsa``) with an injected clock."""
    key, cert = signer
    tsa: TimeStampAuthority = pki.tsa(clock=Clock(NOW + tsa_delay))

    def timestamper(digest: bytes, algorithm: str) -> bytes:
        return tsa.timestamp_digest(digest, algorithm, pki.tsa_key)

    chain = [pki.chain.issuing, pki.chain.root]
    digest = hashlib.sha256(DOCUMENT).digest()
    directory.mkdir(parents=True, exist_ok=True)
    case = Case(directory / "doc.bin", directory / "doc.bin.p7s", directory / "doc.pdf", NOW)
    case.document.write_bytes(DOCUMENT)
    case.cades.write_bytes(
        cades_b_t(digest, "sha256", CmsSigner(cert, chain, key, timestamper), signing_time=NOW)
    )
    prepared = prepare(multi_page_pdf(3), "Signature1", NOW)
    cms_der = pades_b_t(prepared.digest, "sha256", CmsSigner(cert, chain, key, timestamper))
    case.pdf.write_bytes(embed(prepared, cms_der))
    return Case(case.document, case.cades, case.pdf, NOW + tsa_delay)


@pytest.fixture(scope="module")
def good(pki: Pki, signer: Any, tmp_path_factory: pytest.TempPathFactory) -> Case:
    return make_case(pki, signer, tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def late(pki: Pki, signer: Any, tmp_path_factory: pytest.TempPathFactory) -> Case:
    return make_case(pki, signer, tmp_path_factory.mktemp("late"), tsa_delay=LATE)


# -- pyHanko as the independent verdict -------------------------------------------------------


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=False, timeout=120
    )


def pyhanko_cades(document: Path, signature: Path, root: Path, at: datetime) -> bool:
    """``pyhanko sign validate --detached`` at ``at`` (STANDARDS.md §5)."""
    done = _run(
        PYHANKO, "sign", "validate", "--detached", signature, "--trust", root, "--trust-replace",
        "--no-revocation-check", "--validation-time", _iso(at), "--pretty-print", document,
    )  # fmt: skip
    valid = "The signature is judged VALID." in done.stdout
    assert valid == (done.returncode == 0), done.stdout + done.stderr
    return valid


def pyhanko_pdf(pdf: Path, root: Path, at: datetime, *, ades: bool = False) -> bool:
    """``pyhanko sign validate`` (or ``adesverify``) on every field, executive summary."""
    done = _run(
        PYHANKO, "sign", "adesverify" if ades else "validate", "--trust", root,
        "--trust-replace", "--no-revocation-check", "--validation-time", _iso(at),
        "--executive-summary", pdf,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.count(":") >= 2]
    valid = bool(lines) and all(line.endswith(":VALID") for line in lines)
    assert valid == (done.returncode == 0), done.stdout + done.stderr
    return valid


def ours_cades(case: Case, trust: TrustBundle, at: datetime, document: Path | None = None,
               signature: Path | None = None) -> SignatureReport:  # fmt: skip
    return verify_cades(
        (document or case.document).read_bytes(),
        (signature or case.cades).read_bytes(),
        trust,
        now=at,
        label="doc.bin / doc.bin.p7s",
    )


def ours_pdf(pdf: Path, trust: TrustBundle, at: datetime) -> SignatureReport:
    (report,) = verify_pades(pdf.read_bytes(), trust, now=at, label=pdf.name)
    return report


def failed(report: SignatureReport) -> set[str]:
    return {check.name for check in report.failures}


# -- tampering helpers ------------------------------------------------------------------------


def _signature_value(der: bytes) -> bytes:
    (info,) = cms.ContentInfo.load(der)["content"]["signer_infos"]
    value: bytes = info["signature"].native
    return value


def tampered_cades(signature: Path, directory: Path) -> Path:
    """One byte of the SignerInfo signature value changed (inside r of the ECDSA value), the
    DER structure left intact."""
    der = signature.read_bytes()
    value = _signature_value(der)
    middle = len(value) // 3
    changed = value[:middle] + bytes([value[middle] ^ 0x01]) + value[middle + 1 :]
    out = directory / "tampered.p7s"
    out.write_bytes(der.replace(value, changed))
    assert _signature_value(out.read_bytes()) == changed
    return out


def tampered_pdf_signature(pdf: Path, directory: Path) -> Path:
    """One byte of the signature value changed inside the hex ``/Contents`` of the PDF."""
    data = pdf.read_bytes()
    start = data.index(b"/Contents <") + len(b"/Contents <")
    end = data.index(b">", start)
    cms_der = bytes.fromhex(data[start:end].decode())
    value = _signature_value(cms_der)
    middle = len(value) // 3
    changed = value[:middle] + bytes([value[middle] ^ 0x01]) + value[middle + 1 :]
    new_hex = cms_der.replace(value, changed).hex().encode()
    assert len(new_hex) == len(cms_der.hex())
    old_hex = data[start : start + len(new_hex)]
    assert old_hex.lower() == cms_der.hex().encode()
    out = directory / "tampered-signature.pdf"
    out.write_bytes(data[:start] + new_hex + data[start + len(new_hex) :])
    return out


def updated_after_signing(pdf: Path, directory: Path) -> Path:
    """A later incremental update that gives page 1 another content stream: the signed
    revision is intact, the document shown is not."""
    writer = IncrementalPdfFileWriter(BytesIO(pdf.read_bytes()))
    page = writer.root["/Pages"]["/Kids"][0].get_object()
    text = b"BT /F1 24 Tf 72 720 Td (Pay 1,000,000 EUR) Tj ET"
    page[pdf_name("/Contents")] = writer.add_object(generic.StreamObject(stream_data=text))
    writer.update_container(page)
    buffer = BytesIO()
    writer.write(buffer)
    out = directory / "updated.pdf"
    out.write_bytes(buffer.getvalue())
    return out


# -- valid --------------------------------------------------------------------------------------


def test_valid_cades_agrees_with_pyhanko(
    good: Case, trust: TrustBundle, trust_files: dict[str, Path], signer: Any
) -> None:
    report = ours_cades(good, trust, INSIDE_VALIDITY)
    assert report.valid, render_text(report)
    assert report.form == "CAdES-B-T"
    assert [c.name for c in report.checks] == [
        "message-digest",
        "signature-value",
        "signing-certificate",
        "time-stamp",
        "tsa-certificate",
        "signer-chain",
        "profile",
    ]
    _, cert = signer
    assert report.serial == format(cert.serial_number, "x")
    assert report.signer.startswith("CN=Erika Mustermann,")
    assert (report.level, report.policy, report.legal_person) == ("QES", "QCP-n-qscd", False)
    assert report.time_stamp is not None
    assert report.time_stamp.gen_time == good.gen_time
    assert report.time_stamp.tsa.startswith("CN=Example Time-Stamping Unit 1,")
    assert len(report.chain) == 3 and report.chain[-1].startswith("CN=Example Signing Root CA")
    assert "noRevAvail" in report.revocation and "offline" in report.revocation
    assert pyhanko_cades(good.document, good.cades, trust_files["root"], good.gen_time)


def test_valid_multi_page_pades_agrees_with_pyhanko(
    good: Case, trust: TrustBundle, trust_files: dict[str, Path]
) -> None:
    report = ours_pdf(good.pdf, trust, INSIDE_VALIDITY)
    assert report.valid, render_text(report)
    assert report.form == "PAdES-B-T"
    assert report.label == "doc.pdf: field Signature1"
    byte_range = next(c for c in report.checks if c.name == "byte-range")
    assert "entire file" in byte_range.detail
    assert report.claimed_time == NOW.replace(microsecond=0)  # /M
    assert pyhanko_pdf(good.pdf, trust_files["root"], good.gen_time)


def test_years_later_still_valid_through_the_time_stamp(
    good: Case, trust: TrustBundle, trust_files: dict[str, Path]
) -> None:
    """The point of B-T: the 10-minute certificate expired long ago; the chain is judged at
    genTime and only the TSA certificate has to be valid now (STANDARDS.md §4). pyHanko's
    AdES validation agrees for the PDF; its plain validation, which judges the chain at the
    validation time, does not: that is the difference the time-stamp makes."""
    cades = ours_cades(good, trust, YEARS_LATER)
    pades = ours_pdf(good.pdf, trust, YEARS_LATER)
    for report in (cades, pades):
        assert report.valid, render_text(report)
        chain = next(c for c in report.checks if c.name == "signer-chain")
        assert chain.detail.startswith(f"valid at the time-stamp {_iso(good.gen_time)}")
    assert pyhanko_pdf(good.pdf, trust_files["root"], YEARS_LATER, ades=True)
    assert not pyhanko_cades(good.document, good.cades, trust_files["root"], YEARS_LATER)


def test_the_time_stamp_itself_must_still_be_trusted_now(good: Case, trust: TrustBundle) -> None:
    """Past the TSA certificate's notAfter the token proves nothing any more (an archive
    time-stamp, B-LTA, would have to extend it): the failing check is the TSA's."""
    report = ours_cades(good, trust, AFTER_TSA_EXPIRY)
    assert failed(report) == {"tsa-certificate"}
    (check,) = report.failures
    assert "not trusted now" in check.detail


# -- invalid --------------------------------------------------------------------------------------


def test_one_byte_changed_in_the_document(
    good: Case, trust: TrustBundle, trust_files: dict[str, Path], tmp_path: Path
) -> None:
    changed = tmp_path / "changed.bin"
    changed.write_bytes(flip_last_byte(DOCUMENT))
    cades = ours_cades(good, trust, INSIDE_VALIDITY, document=changed)
    assert failed(cades) == {"message-digest"}
    assert not pyhanko_cades(changed, good.cades, trust_files["root"], good.gen_time)
    page = changed_page(good.pdf, tmp_path)
    pades = ours_pdf(page, trust, INSIDE_VALIDITY)
    assert failed(pades) == {"message-digest"}
    assert not pyhanko_pdf(page, trust_files["root"], good.gen_time)


def test_signature_value_tampered(
    good: Case, trust: TrustBundle, trust_files: dict[str, Path], tmp_path: Path
) -> None:
    """The signature value no longer verifies, and the time-stamp no longer covers it."""
    signature = tampered_cades(good.cades, tmp_path)
    cades = ours_cades(good, trust, INSIDE_VALIDITY, signature=signature)
    assert failed(cades) == {"signature-value", "time-stamp"}
    assert not pyhanko_cades(good.document, signature, trust_files["root"], good.gen_time)
    pdf = tampered_pdf_signature(good.pdf, tmp_path)
    pades = ours_pdf(pdf, trust, INSIDE_VALIDITY)
    assert failed(pades) == {"signature-value", "time-stamp"}
    assert not pyhanko_pdf(pdf, trust_files["root"], good.gen_time)


@pytest.mark.parametrize("bundle", ["other-bundle", "other-root"])
def test_wrong_trust_root(good: Case, trust_files: dict[str, Path], bundle: str) -> None:
    """Another root with the same names but another key (with or without its own issuing CA
    and TSA in the bundle): the path through the embedded issuing CA is built by name, and the
    issuing CA's signature does not verify with the other root's key; the TSA's neither."""
    other = load_trust_bundle(trust_files[bundle].read_bytes())
    cades = ours_cades(good, other, INSIDE_VALIDITY)
    assert failed(cades) == {"tsa-certificate", "signer-chain"}
    chain = next(c for c in cades.failures if c.name == "signer-chain")
    assert "signature of intermediate certificate 1 could not be verified" in chain.detail
    assert not pyhanko_cades(good.document, good.cades, trust_files["other-root"], good.gen_time)
    pades = ours_pdf(good.pdf, other, INSIDE_VALIDITY)
    assert failed(pades) == {"tsa-certificate", "signer-chain"}
    assert not pyhanko_pdf(good.pdf, trust_files["other-root"], good.gen_time)


def test_time_stamp_after_the_certificate_expired(
    late: Case, trust: TrustBundle, trust_files: dict[str, Path], signer: Any
) -> None:
    """genTime 30 minutes after a 10-minute certificate's notAfter: the token proves nothing
    about a time when the certificate was valid. pyHanko's point-in-time validation at that
    genTime agrees."""
    _, cert = signer
    assert late.gen_time > cert.not_valid_after_utc
    for report in (
        ours_cades(late, trust, YEARS_LATER),
        ours_pdf(late.pdf, trust, YEARS_LATER),
    ):
        assert failed(report) == {"signer-chain"}, render_text(report)
        (check,) = report.failures
        assert check.detail == (
            f"{report.signer} not valid at the time-stamp {_iso(late.gen_time)} "
            f"(notAfter {_iso(cert.not_valid_after_utc)})"
        )
        assert "FAILED      signer-chain: " in render_text(report)
    assert not pyhanko_cades(late.document, late.cades, trust_files["root"], late.gen_time)
    assert not pyhanko_pdf(late.pdf, trust_files["root"], late.gen_time)


def test_without_a_time_stamp_nothing_carries_the_signature_past_expiry(
    good: Case, trust: TrustBundle, trust_files: dict[str, Path], tmp_path: Path
) -> None:
    """B-B only (the token removed): the chain is judged at the validation time, where the
    10-minute certificate has expired; pyHanko's verdict at that time is the same."""
    content = cms.ContentInfo.load(good.cades.read_bytes())
    info = content["content"]["signer_infos"][0]
    info["unsigned_attrs"] = None  # optional field: omitted
    stripped = tmp_path / "b-b.p7s"
    stripped.write_bytes(content.dump(force=True))
    report = ours_cades(good, trust, YEARS_LATER, signature=stripped)
    assert report.form == "CAdES-B-B"
    assert failed(report) == {"time-stamp", "signer-chain"}, render_text(report)
    chain = next(c for c in report.failures if c.name == "signer-chain")
    assert "not valid at the validation time" in chain.detail
    assert not pyhanko_cades(good.document, stripped, trust_files["root"], YEARS_LATER)


def test_content_changed_by_a_later_incremental_update(
    good: Case, trust: TrustBundle, trust_files: dict[str, Path], tmp_path: Path
) -> None:
    updated = updated_after_signing(good.pdf, tmp_path)
    report = ours_pdf(updated, trust, INSIDE_VALIDITY)
    assert failed(report) == {"byte-range"}, render_text(report)
    assert not pyhanko_pdf(updated, trust_files["root"], good.gen_time)


# -- level and inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "legal", "expected"),
    [
        (Level.QES, False, ("QES", "QCP-n-qscd")),
        (Level.QUALIFIED, False, ("qualified (AdES/QC)", "QCP-n")),
        (Level.ADVANCED, False, ("advanced", "NCP+")),
        (Level.QES, True, ("QES", "QCP-l-qscd")),
        (Level.QUALIFIED, True, ("qualified (AdES/QC)", "QCP-l")),
        (Level.ADVANCED, True, ("advanced", "NCP+")),
    ],
)
def test_level_from_the_certificate_policy(
    pki: Pki, trust: TrustBundle, tmp_path: Path, level: Level, legal: bool, expected: Any
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = (
        LegalPerson("DE", "Demo Org", "NTRDE-HRB98765", "Demo Org Invoicing")
        if legal
        else NaturalPerson("DE", "Max Muster", given_name="Max", surname="Muster")
    )
    cert = pki.issuing_ca.issue(pki.issuing_key, key.public_key(), subject, level)
    report = ours_cades(make_case(pki, (key, cert), tmp_path), trust, INSIDE_VALIDITY)
    assert report.valid, render_text(report)
    assert (report.level, report.policy, report.legal_person) == (*expected, legal)
    kind = "(legal person, seal)" if legal else "(natural person, signature)"
    assert kind in render_text(report)


def test_unusable_inputs_are_input_errors(good: Case, trust: TrustBundle, pki: Pki) -> None:
    with pytest.raises(VerifyError, match="not a DER CMS SignedData"):
        verify_cades(DOCUMENT, b"not a cms", trust, now=INSIDE_VALIDITY)
    with pytest.raises(VerifyError, match="timezone-aware"):
        verify_cades(DOCUMENT, good.cades.read_bytes(), trust, now=datetime(2026, 3, 1))
    with pytest.raises(VerifyError, match="no PEM certificate"):
        load_trust_bundle(b"just text")
    with pytest.raises(VerifyError, match="no self-signed root"):
        load_trust_bundle(pem(pki.chain.issuing) + pem(pki.tsa_certificate))
    with pytest.raises(VerifyError, match=r"not a readable PDF|no signature"):
        verify_pades(b"%PDF-1.7\nnot really", trust, now=INSIDE_VALIDITY)
    with pytest.raises(VerifyError, match="no signature"):
        verify_pades(multi_page_pdf(1), trust, now=INSIDE_VALIDITY)
