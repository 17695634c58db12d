"""An RFC 6960 OCSP responder for the long-lived certificates: the issuing CA (issued by the
root) and the TSA (issued by the issuing CA). The 10-minute leaves are never asked about: they
say ``noRevAvail`` (RFC 9608 §2) and carry no OCSP pointer (:mod:`ca.extensions`).

- :func:`build_responder_certificate`: a delegated responder certificate (RFC 6960 §4.2.2.2),
  one per CA (the root, each issuing CA generation), all for the one responder key in the HSM;
  :func:`renewal_due` says when one is renewed;
- :func:`ask` reads a DER OCSPRequest (RFC 6960 §4.1) and :meth:`Question.answer` signs the
  DER OCSPResponse (§4.2); :func:`respond` does both. Built with
  cryptography's :mod:`~cryptography.x509.ocsp` builder, so the HSM key signs like any
  ``EllipticCurvePrivateKey``.

Pure: the time, the key and what each CA issued and revoked are handed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca._certs import hash_for, service_certificate, utc_seconds
from ca.cacerts import check_service_inputs
from ca.errors import PolicyError
from ca.revocation import Revocation
from ca.settings import CaNames

__all__ = [
    "MAX_NONCE_OCTETS",
    "MAX_REQUEST_OCTETS",
    "RESPONDER_LIFETIME",
    "RESPONDER_RENEW_BEFORE",
    "IssuerStatus",
    "Question",
    "ask",
    "build_responder_certificate",
    "malformed",
    "renewable",
    "renewal_due",
    "respond",
    "try_later",
]

#: One CertID with SHA-512 hashes, a 32-octet nonce and a signature with certificates stays
#: far below this; anything larger is no request this responder reads.
MAX_REQUEST_OCTETS = 8192
#: RFC 8954 §2.1: a nonce is 1 to 32 octets; a responder rejects longer ones.
MAX_NONCE_OCTETS = 32
#: A responder certificate with id-pkix-ocsp-nocheck cannot be revoked, so it is short-lived
#: (RFC 6960 §4.2.2.2.1): `qes init` issues 90 days and renews it once a third is left.
RESPONDER_LIFETIME = timedelta(days=90)
RESPONDER_RENEW_BEFORE = RESPONDER_LIFETIME / 3
#: A responder certificate ending this close to its CA's end already lives as long as one can.
_AT_ITS_CA_END = timedelta(minutes=1)


def build_responder_certificate(
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate,
    responder_public_key: ec.EllipticCurvePublicKey,
    names: CaNames,
    common_name: str,
    *,
    now: datetime,
    lifetime: timedelta,
) -> x509.Certificate:
    """A delegated OCSP responder certificate issued directly by ``issuer`` (RFC 6960 §4.2.2.2).

    - subject C, O, organizationIdentifier, CN (the CA's operator, like the TSA);
    - keyUsage digitalSignature, critical (RFC 5280 §4.2.1.3);
    - extendedKeyUsage id-kp-OCSPSigning only (RFC 6960 §4.2.2.2: the mark of a responder
      authorised by the CA);
    - id-pkix-ocsp-nocheck, NULL (RFC 6960 §4.2.2.2.1): relying parties do not check the
      responder certificate's own revocation, so its lifetime is kept short and it carries
      neither CRL distribution point nor OCSP pointer;
    - SKI and AKI (RFC 5280 §4.2.1.2, §4.2.1.1).

    Validity is ``[now, now + lifetime]`` inside the issuer's. Raises :class:`PolicyError`.
    """
    start = utc_seconds(now)
    check_service_inputs(
        issuer_key, issuer, responder_public_key, start, lifetime, "responder_public_key"
    )
    builder = service_certificate(
        names.service_name(common_name),
        issuer,
        responder_public_key,
        start,
        lifetime,
        ExtendedKeyUsageOID.OCSP_SIGNING,
        purpose_critical=False,
    ).add_extension(x509.OCSPNoCheck(), critical=False)
    return builder.sign(issuer_key, hash_for(issuer.public_key()))


def renewable(responder: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether a new responder certificate from ``issuer`` could live longer than
    ``responder``: not when it already ends with its CA, as no certificate outlives its
    issuer's (the lifetime is cut to it, :func:`ca.cacerts.check_service_inputs`). Such a one
    is left to end with its CA: renewing it gains nothing, and its end is the CA's."""
    return issuer.not_valid_after_utc - responder.not_valid_after_utc > _AT_ITS_CA_END


def renewal_due(responder: x509.Certificate, issuer: x509.Certificate, now: datetime) -> bool:
    """Whether ``responder`` (issued by ``issuer``) is to be renewed at ``now``: once no more
    than :data:`RESPONDER_RENEW_BEFORE` of it is left (RFC 6960 §4.2.2.2.1: with
    id-pkix-ocsp-nocheck it cannot be revoked, so it is short-lived and renewed), unless it
    ends with its CA (:func:`renewable`)."""
    left = responder.not_valid_after_utc - now
    return left <= RESPONDER_RENEW_BEFORE and renewable(responder, issuer)


@dataclass(frozen=True)
class IssuerStatus:
    """What one CA issued that this responder answers for, and who answers in its name.

    ``issued`` maps the serial of every long-lived certificate the CA issued to its
    :class:`Revocation`, or to None while it is good; a serial not in it is ``unknown``
    (RFC 6960 §2.2). ``responder`` is the delegated responder certificate issued by
    ``issuer`` (RFC 6960 §4.2.2.2); ``extra`` are further certificates for the response
    (the issuer when it is not a trust anchor), so a client can build the path.
    """

    issuer: x509.Certificate
    responder: x509.Certificate
    issued: Mapping[int, Revocation | None]
    extra: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        if self.responder.issuer != self.issuer.subject:
            raise PolicyError("responder: not issued by this CA (RFC 6960 §4.2.2.2)")
        eku = self.responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise PolicyError("responder: lacks id-kp-OCSPSigning")

    def matches(self, request: ocsp.OCSPRequest) -> bool:
        """The request's CertID names this issuer: hashes of its DN and of its public key's
        BIT STRING, with the request's hash algorithm (RFC 6960 §4.1.1)."""
        algorithm = type(request.hash_algorithm)()
        name_hash = _digest(algorithm, self.issuer.subject.public_bytes())
        key_bits = self.issuer.public_key().public_bytes(Encoding.X962, _UNCOMPRESSED)
        return request.issuer_name_hash == name_hash and request.issuer_key_hash == _digest(
            algorithm, key_bits
        )


_UNCOMPRESSED = PublicFormat.UncompressedPoint


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


class _Malformed(Exception):
    pass


def malformed() -> bytes:
    """OCSPResponse malformedRequest (RFC 6960 §4.2.1): no responseBytes, nothing signed."""
    return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


def try_later() -> bytes:
    """OCSPResponse tryLater (RFC 6960 §4.2.1): the status cannot be read just now."""
    return _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER)


