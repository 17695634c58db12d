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

from asn1crypto import cms, core, crl, ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.ocsp import (
    OCSPCertStatus,
    OCSPRequestBuilder,
    OCSPResponseStatus,
    load_der_ocsp_response,
)
from cryptography.x509.oid import ExtendedKeyUsageOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.general import CMSExtractionError, extract_certificate_info
from pyhanko.sign.signers.pdf_byterange import DocumentTimestamp
from pyhanko.sign.validation.dss import DocumentSecurityStore

from ca import der
from signer.formats import FormatError, PdfError
from signer.formats.pdf import PreparedPdf, fill, prepare_field

__all__ = [
    "DOCUMENT_TIME_STAMP_RESERVED",
    "ValidationData",
    "add_validation_data",
    "cades_b_lt",
    "document_time_stamps",
    "embed_document_time_stamp",
    "good_ocsp_answer",
    "newest_time_stamps",
    "ocsp_request",
    "prepare_document_time_stamp",
    "time_stamp_certificate",
]

#: Room for a document time-stamp token: the built-in TSA's token with a three-certificate
#: chain is under 2 KiB; an external TSA may send more.
DOCUMENT_TIME_STAMP_RESERVED = 8 * 1024
_FIELD_PREFIX = "DocTimeStamp"
_OID_SIGNATURE_TIME_STAMP = "1.2.840.113549.1.9.16.2.14"
_OID_SIGNED_DATA = core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()  # RFC 5652 §5.1
#: SignedData fields before ``certificates`` (RFC 5652 §5.1), copied as they are.
_SIGNED_DATA_HEAD = ("version", "digest_algorithms", "encap_content_info")
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
        for item in (*self.crls, *self.ocsps):
            if not isinstance(item, bytes) or not item:
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


def cades_b_lt(signature: bytes, data: ValidationData) -> bytes:
    """CAdES baseline B-LT (EN 319 122-1 §6.3, Table 1) from a B-T ``signature``: the
    validation data goes into the SignedData's own ``certificates`` and ``crls`` fields
    (RFC 5652 §5.1, §10.2.1; OCSP responses as ``other`` RevocationInfoChoice
    id-ri-ocsp-response, RFC 5940 §4.1, which makes the SignedData version 5). The baseline
    profile takes these fields, not the certificate-values and revocation-values attributes.

    Neither field is signed (RFC 5652 §5.4), so the signature and its time-stamp are untouched:
    the SignerInfos are copied byte for byte. Items already present are not added again.
    Raises :class:`FormatError` when ``signature`` is not a DER CMS SignedData."""
    try:
        signed_data = cms.ContentInfo.load(signature, strict=True)["content"]
        certificates = [c.dump() for c in signed_data["certificates"] or ()]
        revocations = [r.dump() for r in signed_data["crls"] or ()]
        parts = [signed_data[name].dump() for name in _SIGNED_DATA_HEAD]
        signer_infos = signed_data["signer_infos"].dump()
    except (ValueError, TypeError, KeyError) as exc:
        raise FormatError("signature: not a DER CMS SignedData") from exc
    certificates += [c.public_bytes(Encoding.DER) for c in data.certificates]
    revocations += list(data.crls)
    revocations += [_ocsp_choice(response) for response in data.ocsps]
    version = core.Integer(5).dump() if data.ocsps else parts[0]
    body = der.sequence(
        version,
        *parts[1:],
        der.implicit(0, der.set_of(*_unique(certificates))),
        der.implicit(1, der.set_of(*_unique(revocations))),
        signer_infos,
    )
    return der.sequence(_OID_SIGNED_DATA, der.explicit(0, body))


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


