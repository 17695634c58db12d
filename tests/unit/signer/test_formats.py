"""CAdES and PAdES B-T output, judged by OpenSSL and pyHanko (STANDARDS.md §5), with the
certificates the production ``ca`` functions issue and the built-in TSA of ``ca.tsa``."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any, NoReturn

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.reader import PdfFileReader

from ca.tsa import TimeStampAuthority
from signer.formats import FormatError, PdfError
from signer.formats.cms import CmsSigner, cades_b_t, pades_b_t, signature_time_stamp
from signer.formats.pdf import embed, prepare
from tests.support.pdfs import multi_page_pdf
from tests.support.pki import NOW, Pki, make_pki

DOCUMENT = b"Invoice 2026-0042\nTotal: 1,234.56 EUR\n" * 50
PYHANKO = str(Path(sys.executable).parent / "pyhanko")
ONE_YEAR_LATER = (NOW + timedelta(days=366)).strftime("%Y-%m-%dT%H:%M:%SZ")
INSIDE_VALIDITY = (NOW + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
AT_GEN_TIME = str(int((NOW + timedelta(seconds=1)).timestamp()))


class DelegatingKey(ec.EllipticCurvePrivateKey):
    """Stands in for ``signer.keys.key.HsmEcPrivateKey``: an EllipticCurvePrivateKey subclass
    that only signs (DER) and refuses to export, so the formats must not need anything else."""

    def __init__(self, inner: ec.EllipticCurvePrivateKey) -> None:
        self._inner = inner
        self.calls = 0

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        self.calls += 1
        return self._inner.sign(data, signature_algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._inner.curve

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def private_numbers(self) -> NoReturn:
        raise UnsupportedAlgorithm("non-extractable")

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> NoReturn:
        raise UnsupportedAlgorithm("non-extractable")

    def exchange(self, algorithm: Any, peer_public_key: Any) -> NoReturn:
        raise UnsupportedAlgorithm("signing only")

    def __copy__(self) -> DelegatingKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> DelegatingKey:
        return self


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def files(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pki.write(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tsa(pki: Pki) -> TimeStampAuthority:
    return pki.tsa()


@pytest.fixture(scope="module")
def signer(pki: Pki) -> tuple[DelegatingKey, x509.Certificate]:
    key, cert = pki.signer()
    return DelegatingKey(key), cert


@pytest.fixture(scope="module")
def timestamper(tsa: TimeStampAuthority, pki: Pki) -> Any:
    return lambda digest, algorithm: tsa.timestamp_digest(digest, algorithm, pki.tsa_key)


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=False, timeout=120
    )


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def make_cades(
    pki: Pki, signer: tuple[DelegatingKey, x509.Certificate], timestamper: Any, algorithm: str
) -> bytes:
    key, cert = signer
    digest = hashlib.new(algorithm, DOCUMENT).digest()
    chain = [pki.chain.issuing, pki.chain.root]
    return cades_b_t(digest, algorithm, CmsSigner(cert, chain, key, timestamper), signing_time=NOW)


def signer_info(signature: bytes) -> cms.SignerInfo:
    (info,) = cms.ContentInfo.load(signature)["content"]["signer_infos"]
    return info


# -- CAdES ------------------------------------------------------------------------------------


def test_cades_signed_attributes_are_exactly_the_baseline_set(
    pki: Pki, signer: tuple[DelegatingKey, x509.Certificate], timestamper: Any
) -> None:
    signature = make_cades(pki, signer, timestamper, "sha256")
    info = signer_info(signature)
    signed = {a["type"].native: a["values"] for a in info["signed_attrs"]}
    assert sorted(signed) == [
        "content_type",
        "message_digest",
        "signing_certificate_v2",
        "signing_time",
    ]
    assert all(len(values) == 1 for values in signed.values())
    assert signed["content_type"][0].native == "data"
    assert signed["message_digest"][0].native == hashlib.sha256(DOCUMENT).digest()
    assert signed["signing_time"][0].native == NOW.replace(microsecond=0)
    (ess,) = signed["signing_certificate_v2"][0]["certs"]
    cert_der = signer[1].public_bytes(Encoding.DER)
    assert ess["cert_hash"].native == hashlib.sha256(cert_der).digest()
    assert ess["issuer_serial"]["serial_number"].native == signer[1].serial_number
    unsigned = [a["type"].dotted for a in info["unsigned_attrs"]]
    assert unsigned == ["1.2.840.113549.1.9.16.2.14"]
    signed_data = cms.ContentInfo.load(signature)["content"]
    assert signed_data["encap_content_info"]["content"].native is None  # detached
    certs = {c.chosen.dump() for c in signed_data["certificates"]}
    chain = [signer[1], pki.chain.issuing, pki.chain.root]
    assert certs == {c.public_bytes(Encoding.DER) for c in chain}


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_openssl_verifies_cades_and_its_token_and_rejects_a_changed_byte(
    pki: Pki,
    signer: tuple[DelegatingKey, x509.Certificate],
    timestamper: Any,
    files: dict[str, Path],
    tmp_path: Path,
    algorithm: str,
) -> None:
    signature = tmp_path / "doc.p7s"
    signature.write_bytes(make_cades(pki, signer, timestamper, algorithm))
    document = tmp_path / "doc.bin"
    document.write_bytes(DOCUMENT)
    verify = [
        "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signature),
        "-CAfile", str(files["root"]), "-purpose", "any", "-cades", "-attime", AT_GEN_TIME,
        "-out", "/dev/null", "-content",
    ]  # fmt: skip
    done = run(*verify, document)
    assert done.returncode == 0 and "Verification successful" in done.stderr, done.stderr
    # the signature-time-stamp on its own: a token over the SignerInfo signature value
    token = tmp_path / "token.der"
    token.write_bytes(signature_time_stamp(signature.read_bytes()))
    value = signer_info(signature.read_bytes())["signature"].native
    imprint = hashlib.new(algorithm, value).hexdigest()
    ts = run(
        "openssl", "ts", "-verify", "-token_in", "-in", token, "-digest", imprint,
        "-CAfile", files["root"], "-attime", AT_GEN_TIME,
    )  # fmt: skip
    assert ts.returncode == 0 and "Verification: OK" in ts.stdout, ts.stderr
    changed = tmp_path / "changed.bin"
    changed.write_bytes(flip_last_byte(DOCUMENT))
    rejected = run(*verify, changed)
    assert rejected.returncode != 0 and "Verification successful" not in rejected.stderr


def test_pyhanko_validates_cades_and_rejects_a_changed_byte(
    pki: Pki,
    signer: tuple[DelegatingKey, x509.Certificate],
    timestamper: Any,
    files: dict[str, Path],
    tmp_path: Path,
) -> None:
    signature = tmp_path / "doc.p7s"
    signature.write_bytes(make_cades(pki, signer, timestamper, "sha256"))
    validate = [
        PYHANKO, "sign", "validate", "--detached", str(signature), "--trust", str(files["root"]),
        "--trust-replace", "--no-revocation-check", "--validation-time", INSIDE_VALIDITY,
        "--pretty-print",
    ]  # fmt: skip
    document = tmp_path / "doc.bin"
    document.write_bytes(DOCUMENT)
    done = run(*validate, document)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "The signature is judged VALID." in done.stdout
    assert "The TSA certificate is trusted." in done.stdout
    changed = tmp_path / "changed.bin"
    changed.write_bytes(flip_last_byte(DOCUMENT))
    rejected = run(*validate, changed)
    assert rejected.returncode != 0
    assert "The signature is judged VALID." not in rejected.stdout


def test_the_key_is_only_asked_to_sign_once(
    pki: Pki, signer: tuple[DelegatingKey, x509.Certificate], timestamper: Any
) -> None:
    key, _ = signer
    before = key.calls
    make_cades(pki, signer, timestamper, "sha256")
    assert key.calls == before + 1


def test_cades_refuses_wrong_inputs(
    pki: Pki, signer: tuple[DelegatingKey, x509.Certificate], timestamper: Any
) -> None:
    key, cert = signer
    digest = hashlib.sha256(DOCUMENT).digest()
    chain = [pki.chain.issuing]
    with pytest.raises(FormatError, match="does not match"):
        cades_b_t(
            digest, "sha256", CmsSigner(cert, chain, pki.tsa_key, timestamper), signing_time=NOW
        )
    with pytest.raises(FormatError, match="32 bytes"):
        cades_b_t(digest[:20], "sha256", CmsSigner(cert, chain, key, timestamper), signing_time=NOW)
    with pytest.raises(FormatError, match="hash_algorithm"):
        cades_b_t(digest, "sha1", CmsSigner(cert, chain, key, timestamper), signing_time=NOW)
    naive = datetime(2026, 3, 1, 12, 0, 0)
    with pytest.raises(FormatError, match="timezone"):
        cades_b_t(digest, "sha256", CmsSigner(cert, chain, key, timestamper), signing_time=naive)


def test_a_token_over_something_else_is_refused(
    pki: Pki, signer: tuple[DelegatingKey, x509.Certificate], tsa: TimeStampAuthority
) -> None:
    key, cert = signer

    def wrong(digest: bytes, algorithm: str) -> bytes:
        return tsa.timestamp_digest(bytes(len(digest)), algorithm, pki.tsa_key)

    digest = hashlib.sha256(DOCUMENT).digest()
    with pytest.raises(FormatError, match="does not cover"):
        cades_b_t(digest, "sha256", CmsSigner(cert, [], key, wrong), signing_time=NOW)
    with pytest.raises(FormatError, match="TimeStampToken"):
        no_token = CmsSigner(cert, [], key, lambda d, a: b"\x30\x00")
        cades_b_t(digest, "sha256", no_token, signing_time=NOW)


# -- PAdES --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_pdf(
    pki: Pki,
    signer: tuple[DelegatingKey, x509.Certificate],
    timestamper: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """Client side: prepare; service side: PAdES CMS over the digest only; client: embed."""
    key, cert = signer
    prepared = prepare(multi_page_pdf(3), "Signature1", NOW)
    cms_signer = CmsSigner(cert, [pki.chain.issuing, pki.chain.root], key, timestamper)
    cms_der = pades_b_t(prepared.digest, prepared.hash_algorithm, cms_signer)
    path = tmp_path_factory.mktemp("pdf") / "contract.signed.pdf"
    path.write_bytes(embed(prepared, cms_der))
    return path


def test_pades_structure(signed_pdf: Path) -> None:
    reader = PdfFileReader(BytesIO(signed_pdf.read_bytes()))
    assert reader.root["/Pages"]["/Count"] == 3
    (embedded,) = reader.embedded_signatures
    assert embedded.field_name == "Signature1"
    assert embedded.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    assert embedded.sig_object["/M"]  # claimed signing time lives in the dictionary
    assert embedded.self_reported_timestamp == NOW.replace(microsecond=0)
    info = embedded.signer_info
    signed = sorted(a["type"].native for a in info["signed_attrs"])
    assert signed == ["content_type", "message_digest", "signing_certificate_v2"]
    unsigned = [a["type"].dotted for a in info["unsigned_attrs"]]
    assert unsigned == ["1.2.840.113549.1.9.16.2.14"]


def _tampered(path: Path, tmp_path: Path) -> Path:
    """One byte changed inside the signed byte range: page 2's text becomes 'Page 3'."""
    data = path.read_bytes()
    index = data.index(b"(Page 2 of 3)")
    changed = tmp_path / "tampered.pdf"
    changed.write_bytes(data[: index + 6] + b"3" + data[index + 7 :])
    return changed


