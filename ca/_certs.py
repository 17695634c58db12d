"""Helpers shared by CA-certificate and end-entity issuance."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ca.errors import CaError, PolicyError

_SERIAL_BITS = 159  # 20 octets of DER with a clear sign bit (RFC 5280 §4.1.2.2)

# RFC 5480 §4 and ETSI TS 119 312: the hash strength matches the curve size.
_HASHES: dict[str, type[hashes.SHA256] | type[hashes.SHA384] | type[hashes.SHA512]] = {
    ec.SECP256R1.name: hashes.SHA256,
    ec.SECP384R1.name: hashes.SHA384,
    ec.SECP521R1.name: hashes.SHA512,
}


def random_serial() -> int:
    """A positive serial of up to 159 CSPRNG bits (RFC 5280 §4.1.2.2, CA/B BR §7.1).

    Values below 2**64 are redrawn (probability 2**-95), so every serial is longer than 64 bits.
    """
    while True:
        serial = secrets.randbits(_SERIAL_BITS)
        if serial >> 64:
            return serial


def check_serial(serial: object) -> int:
    """Refuse a serial that is not a positive integer of at most 20 DER octets."""
    if not isinstance(serial, int) or isinstance(serial, bool):
        raise CaError("serial source returned a non-integer")
    if serial <= 0 or serial.bit_length() > _SERIAL_BITS:
        raise CaError("serial must be positive and fit in 20 octets (RFC 5280 §4.1.2.2)")
    return serial


def hash_for(public_key: object) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    """The signature hash for an EC CA key: SHA-256 (P-256), SHA-384 (P-384), SHA-512 (P-521)."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise PolicyError("CA key: must be an EC key")
    try:
        return _HASHES[public_key.curve.name]()
    except KeyError:
        raise PolicyError(f"CA key: unsupported curve {public_key.curve.name}") from None


def utc_seconds(now: datetime) -> datetime:
    """``now`` in UTC truncated to whole seconds (certificate times carry seconds only).

    A naive datetime is refused: an injected clock must say which time zone it means.
    """
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise PolicyError("clock: must return a timezone-aware datetime")
    return now.astimezone(UTC).replace(microsecond=0)


def key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    """A keyUsage with only the given bits set (RFC 5280 §4.2.1.3)."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def ca_key_usage() -> x509.KeyUsage:
    """keyCertSign + cRLSign (RFC 5280 §4.2.1.3), used critical on CA certificates."""
    return key_usage(key_cert_sign=True, crl_sign=True)


def subject_key_identifier(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    """The SKI of an issuer certificate, required to build an AKI (RFC 5280 §4.2.1.1)."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise PolicyError("issuer certificate has no subjectKeyIdentifier") from None


def service_certificate(
    subject: x509.Name,
    issuer: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    start: datetime,
    lifetime: timedelta,
    purpose: x509.ObjectIdentifier,
    *,
    purpose_critical: bool,
) -> x509.CertificateBuilder:
    """What the CA's service certificates (TSA, OCSP responder) share: a random serial,
    validity ``[start, start + lifetime]``, keyUsage digitalSignature critical (RFC 5280
    §4.2.1.3), one extendedKeyUsage ``purpose`` (§4.2.1.12), SKI and AKI (§4.2.1.2, §4.2.1.1).
    The caller adds what is particular to the service and signs."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=purpose_critical)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                subject_key_identifier(issuer)
            ),
            critical=False,
        )
    )
