"""PAdES long-term levels: validation data in the DSS (B-LT) and document time-stamps (B-LTA).

ETSI EN 319 142-1 §6.3 (Table 1) defines the levels on top of B-T: **B-LT** adds, in the
document security store (``/DSS``, §5.4.2), the validation data (certificates, CRLs, OCSP
responses) of the signer's chain and of the signature-time-stamp's chain; **B-LTA** then adds a
document time-stamp (``/SubFilter /ETSI.RFC3161``, §5.4.3) over the whole document, DSS
included. Long-term preservation repeats the pair (EN 319 102-1 §5.6.3, TS 119 102-2 on
augmentation): before the TSA certificate of the last document time-stamp expires, the
validation data of *that* time-stamp goes into the DSS and a new document time-stamp covers it.

Short-term leaves need no revocation data (RFC 9608 noRevAvail); the CA and TSA certificates
above them do, and the caller hands them in (the service has them in-process: its own CRLs and
OCSP answers). Each step is one incremental update, so every earlier signature stays intact
(ISO 32000-2 §12.8.2.4 on incremental updates after signing).

The time-stamp token is obtained by the caller between :func:`prepare_document_time_stamp` and
:func:`embed_document_time_stamp`, as for signatures (:mod:`signer.formats.pdf`): the PDF work
runs in a worker thread and the TSA key's one operation in its own HSM hop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from typing import TypeVar

from asn1crypto import cms, crl, ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.signers.pdf_byterange import DocumentTimestamp
from pyhanko.sign.validation.dss import DocumentSecurityStore

from signer.formats import PdfError
from signer.formats.pdf import PreparedPdf, fill, prepare_field

__all__ = [
    "DOCUMENT_TIME_STAMP_RESERVED",
    "ValidationData",
    "add_validation_data",
    "document_time_stamps",
    "embed_document_time_stamp",
    "prepare_document_time_stamp",
]

#: Room for a document time-stamp token: the built-in TSA's token with a three-certificate
#: chain is under 2 KiB; an external TSA may send more.
DOCUMENT_TIME_STAMP_RESERVED = 8 * 1024
_FIELD_PREFIX = "DocTimeStamp"
_T = TypeVar("_T")


@dataclass(frozen=True)
class ValidationData:
    """What a verifier needs, years later, to validate the certificates of a signature and of
    its time-stamps without asking anybody: the certificates, and the revocation data (DER
    CRLs, RFC 5280 §5; DER OCSPResponses, RFC 6960 §4.2) of every certificate that has any."""

    certificates: tuple[x509.Certificate, ...]
    crls: tuple[bytes, ...] = ()
    ocsps: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not self.certificates:
            raise PdfError("validation data: no certificates")
        for der in (*self.crls, *self.ocsps):
            if not isinstance(der, bytes) or not der:
                raise PdfError("validation data: CRLs and OCSP responses are DER octets")

    def merged(self, other: ValidationData) -> ValidationData:
        """Both sets, each item once, in first-seen order."""
        return ValidationData(
            _unique((*self.certificates, *other.certificates)),
            _unique((*self.crls, *other.crls)),
            _unique((*self.ocsps, *other.ocsps)),
        )


def add_validation_data(pdf: bytes, data: ValidationData) -> bytes:
    """PAdES B-LT (EN 319 142-1 §5.4.2, §6.3): one incremental update that adds ``data`` to the
    document's DSS (``/Certs``, ``/CRLs``, ``/OCSPs``), creating the DSS if there is none.
    Items already in the DSS are not added again. Raises :class:`PdfError`."""
    try:
        certificates = [
            asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in data.certificates
        ]
        crls = [crl.CertificateList.load(der) for der in data.crls]
        ocsps = [ocsp.OCSPResponse.load(der) for der in data.ocsps]
        writer = IncrementalPdfFileWriter(BytesIO(pdf))
        if writer.security_handler is not None:
            raise PdfError("encrypted PDFs are not supported")
        DocumentSecurityStore.supply_dss_in_writer(
            writer, None, certs=certificates, crls=crls, ocsps=ocsps
        )
        output = BytesIO()
        writer.write(output)  # type: ignore[no-untyped-call]
    except (PyHankoPdfError, ValueError, KeyError, TypeError) as exc:
        raise PdfError(f"cannot add validation data to the PDF: {exc}") from exc
    return output.getvalue()


def prepare_document_time_stamp(
    pdf: bytes,
    *,
    hash_algorithm: str = "sha256",
    reserved_size: int = DOCUMENT_TIME_STAMP_RESERVED,
) -> PreparedPdf:
    """A new document time-stamp field (EN 319 142-1 §5.4.3: ``/Type /DocTimeStamp``,
    ``/SubFilter /ETSI.RFC3161``), named ``DocTimeStampN`` after the ones there are, and the
    digest of its ``/ByteRange``: the messageImprint the TSA must stamp (RFC 3161 §2.4.1)."""
    name = f"{_FIELD_PREFIX}{len(document_time_stamps(pdf)) + 1}"
    placeholder = DocumentTimestamp(bytes_reserved=2 * reserved_size)  # type: ignore[no-untyped-call]
    return prepare_field(pdf, name, placeholder, hash_algorithm)


def embed_document_time_stamp(prepared: PreparedPdf, token: bytes) -> bytes:
    """The PDF with ``token`` (DER TimeStampToken) in the document time-stamp placeholder.

    Refuses a token whose messageImprint is not the ``/ByteRange`` digest with the same
    algorithm (RFC 3161 §2.4.2): it would time-stamp another document."""
    try:
        info = cms.ContentInfo.load(token, strict=True)
        tst_info = info["content"]["encap_content_info"]["content"].parsed
        imprint = tst_info["message_imprint"]
        algorithm = imprint["hash_algorithm"]["algorithm"].native
        hashed = imprint["hashed_message"].native
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise PdfError("time-stamp: not an RFC 3161 TimeStampToken") from exc
    if algorithm != prepared.hash_algorithm or hashed != prepared.digest:
        raise PdfError("time-stamp: its messageImprint does not cover this document")
    return fill(prepared, token)


def document_time_stamps(pdf: bytes) -> tuple[cms.SignedData, ...]:
    """The document time-stamp tokens' SignedData, oldest first (EN 319 142-1 §5.4.3)."""
    try:
        reader = PdfFileReader(BytesIO(pdf), strict=False)
        return tuple(s.signed_data for s in reader.embedded_timestamp_signatures)
    except (PyHankoPdfError, ValueError, KeyError, TypeError) as exc:
        raise PdfError(f"not a readable PDF: {exc}") from exc


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))
