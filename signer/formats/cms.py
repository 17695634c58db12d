"""Detached CMS signatures at baseline level B-T: CAdES for any file, PAdES for PDF fields.

The private-key operation is the caller's key's ``sign()``, called once in the calling thread:
an :class:`~signer.keys.key.HsmEcPrivateKey` signs exactly like an in-memory key, on the HSM
session that the current ``Hsm.run`` callback holds. The signature-time-stamp comes from a
caller-provided :class:`Timestamper` (in the service the built-in TSA in the same HSM hop,
:meth:`ca.tsa.TimeStampAuthority.timestamp_digest`), so the token is made while the 10-minute
certificate is still valid (STANDARDS.md §2, §4).

Built synchronously from DER parts (:mod:`ca.der`, small values by asn1crypto) rather than
through pyHanko's ``Signer.async_sign``: pyHanko's ``SimpleSigner`` cannot take an HSM key at
all (it re-loads its key from PKCS#8 DER, which a non-extractable key refuses), and a custom
pyHanko ``Signer`` works but needs an event loop per call and spends 5-15 ms per signature
re-encoding asn1crypto values, all of it inside the HSM hop while an HSM session is held. Built
here, a CAdES B-T container with its token costs about 0.2 ms, and pyHanko and OpenSSL remain
independent validators of it in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ca import der
from signer.formats import FormatError

__all__ = [
    "HASH_ALGORITHMS",
    "CmsSigner",
    "Timestamper",
    "cades_b_t",
    "pades_b_t",
    "signature_time_stamp",
]

#: Document digest algorithms (asn1crypto names) and their digest sizes (RFC 5754 §2).
HASH_ALGORITHMS: dict[str, int] = {"sha256": 32, "sha384": 48, "sha512": 64}
_INTEGER_1 = core.Integer(1).dump()
_OID_DATA = core.ObjectIdentifier("1.2.840.113549.1.7.1").dump()  # RFC 5652 §4
_OID_SIGNED_DATA = core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()  # RFC 5652 §5.1
_OID_CONTENT_TYPE = core.ObjectIdentifier("1.2.840.113549.1.9.3").dump()  # RFC 5652 §11.1
_OID_MESSAGE_DIGEST = core.ObjectIdentifier("1.2.840.113549.1.9.4").dump()  # RFC 5652 §11.2
_OID_SIGNING_TIME = core.ObjectIdentifier("1.2.840.113549.1.9.5").dump()  # RFC 5652 §11.3
_OID_SIGNING_CERTIFICATE_V2 = core.ObjectIdentifier("1.2.840.113549.1.9.16.2.47").dump()
_OID_SIGNATURE_TIME_STAMP = core.ObjectIdentifier("1.2.840.113549.1.9.16.2.14").dump()
_CONTENT_TYPE_DATA = der.sequence(_OID_CONTENT_TYPE, der.set_of(_OID_DATA))
_HASHES: dict[str, type[hashes.SHA256] | type[hashes.SHA384] | type[hashes.SHA512]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class Timestamper(Protocol):
    """Makes an RFC 3161 TimeStampToken (DER ContentInfo) over ``digest``.

    ``hash_algorithm`` names the algorithm of ``digest`` (``sha256``, ``sha384``, ``sha512``);
    the token's messageImprint must use it (RFC 3161 §2.4.2; checked here).
    """

    def __call__(self, digest: bytes, hash_algorithm: str, /) -> bytes: ...


@dataclass(frozen=True)
class CmsSigner:
    """Who signs, as both baseline forms need it: the signer ``certificate`` and its ``key``
    (they must match), the ``chain`` that goes into ``certificates`` beside the signer
    certificate (RFC 5652 §5.1), and the ``timestamper`` of the signature-time-stamp."""

    certificate: x509.Certificate
    chain: Sequence[x509.Certificate]
    key: ec.EllipticCurvePrivateKey
    timestamper: Timestamper


def cades_b_t(
    digest: bytes, hash_algorithm: str, signer: CmsSigner, *, signing_time: datetime
) -> bytes:
    """Detached CAdES baseline B-T signature (DER ContentInfo) over a document ``digest``.

    ETSI EN 319 122-1 §6.3 (B-B) and §6.4 (B-T), STANDARDS.md §2: signed attributes exactly
    content-type id-data, message-digest, signing-time (``signing_time``, timezone-aware,
    whole seconds) and signing-certificate-v2 (SHA-256 ESSCertIDv2 with issuerSerial,
    RFC 5035 §3); ``certificates`` holds the signer certificate and the ``signer``'s chain;
    the unsigned attribute signature-time-stamp (1.2.840.113549.1.9.16.2.14, EN 319 122-1
    §5.3) holds a token from its timestamper over the SignerInfo signature value (RFC 3161
    Appendix A).
    """
    if not isinstance(signing_time, datetime) or signing_time.utcoffset() is None:
        raise FormatError("signing_time: must be a timezone-aware datetime")
    when = signing_time.astimezone(UTC).replace(microsecond=0)
    return _signed_data(digest, hash_algorithm, signer, when)


def pades_b_t(byte_range_digest: bytes, hash_algorithm: str, signer: CmsSigner) -> bytes:
    """The CMS for a PAdES baseline B-T signature field (``/SubFilter /ETSI.CAdES.detached``).

    ETSI EN 319 142-1 §6.3 (B-B: content-type, message-digest, signing-certificate-v2 and
    **no** signing-time, the claimed time being the signature dictionary's ``/M``) and §6.4
    (B-T through the signature-time-stamp attribute). ``byte_range_digest`` is the digest of
    the document's ``/ByteRange``, computed by the client (:func:`signer.formats.pdf.prepare`),
    which embeds the result with :func:`signer.formats.pdf.embed`.
    """
    return _signed_data(byte_range_digest, hash_algorithm, signer)


def signature_time_stamp(signature: bytes) -> bytes:
    """The DER TimeStampToken in a CMS signature's signature-time-stamp attribute.

    For the evidence record and for checking the token on its own (``openssl cms`` ignores
    unsigned attributes; STANDARDS.md §5). Raises :class:`FormatError` unless the CMS has
    exactly one SignerInfo carrying exactly one such token.
    """
    try:
        signer_infos = cms.ContentInfo.load(signature)["content"]["signer_infos"]
        if len(signer_infos) != 1:
            raise FormatError("signature: expected exactly one SignerInfo")
        tokens = [
            value
            for attribute in signer_infos[0]["unsigned_attrs"] or ()
            if attribute["type"].native == "signature_time_stamp_token"
            for value in attribute["values"]
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise FormatError("signature: not a CMS SignedData") from exc
    if len(tokens) != 1:
        raise FormatError("signature: expected exactly one signature-time-stamp token")
    return bytes(tokens[0].dump())


def _signed_data(
    digest: bytes, hash_algorithm: str, signer: CmsSigner, signing_time: datetime | None = None
) -> bytes:
    """ContentInfo with a detached SignedData (RFC 5652 §5) and one SignerInfo.

    Assembled with :mod:`ca.der` around DER that exists already (certificates, the token,
    the signed attributes as signed); small values are encoded by asn1crypto.
    """
    size = HASH_ALGORITHMS.get(hash_algorithm)
    if size is None:
        raise FormatError(f"hash_algorithm: must be one of {', '.join(HASH_ALGORITHMS)}")
    if not isinstance(digest, bytes) or len(digest) != size:
        raise FormatError(f"digest: must be {size} bytes for {hash_algorithm}")
    if not isinstance(signer.key, ec.EllipticCurvePrivateKey):
        raise FormatError("key: must be an EC private key")
    if signer.key.public_key() != signer.certificate.public_key():
        raise FormatError("key: does not match the signer certificate")
    cert_der = signer.certificate.public_bytes(Encoding.DER)
    issuer = signer.certificate.issuer.public_bytes()
    serial_number = core.Integer(signer.certificate.serial_number).dump()
    signed_attrs = der.set_of(
        _CONTENT_TYPE_DATA,
        _attribute(_OID_MESSAGE_DIGEST, core.OctetString(digest).dump()),
        _signing_certificate_v2(cert_der, issuer, serial_number),
        b"" if signing_time is None else _signing_time(signing_time),
    )
    # RFC 5652 §5.4: the signer's digestAlgorithm also hashes the signed attributes;
    # ecdsa-with-SHA* without parameters, DER Ecdsa-Sig-Value (RFC 5753 §2.1, RFC 5758 §3.2).
    signature = signer.key.sign(signed_attrs, ec.ECDSA(_HASHES[hash_algorithm]()))
    token = _time_stamp(signer.timestamper, signature, hash_algorithm)
    digest_algorithm = algos.DigestAlgorithm({"algorithm": hash_algorithm}).dump()
    signer_info = der.sequence(
        _INTEGER_1,  # v1: sid is issuerAndSerialNumber (RFC 5652 §5.3)
        der.sequence(issuer, serial_number),  # IssuerAndSerialNumber
        digest_algorithm,
        der.implicit(0, signed_attrs),
        algos.SignedDigestAlgorithm({"algorithm": f"{hash_algorithm}_ecdsa"}).dump(),
        core.OctetString(signature).dump(),
        der.implicit(1, der.set_of(_attribute(_OID_SIGNATURE_TIME_STAMP, token))),
    )
    certificates = der.set_of(
        cert_der, *(extra.public_bytes(Encoding.DER) for extra in signer.chain)
    )
    signed_data = der.sequence(
        _INTEGER_1,  # v1: id-data, issuerAndSerialNumber, X.509 certificates only (§5.1)
        der.set_of(digest_algorithm),
        der.sequence(_OID_DATA),  # detached: eContent absent (RFC 5652 §5.2)
        der.implicit(0, certificates),
        der.set_of(signer_info),
    )
    return der.sequence(_OID_SIGNED_DATA, der.explicit(0, signed_data))


def _attribute(oid: bytes, *values: bytes) -> bytes:
    """Attribute ::= SEQUENCE { attrType OID, attrValues SET OF value } (RFC 5652 §5.3)."""
    return der.sequence(oid, der.set_of(*values))


def _signing_certificate_v2(cert_der: bytes, issuer: bytes, serial_number: bytes) -> bytes:
    """signing-certificate-v2 with one SHA-256 ESSCertIDv2 and issuerSerial (RFC 5035 §3,
    EN 319 122-1 §5.2.2.3); hashAlgorithm is the DEFAULT and so omitted in DER."""
    cert_hash = hashes.Hash(hashes.SHA256())
    cert_hash.update(cert_der)
    # SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2 }
    # ESSCertIDv2 ::= SEQUENCE { certHash OCTET STRING, issuerSerial IssuerSerial }
    # IssuerSerial ::= SEQUENCE { issuer GeneralNames (directoryName [4], explicit because
    #   Name is a CHOICE), serialNumber INTEGER }
    issuer_serial = der.sequence(der.sequence(der.explicit(4, issuer)), serial_number)
    ess_cert_id = der.sequence(core.OctetString(cert_hash.finalize()).dump(), issuer_serial)
    return _attribute(_OID_SIGNING_CERTIFICATE_V2, der.sequence(der.sequence(ess_cert_id)))


def _signing_time(when: datetime) -> bytes:
    """signing-time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5652 §11.3)."""
    form = "utc_time" if when.year < 2050 else "generalized_time"
    return _attribute(_OID_SIGNING_TIME, cms.Time({form: when}).dump())


def _time_stamp(timestamper: Timestamper, signature: bytes, hash_algorithm: str) -> bytes:
    """A token over the signature value, hashed with the signer's digest algorithm, checked to
    be a TimeStampToken whose messageImprint is that hash (RFC 3161 §2.4.2, Appendix A)."""
    digest = hashes.Hash(_HASHES[hash_algorithm]())
    digest.update(signature)
    imprint = digest.finalize()
    token = bytes(timestamper(imprint, hash_algorithm))
    try:
        parsed = cms.ContentInfo.load(token, strict=True)
        encap = parsed["content"]["encap_content_info"]
        message_imprint = encap["content"].parsed["message_imprint"]
        covers = (
            parsed["content_type"].native == "signed_data"
            and encap["content_type"].native == "tst_info"
            and message_imprint["hash_algorithm"]["algorithm"].native == hash_algorithm
            and message_imprint["hashed_message"].native == imprint
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise FormatError("timestamper: did not return a TimeStampToken") from exc
    if not covers:
        raise FormatError("timestamper: token does not cover the signature value")
    return token