def newest_time_stamps(pdf: bytes) -> tuple[cms.SignedData, ...]:
    """The time-stamps whose validation data the next archive time-stamp must bring in
    (EN 319 142-1 §5.4.3; EN 319 102-1 §5.6.3): the newest document time-stamp; without one
    (B-T, B-LT), every signature's signature-time-stamps (EN 319 122-1 §5.3). Empty when the
    PDF holds neither: a B-B signature has nothing to extend."""
    try:
        reader = PdfFileReader(BytesIO(pdf), strict=False)
        stamps = list(reader.embedded_timestamp_signatures)
        if stamps:
            return (stamps[-1].signed_data,)
        return tuple(
            value["content"]
            for field in reader.embedded_regular_signatures
            for attribute in field.signer_info["unsigned_attrs"] or ()
            if attribute["type"].dotted == _OID_SIGNATURE_TIME_STAMP
            for value in attribute["values"]
        )
    except (PyHankoPdfError, ValueError, KeyError, TypeError) as exc:
        raise PdfError(f"not a readable PDF: {exc}") from exc


def time_stamp_certificate(token: cms.SignedData) -> x509.Certificate:
    """The TSA certificate that signed ``token``, found in its ``certificates`` by the signer
    identifier (RFC 3161 §2.4.1 certReq; RFC 5652 §5.3). Raises :class:`PdfError`."""
    try:
        info = extract_certificate_info(token)
    except (CMSExtractionError, ValueError, KeyError, TypeError) as exc:
        raise PdfError("time-stamp: its TSA certificate is not in the token") from exc
    return x509.load_der_x509_certificate(info.signer_cert.dump())


def ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """A DER OCSPRequest about ``certificate`` (RFC 6960 §4.1.1; SHA-256 CertID)."""
    request = OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA256()).build()
    return request.public_bytes(Encoding.DER)


def good_ocsp_answer(
    answer: bytes, certificate: x509.Certificate, issuer: x509.Certificate
) -> x509.Certificate:
    """The responder certificate of ``answer``, a successful OCSPResponse (RFC 6960 §4.2.1)
    saying ``good`` about ``certificate``, signed by a delegated responder that ``issuer``
    issued with id-kp-OCSPSigning (§4.2.2.2). Validators need that certificate beside the
    answer: pyHanko's past validation of an expired TSA certificate takes an OCSP answer
    whose responder certificate it can date, not a CRL of the TSA's own CA (see
    ``tests/unit/signer/test_ltv_decades.py``). Raises :class:`PdfError` naming why not."""
    try:
        response = load_der_ocsp_response(answer)
        if response.response_status != OCSPResponseStatus.SUCCESSFUL:
            raise PdfError(f"OCSP: {response.response_status.name.lower()}")
        if response.serial_number != certificate.serial_number:
            raise PdfError("OCSP: the answer is about another certificate")
        if response.certificate_status != OCSPCertStatus.GOOD:
            raise PdfError(f"OCSP: the certificate is {response.certificate_status.name.lower()}")
        responder = next(c for c in response.certificates if c.subject != issuer.subject)
        responder.verify_directly_issued_by(issuer)
        usage = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.OCSP_SIGNING not in usage:
            raise PdfError("OCSP: the responder lacks id-kp-OCSPSigning")
        key = responder.public_key()
        if (
            not isinstance(key, ec.EllipticCurvePublicKey)
            or response.signature_hash_algorithm is None
        ):
            raise PdfError("OCSP: not an ECDSA responder")
        key.verify(
            response.signature,
            response.tbs_response_bytes,
            ec.ECDSA(response.signature_hash_algorithm),
        )
    except (ValueError, TypeError, StopIteration, InvalidSignature, x509.ExtensionNotFound) as exc:
        raise PdfError(f"OCSP: not a valid answer from the CA's responder ({exc})") from exc
    return responder


def _ocsp_choice(response: bytes) -> bytes:
    """RevocationInfoChoice ``other`` with id-ri-ocsp-response (RFC 5940 §4.1)."""
    value = {
        "other_rev_info_format": "ocsp_response",
        "other_rev_info": ocsp.OCSPResponse.load(response),
    }
    return bytes(cms.RevocationInfoChoice(name="other", value=value).dump())


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))