def test_pyhanko_validates_the_pdf_and_rejects_a_changed_byte(
    signed_pdf: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    validate = [
        PYHANKO, "sign", "validate", "--trust", str(files["root"]), "--trust-replace",
        "--no-revocation-check", "--validation-time", INSIDE_VALIDITY, "--executive-summary",
    ]  # fmt: skip
    done = run(*validate, signed_pdf)
    assert done.returncode == 0 and done.stdout.strip().endswith(":VALID"), done.stdout
    rejected = run(*validate, _tampered(signed_pdf, tmp_path))
    assert rejected.returncode != 0
    assert not rejected.stdout.strip().endswith(":VALID"), rejected.stdout


def test_pyhanko_adesverify_accepts_it_a_year_later_and_rejects_a_changed_byte(
    signed_pdf: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    """The 10-minute certificate has long expired: only the signature-time-stamp carries it
    (STANDARDS.md §4)."""
    verify = [
        PYHANKO, "sign", "adesverify", "--trust", str(files["root"]), "--trust-replace",
        "--no-revocation-check", "--validation-time", ONE_YEAR_LATER, "--executive-summary",
    ]  # fmt: skip
    done = run(*verify, signed_pdf)
    assert done.returncode == 0 and done.stdout.strip().endswith(":VALID"), done.stdout
    rejected = run(*verify, _tampered(signed_pdf, tmp_path))
    assert rejected.returncode != 0
    assert not rejected.stdout.strip().endswith(":VALID"), rejected.stdout


def test_embed_refuses_a_cms_for_another_document(
    pki: Pki, signer: tuple[DelegatingKey, x509.Certificate], timestamper: Any
) -> None:
    key, cert = signer
    first = prepare(multi_page_pdf(1), "Signature1", NOW)
    second = prepare(multi_page_pdf(2), "Signature1", NOW)
    cms_der = pades_b_t(
        first.digest, "sha256", CmsSigner(cert, [pki.chain.issuing], key, timestamper)
    )
    with pytest.raises(PdfError, match="does not cover"):
        embed(second, cms_der)
    with pytest.raises(PdfError, match="SignedData"):
        embed(first, b"not a cms")
    small = prepare(multi_page_pdf(1), "Signature1", NOW, reserved_size=1024)
    too_big = pades_b_t(
        small.digest, "sha256", CmsSigner(cert, [pki.chain.issuing], key, timestamper)
    )
    with pytest.raises(PdfError, match="room"):
        embed(small, too_big)


def test_prepare_refuses_what_it_cannot_sign() -> None:
    with pytest.raises(PdfError):
        prepare(b"%PDF-1.7\nnot really a pdf", "Signature1", NOW)
    with pytest.raises(PdfError, match="timezone"):
        prepare(multi_page_pdf(1), "Signature1", datetime(2026, 3, 1))
    with pytest.raises(PdfError, match="hash_algorithm"):
        prepare(multi_page_pdf(1), "Signature1", NOW, hash_algorithm="md5")


def test_prepare_digest_is_the_byte_range_digest() -> None:
    prepared = prepare(multi_page_pdf(2), "Signature1", NOW, hash_algorithm="sha384")
    document = prepared.document
    covered = document[: prepared.reserved_start] + document[prepared.reserved_end :]
    assert prepared.digest == hashlib.sha384(covered).digest()
    placeholder = document[prepared.reserved_start : prepared.reserved_end]
    assert placeholder == b"<" + b"0" * (2 * 16 * 1024) + b">"
