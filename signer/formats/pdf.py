"""PDF signature fields for PAdES: prepare a field, digest its byte range, embed a CMS later.

The client keeps the document: :func:`prepare` adds an incremental update with a signature
field and a signature dictionary (``/SubFilter /ETSI.CAdES.detached``, ``/M``) whose
``/Contents`` is a zero-filled placeholder, and returns the digest of the ``/ByteRange``; only
that digest goes to the service (:func:`signer.formats.cms.pades_b_t`), and :func:`embed`
writes the returned CMS into the placeholder (ETSI EN 319 142-1 §5.2, ISO 32000-2 §12.8.1).

Uses pyHanko's low-level embedding protocol (``PdfCMSEmbedder.write_cms`` and
``PreparedByteRangeDigest.fill_with_cms``), which needs no signer and no certificate: the
certificate of an ephemeral key does not exist yet when the client hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from io import BytesIO

from asn1crypto import cms
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.cms_embedder import PdfCMSEmbedder, SigIOSetup, SigObjSetup
from pyhanko.sign.signers.constants import ESIC_EXTENSION_1
from pyhanko.sign.signers.pdf_byterange import (
    PdfSignedData,
    PreparedByteRangeDigest,
    SignatureObject,
)

from signer.formats import PdfError
from signer.formats.cms import HASH_ALGORITHMS

__all__ = ["DEFAULT_RESERVED_SIZE", "PreparedPdf", "embed", "fill", "prepare", "prepare_field"]

#: Room for the DER CMS: a CAdES B-T container with a three-certificate chain and a token
#: carrying two certificates is about 4 KiB; 16 KiB leaves space for larger chains.
DEFAULT_RESERVED_SIZE = 16 * 1024


@dataclass(frozen=True)
class PreparedPdf:
    """A PDF in its final pre-signing state, and where its signature goes.

    ``document`` is the whole file with a zero-filled ``/Contents`` placeholder at
    ``[reserved_start, reserved_end)`` (the ``<...>`` hex string); ``digest`` is the
    ``hash_algorithm`` digest of every other byte, the ``/ByteRange`` (ISO 32000-2 §12.8.1).
    Plain values, so a client may keep it on disk while the service signs.
    """

    document: bytes
    digest: bytes
    hash_algorithm: str
    reserved_start: int
    reserved_end: int

    def __post_init__(self) -> None:
        if HASH_ALGORITHMS.get(self.hash_algorithm) != len(self.digest):
            raise PdfError("digest: does not match hash_algorithm")
        if not 0 < self.reserved_start < self.reserved_end <= len(self.document):
            raise PdfError("reserved region: outside the document")

    @property
    def reserved_size(self) -> int:
        """Largest DER CMS that fits: the placeholder holds two hex digits per octet."""
        return (self.reserved_end - self.reserved_start - 2) // 2


def prepare(
    pdf: bytes,
    field_name: str,
    signing_time: datetime,
    *,
    reserved_size: int = DEFAULT_RESERVED_SIZE,
    hash_algorithm: str = "sha256",
) -> PreparedPdf:
    """Add signature field ``field_name`` (invisible, created unless an empty one exists) and
    a PAdES signature dictionary, and digest the byte range.

    The dictionary carries ``/Filter /Adobe.PPKLite``, ``/SubFilter /ETSI.CAdES.detached``
    and ``/M`` = ``signing_time`` (EN 319 142-1 §5.2.3, §6.2.1: the claimed signing time is
    ``/M``, never a signing-time attribute). The document is marked PDF 1.7 with the ESIC
    extension, or kept at 2.0 (EN 319 142-1 §5.1). Raises :class:`PdfError` for a document
    that cannot be read, is encrypted, or has no room for ``field_name``.
    """
    if not isinstance(signing_time, datetime) or signing_time.utcoffset() is None:
        raise PdfError("signing_time: must be a timezone-aware datetime")
    _check_size(reserved_size)
    placeholder = SignatureObject(
        timestamp=signing_time,
        subfilter=SigSeedSubFilter.PADES,
        bytes_reserved=2 * reserved_size,  # hex digits
    )
    return prepare_field(pdf, field_name, placeholder, hash_algorithm)


def prepare_field(
    pdf: bytes, field_name: str, placeholder: PdfSignedData, hash_algorithm: str
) -> PreparedPdf:
    """The common part of :func:`prepare` and of document time-stamps
    (:func:`signer.formats.ltv.prepare_document_time_stamp`): one incremental update with the
    field ``field_name`` (created unless an empty one exists) holding ``placeholder``, PDF 1.7
    with the ESIC extension or 2.0 (EN 319 142-1 §5.1), and the ``/ByteRange`` digest."""
    if hash_algorithm not in HASH_ALGORITHMS:
        raise PdfError(f"hash_algorithm: must be one of {', '.join(HASH_ALGORITHMS)}")
    try:
        writer = IncrementalPdfFileWriter(BytesIO(pdf))
        if writer.security_handler is not None:
            raise PdfError("encrypted PDFs are not supported")
        if writer.prev.xrefs.hybrid_xrefs_present:
            raise PdfError("PDFs with hybrid cross-reference sections are not supported")
        writer.ensure_output_version(version=(1, 7))  # type: ignore[no-untyped-call]
        if writer.output_version < (2, 0):
            writer.register_extension(ESIC_EXTENSION_1)
        protocol = PdfCMSEmbedder().write_cms(field_name=field_name, writer=writer)
        next(protocol)  # the field: found or created
        protocol.send(SigObjSetup(sig_placeholder=placeholder))
        prepared, output = protocol.send(SigIOSetup(md_algorithm=hash_algorithm))
    except (PyHankoPdfError, SigningError, ValueError, KeyError, TypeError) as exc:
        raise PdfError(f"cannot prepare the PDF: {exc}") from exc
    return PreparedPdf(
        document=bytes(output.getvalue()),
        digest=bytes(prepared.document_digest),
        hash_algorithm=hash_algorithm,
        reserved_start=prepared.reserved_region_start,
        reserved_end=prepared.reserved_region_end,
    )


def _check_size(reserved_size: int) -> None:
    if not isinstance(reserved_size, int) or not 1024 <= reserved_size <= 1024 * 1024:
        raise PdfError("reserved_size: must be between 1 KiB and 1 MiB")


def embed(prepared: PreparedPdf, signature: bytes) -> bytes:
    """The signed PDF: ``signature`` (DER CMS) written into the placeholder.

    Refuses a CMS that is not a SignedData whose single SignerInfo has a message-digest
    attribute equal to ``prepared.digest`` with the same digest algorithm: that CMS was made
    for another document or another preparation, and would yield an invalid signature.
    """
    _check_covers(signature, prepared)
    return fill(prepared, signature)


def fill(prepared: PreparedPdf, signature: bytes) -> bytes:
    """``signature`` (DER) written into the placeholder of ``prepared``, unchecked: callers
    check first that it covers ``prepared.digest`` (:func:`embed` for a signature's CMS,
    :func:`signer.formats.ltv.embed_document_time_stamp` for a time-stamp token)."""
    if len(signature) > prepared.reserved_size:
        raise PdfError(
            f"signature: {len(signature)} octets, the field has room for {prepared.reserved_size}"
        )
    output = BytesIO(prepared.document)
    range_digest = PreparedByteRangeDigest(
        document_digest=prepared.digest,
        reserved_region_start=prepared.reserved_start,
        reserved_region_end=prepared.reserved_end,
    )
    try:
        range_digest.fill_with_cms(output, signature)
    except SigningError as exc:
        raise PdfError(f"cannot embed the signature: {exc}") from exc
    return output.getvalue()


def _check_covers(signature: bytes, prepared: PreparedPdf) -> None:
    try:
        signer_infos = cms.ContentInfo.load(signature, strict=True)["content"]["signer_infos"]
        (signer_info,) = signer_infos
        algorithm = signer_info["digest_algorithm"]["algorithm"].native
        digests = [
            value.native
            for attribute in signer_info["signed_attrs"]
            if attribute["type"].native == "message_digest"
            for value in attribute["values"]
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise PdfError("signature: not a CMS SignedData with one SignerInfo") from exc
    if algorithm != prepared.hash_algorithm or digests != [prepared.digest]:
        raise PdfError("signature: its message-digest does not cover this document's byte range")