def _parse_request(request_der: bytes) -> tuple[ocsp.OCSPRequest, bytes | None]:
    """The one-certificate request and its nonce; raises :class:`_Malformed` for anything
    that is not a DER OCSPRequest (RFC 6960 §4.1.1), asks about several certificates
    (cryptography reads one CertID per request; every common client sends one), or carries a
    nonce outside 1..32 octets (RFC 8954 §2.1)."""
    if not isinstance(request_der, bytes) or not 0 < len(request_der) <= MAX_REQUEST_OCTETS:
        raise _Malformed("empty or oversized request")
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        extensions = request.extensions
        request.serial_number  # noqa: B018 - reads the CertID fully
        try:
            nonce: bytes | None = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
    except (ValueError, TypeError) as exc:
        raise _Malformed(str(exc)) from exc
    if nonce is not None and not 0 < len(nonce) <= MAX_NONCE_OCTETS:
        raise _Malformed("nonce length")
    return request, nonce


@dataclass(frozen=True)
class Question:
    """A well-formed request about a certificate of a CA this responder answers for."""

    request: ocsp.OCSPRequest
    nonce: bytes | None
    about: IssuerStatus

    def answer(self, key: ec.EllipticCurvePrivateKey, now: datetime, validity: timedelta) -> bytes:
        """A ``successful`` OCSPResponse (RFC 6960 §4.2.1): a BasicOCSPResponse signed by
        ``key`` (the key of ``about.responder``), responderID byKey, the responder certificate
        and ``about.extra`` in ``certs``, one SingleResponse ``good``, ``revoked``
        (revocationTime and, unless unspecified, revocationReason) or ``unknown``, thisUpdate
        ``now`` and nextUpdate ``now + validity`` (§4.2.2.1), and the request's nonce echoed
        (RFC 8954 §2.1). producedAt is the time of signing, set by cryptography."""
        responder = self.about.responder
        if key.public_key() != responder.public_key():
            raise PolicyError("key: does not match the OCSP responder certificate")
        start = utc_seconds(now)
        request = self.request
        status, revoked = ocsp.OCSPCertStatus.UNKNOWN, None
        if request.serial_number in self.about.issued:
            revoked = self.about.issued[request.serial_number]
            status = ocsp.OCSPCertStatus.GOOD if revoked is None else ocsp.OCSPCertStatus.REVOKED
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=request.issuer_name_hash,
                issuer_key_hash=request.issuer_key_hash,
                serial_number=request.serial_number,
                algorithm=request.hash_algorithm,
                cert_status=status,
                this_update=start,
                next_update=start + validity,
                revocation_time=None if revoked is None else revoked.revoked_at,
                revocation_reason=None if revoked is None else revoked.encoded_reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, responder)
            .certificates([responder, *self.about.extra])
        )
        if self.nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(self.nonce), critical=False)
        return builder.sign(key, hash_for(key.public_key())).public_bytes(Encoding.DER)


def ask(request_der: bytes, issuers: Sequence[IssuerStatus]) -> Question | bytes:
    """Read a DER OCSPRequest (RFC 6960 §4.1): a :class:`Question` to answer with the
    responder key, or the DER of an unsigned refusal (no key needed, so no HSM hop):
    ``malformedRequest`` for anything :func:`_parse_request` refuses, ``unauthorized``
    (RFC 6960 §2.3) for a CertID of no CA in ``issuers``."""
    try:
        request, nonce = _parse_request(request_der)
    except _Malformed:
        return malformed()
    about = next((i for i in issuers if i.matches(request)), None)
    if about is None:
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    return Question(request, nonce, about)


def respond(
    request_der: bytes,
    issuers: Sequence[IssuerStatus],
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
    validity: timedelta,
) -> bytes:
    """:func:`ask` and :meth:`Question.answer` in one: a DER OCSPResponse (RFC 6960 §4.2)."""
    question = ask(request_der, issuers)
    if isinstance(question, bytes):
        return question
    return question.answer(key, now, validity)
