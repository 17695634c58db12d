"""The built-in time-stamp authority: its certificate and RFC 3161 time-stamp tokens.

A 10-minute certificate has expired before most verifiers see the signature, so every signature
gets a signature-time-stamp at once (STANDARDS.md §2, §4). This module is the TSA core:

- :func:`build_tsa_certificate`: the TSA certificate issued by the issuing CA (RFC 3161 §2.3,
  ETSI EN 319 422 §7, STANDARDS.md §3);
- :class:`TimeStampAuthority`: answers DER ``TimeStampReq`` with DER ``TimeStampResp``
  (RFC 3161 §2.4) and makes tokens for a digest without a request (:meth:`timestamp_digest`),
  for the signer that time-stamps its own signature values in the same HSM hop.

Pure like the rest of :mod:`ca`: the clock, the serial source and the signing key are handed
in; the key is only asked for ``sign()`` and ``public_key()``, so an HSM-backed
:class:`~cryptography.hazmat.primitives.asymmetric.ec.EllipticCurvePrivateKey` subclass works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from ca import _validate, der
from ca._certs import check_serial, hash_for, random_serial, service_certificate, utc_seconds
from ca.cacerts import check_service_inputs
from ca.errors import CaError, PolicyError, ProfileError
from ca.settings import CaNames

__all__ = [
    "HASH_ALGORITHMS",
    "TimeStampAuthority",
    "TimeStampResp",
    "TsaError",
    "build_tsa_certificate",
    "key_usage_period",
]

#: messageImprint hash algorithms by asn1crypto name, with their OIDs (RFC 5754 §2) and sizes.
HASH_ALGORITHMS: dict[str, tuple[str, int]] = {
    "sha256": ("2.16.840.1.101.3.4.2.1", 32),
    "sha384": ("2.16.840.1.101.3.4.2.2", 48),
    "sha512": ("2.16.840.1.101.3.4.2.3", 64),
}
_HASH_BY_OID = {oid: name for name, (oid, _) in HASH_ALGORITHMS.items()}
# ecdsa-with-SHA256/384/512, parameters absent (RFC 5758 §3.2).
_ECDSA = {"sha256": "sha256_ecdsa", "sha384": "sha384_ecdsa", "sha512": "sha512_ecdsa"}
# A TimeStampReq with a SHA-512 imprint, a policy and a 256-bit nonce is under 200 octets;
# anything far larger is not a request this TSA will read.
_MAX_REQUEST_OCTETS = 4096
_MAX_NONCE_BITS = 256
_DER_NULL = b"\x05\x00"
_INTEGER_1 = core.Integer(1).dump()
_INTEGER_3 = core.Integer(3).dump()
_STATUS_GRANTED = tsp.PKIStatusInfo({"status": "granted"}).dump()
_OID_SIGNED_DATA = core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()  # RFC 5652 §5.1
_OID_TST_INFO = core.ObjectIdentifier("1.2.840.113549.1.9.16.1.4").dump()  # RFC 3161 §2.4.2
_OID_CONTENT_TYPE = core.ObjectIdentifier("1.2.840.113549.1.9.3").dump()  # RFC 5652 §11.1
_OID_MESSAGE_DIGEST = core.ObjectIdentifier("1.2.840.113549.1.9.4").dump()  # RFC 5652 §11.2
_OID_SIGNING_CERTIFICATE_V2 = core.ObjectIdentifier("1.2.840.113549.1.9.16.2.47").dump()


class TsaError(CaError):
    """A time-stamp token cannot be made: bad input, wrong key or no usable time."""


class TimeStampResp(core.Sequence):  # type: ignore[misc]
    """RFC 3161 §2.4.2 TimeStampResp, with ``timeStampToken`` OPTIONAL as the RFC says
    (asn1crypto's own class makes it mandatory, so a rejection could not be encoded)."""

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


class _Rejected(Exception):
    """A request refused with a PKIFailureInfo bit (RFC 3161 §2.4.2)."""

    def __init__(self, failure: str, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason


@dataclass(frozen=True)
class _Request:
    hash_algorithm: str
    digest: bytes
    nonce: int | None
    certificates: bytes | None  # DER CertificateSet for the token, or None


def build_tsa_certificate(
    issuing_key: ec.EllipticCurvePrivateKey,
    issuing: x509.Certificate,
    tsa_public_key: ec.EllipticCurvePublicKey,
    names: CaNames,
    common_name: str,
    *,
    ca_issuers_url: str,
    crl_url: str,
    now: datetime,
    lifetime: timedelta,
    key_usage: timedelta,
) -> x509.Certificate:
    """The TSA certificate, signed by the issuing CA.

    - subject C, O, organizationIdentifier, CN (the legal person operating the TSA, like the CA
      names; EN 319 412-3 §4.2.1);
    - keyUsage digitalSignature, critical (RFC 5280 §4.2.1.3; EN 319 422 §7);
    - extendedKeyUsage timeStamping only, critical (RFC 3161 §2.3: "MUST contain only one
      instance ... This extension MUST be critical"; OpenSSL enforces it);
    - SKI and AKI (RFC 5280 §4.2.1.2, §4.2.1.1), AIA caIssuers (§4.2.2.1);
    - a CRL distribution point (§4.2.1.13): unlike the 10-minute certificates, the TSA
      certificate is long-lived and stays revocation-checked, so ``crl_url`` must point at a
      CRL that the issuing CA publishes (``build_crl`` with the issuing key);
    - privateKeyUsagePeriod ``[now, now + key_usage]``, non-critical (X.509 §9.2.2.5, the
      extension RFC 5280 dropped from its profile but still defines the OID for): the TSA key
      signs only in that period, which ends well before the certificate does, so time-stamps
      made with it stay verifiable for the rest of its validity (EN 319 421 §7.7.4 key
      life-cycle, EN 319 422 §7: the TSU key's usage period is shorter than the certificate's).

    Validity is ``[now, now + lifetime]`` and must lie inside the issuing CA's validity.
    Raises :class:`PolicyError` for unusable settings, keys or issuer.
    """
    start = utc_seconds(now)
    check_service_inputs(issuing_key, issuing, tsa_public_key, start, lifetime, "tsa_public_key")
    if not isinstance(key_usage, timedelta) or not timedelta(0) < key_usage < lifetime:
        raise PolicyError("key_usage: must be positive and shorter than lifetime")
    subject = names.service_name(common_name)
    try:
        _validate.url("ca_issuers_url", ca_issuers_url)
        _validate.url("crl_url", crl_url)
    except ProfileError as exc:
        raise PolicyError(str(exc)) from exc
    builder = service_certificate(
        subject,
        issuing,
        tsa_public_key,
        start,
        lifetime,
        ExtendedKeyUsageOID.TIME_STAMPING,
        purpose_critical=True,
    )
    usage = x509.PrivateKeyUsagePeriod(not_before=start, not_after=utc_seconds(start + key_usage))
    return (
        _with_locations(builder, ca_issuers_url, crl_url)
        .add_extension(usage, critical=False)
        .sign(issuing_key, hash_for(issuing.public_key()))
    )


def key_usage_period(cert: x509.Certificate) -> tuple[datetime, datetime]:
    """When the TSA key may sign: the certificate's privateKeyUsagePeriod (X.509 §9.2.2.5),
    each bound absent there taken from the validity; the validity when there is none."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    try:
        period = cert.extensions.get_extension_for_class(x509.PrivateKeyUsagePeriod).value
    except x509.ExtensionNotFound:
        return start, end
    before = period.not_before.replace(tzinfo=UTC) if period.not_before else None
    after = period.not_after.replace(tzinfo=UTC) if period.not_after else None
    return max(start, before or start), min(end, after or end)


def _with_locations(
    builder: x509.CertificateBuilder, ca_issuers_url: str, crl_url: str
) -> x509.CertificateBuilder:
    """AIA caIssuers (RFC 5280 §4.2.2.1) and one CRL distribution point (§4.2.1.13)."""
    crl_dp = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(crl_url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    aia = x509.AccessDescription(
        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(ca_issuers_url)
    )
    return builder.add_extension(
        x509.AuthorityInformationAccess([aia]), critical=False
    ).add_extension(x509.CRLDistributionPoints([crl_dp]), critical=False)


@dataclass(frozen=True)
class TimeStampAuthority:
    """An RFC 3161 time-stamping unit: its certificate, policy and sources of time and serials.

    ``chain`` is the TSA certificate's issuer first, up to the root; it is checked to chain
    when built, and its non-root part goes into the tokens of :meth:`timestamp_digest`. ``clock``
    returns a timezone-aware datetime, taken as genTime at its own precision; ``accuracy`` is
    the bound on its deviation from UTC (RFC 3161 §2.4.2, EN 319 421 §7.7.2: at most one
    second for an EU qualified TSA). ``serial_source`` returns positive serials of at most
    20 octets, unique per token (RFC 3161 §2.4.2). ``hash_algorithms`` are the messageImprint
    algorithms accepted (asn1crypto names: sha256, sha384, sha512). With ``include_tsa_name``
    the TSTInfo carries the certificate's subject as ``tsa`` (RFC 3161 §2.4.2, optional).

    The signing key is passed to each call, so one configuration serves any number of
    threads, each with the key handle bound to its own HSM session.
    """

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    policy_oid: str
    clock: Callable[[], datetime]
    serial_source: Callable[[], int] = random_serial
    accuracy: timedelta = timedelta(seconds=1)
    hash_algorithms: frozenset[str] = frozenset(HASH_ALGORITHMS)
    include_tsa_name: bool = True
    _derived: _Derived = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_tsa_certificate(self.certificate)
        _check_chain(self.certificate, self.chain)
        try:
            x509.ObjectIdentifier(self.policy_oid)
        except (TypeError, ValueError) as exc:
            raise PolicyError("policy_oid: must be a dotted OID") from exc
        if not isinstance(self.accuracy, timedelta) or self.accuracy <= timedelta(0):
            raise PolicyError("accuracy: must be a positive timedelta")
        if not self.hash_algorithms or not self.hash_algorithms <= HASH_ALGORITHMS.keys():
            raise PolicyError(f"hash_algorithms: a non-empty subset of {sorted(HASH_ALGORITHMS)}")
        if not callable(self.clock) or not callable(self.serial_source):
            raise PolicyError("clock and serial_source: must be callables")
        object.__setattr__(self, "_derived", _Derived.of(self))

    def respond(self, request_der: bytes, signing_key: ec.EllipticCurvePrivateKey) -> bytes:
        """Answer a DER ``TimeStampReq`` with a DER ``TimeStampResp`` (RFC 3161 §2.4.1-2).

        Granted: a token over the request's messageImprint, the nonce echoed, and only the TSA
        certificate in ``certificates`` when ``certReq`` is true (STANDARDS.md §3). Rejected, with
        ``statusString`` and one ``failInfo`` bit: ``badDataFormat`` (not a TimeStampReq, wrong
        digest length), ``badRequest`` (version other than 1, oversized request or nonce),
        ``badAlg`` (hash not accepted), ``unacceptedPolicy`` (reqPolicy not ours),
        ``unacceptedExtension`` (any extension: none is supported), ``timeNotAvailable``
        (clock outside the TSA certificate's validity). A ``signing_key`` that does not belong
        to the certificate raises :class:`TsaError`: that is a configuration error, not the
        client's.
        """
        self._check_key(signing_key)
        try:
            request = self._parse(request_der)
        except _Rejected as rejected:
            return _rejection(rejected.failure, rejected.reason)
        gen_time = self._now()
        if not self._valid_at(gen_time):
            return _rejection("time_not_available", "TSA key usage period does not cover now")
        # TimeStampResp ::= SEQUENCE { status PKIStatusInfo { granted }, timeStampToken }
        return der.sequence(_STATUS_GRANTED, self._token(signing_key, request, gen_time))

    def timestamp_digest(
        self,
        digest: bytes,
        hash_algorithm: str,
        signing_key: ec.EllipticCurvePrivateKey,
        *,
        nonce: int | None = None,
    ) -> bytes:
        """A DER TimeStampToken (RFC 3161 §2.4.2, a CMS ContentInfo) over ``digest``.

        For the signer's own signature-time-stamps (EN 319 122-1 §5.3), made in the same HSM
        hop as the signature with no request to parse. ``certificates`` holds the TSA
        certificate and its issuing CA (DER-sorted), so the embedded token validates on its own
        with only the root as trust anchor (pyHanko does not look for the TSA's issuer among
        the outer signature's certificates). Raises :class:`TsaError` for an algorithm this
        TSA does not accept, a digest of the wrong length, a wrong key or an unusable clock.
        """
        self._check_key(signing_key)
        if hash_algorithm not in self.hash_algorithms:
            raise TsaError(f"hash_algorithm: {hash_algorithm!r} is not accepted by this TSA")
        if not isinstance(digest, bytes) or len(digest) != HASH_ALGORITHMS[hash_algorithm][1]:
            raise TsaError(f"digest: must be {HASH_ALGORITHMS[hash_algorithm][1]} bytes")
        if nonce is not None and not _nonce_ok(nonce):
            raise TsaError(f"nonce: must be an integer of at most {_MAX_NONCE_BITS} bits")
        gen_time = self._now()
        if not self._valid_at(gen_time):
            raise TsaError("clock: TSA certificate or key usage period not valid at this time")
        request = _Request(hash_algorithm, digest, nonce, self._derived.certificates_and_chain)
        return self._token(signing_key, request, gen_time)

    # -- internals ---------------------------------------------------------------------------

    def _check_key(self, signing_key: ec.EllipticCurvePrivateKey) -> None:
        if signing_key.public_key() != self._derived.public_key:
            raise TsaError("signing_key: does not match the TSA certificate")

    def _now(self) -> datetime:
        """genTime: the injected clock in UTC, at the clock's own precision."""
        now = self.clock()
        if not isinstance(now, datetime) or now.utcoffset() is None:
            raise TsaError("clock: must return a timezone-aware datetime")
        return now.astimezone(UTC)

    def _valid_at(self, when: datetime) -> bool:
        """Inside the key's usage period, which lies inside the certificate's validity."""
        start, end = self._derived.usage
        return start <= when <= end

    def _parse(self, request_der: bytes) -> _Request:
        """Parse and check a TimeStampReq (RFC 3161 §2.4.1); raise :class:`_Rejected`."""
        if not isinstance(request_der, bytes | bytearray | memoryview):
            raise _Rejected("bad_data_format", "request must be bytes")
        if len(request_der) > _MAX_REQUEST_OCTETS:
            raise _Rejected("bad_request", "request is too large")
        try:
            req = tsp.TimeStampReq.load(bytes(request_der), strict=True)
            req.native  # noqa: B018 - forces the lazy parser over every field
            imprint = req["message_imprint"]
            hash_oid = imprint["hash_algorithm"]["algorithm"].dotted
            hash_params = imprint["hash_algorithm"]["parameters"].dump()
            digest = bytes(imprint["hashed_message"].native)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise _Rejected("bad_data_format", "not a DER TimeStampReq") from exc
        if req["version"].native != "v1":
            raise _Rejected("bad_request", "only version 1 requests are supported")
        name = _HASH_BY_OID.get(hash_oid)
        if name is None or name not in self.hash_algorithms or hash_params not in (b"", _DER_NULL):
            raise _Rejected("bad_alg", "hash algorithm not accepted")
        if len(digest) != HASH_ALGORITHMS[name][1]:
            raise _Rejected("bad_data_format", "digest length does not match the algorithm")
        policy = req["req_policy"]
        if policy.native is not None and policy.dotted != self.policy_oid:
            raise _Rejected("unaccepted_policy", "requested policy is not supported")
        if req["extensions"].native is not None:
            raise _Rejected("unaccepted_extensions", "extensions are not supported")
        nonce = req["nonce"].native
        if nonce is not None and not _nonce_ok(nonce):
            raise _Rejected("bad_request", "nonce is too long")
        certificates = self._derived.certificates if req["cert_req"].native else None
        return _Request(name, digest, nonce, certificates)

    def _token(
        self, signing_key: ec.EllipticCurvePrivateKey, request: _Request, gen_time: datetime
    ) -> bytes:
        """The DER TimeStampToken: CMS SignedData over TSTInfo (RFC 3161 §2.4.2, RFC 5652 §5).

        Signed attributes content-type id-ct-TSTInfo, message-digest, and signing-certificate-v2
        with an ESSCertIDv2 of the TSA certificate (RFC 5816 §2.2.1); one SignerInfo identified
        by issuer and serial. Assembled with :mod:`ca.der` from parts made once
        (:class:`_Derived`) and small values encoded by asn1crypto.
        """
        parts = self._derived
        # TSTInfo ::= SEQUENCE { version, policy, messageImprint, serialNumber, genTime,
        #   accuracy, [ordering DEFAULT FALSE: omitted], nonce, tsa [0] EXPLICIT, [extensions] }
        tst_info = der.sequence(
            _INTEGER_1,
            parts.policy,
            der.sequence(
                parts.imprint_algorithms[request.hash_algorithm],
                core.OctetString(request.digest).dump(),
            ),
            core.Integer(check_serial(self.serial_source())).dump(),
            core.GeneralizedTime(gen_time).dump(),
            parts.accuracy,
            b"" if request.nonce is None else core.Integer(request.nonce).dump(),
            parts.tsa_name,
        )
        digest = hashes.Hash(parts.signature_hash)
        digest.update(tst_info)
        signed_attrs = der.set_of(
            parts.content_type_attribute,
            _attribute(_OID_MESSAGE_DIGEST, core.OctetString(digest.finalize()).dump()),
            parts.signing_certificate_attribute,
        )
        signature = signing_key.sign(signed_attrs, ec.ECDSA(parts.signature_hash))
        signer_info = der.sequence(
            _INTEGER_1,  # v1: sid is issuerAndSerialNumber (RFC 5652 §5.3)
            parts.sid,
            parts.digest_algorithm,
            der.implicit(0, signed_attrs),
            parts.signature_algorithm,
            core.OctetString(signature).dump(),
        )
        signed_data = der.sequence(
            _INTEGER_3,  # v3: eContentType is not id-data (RFC 5652 §5.1)
            der.set_of(parts.digest_algorithm),
            der.sequence(_OID_TST_INFO, der.explicit(0, core.OctetString(tst_info).dump())),
            b"" if request.certificates is None else der.implicit(0, request.certificates),
            der.set_of(signer_info),
        )
        return der.sequence(_OID_SIGNED_DATA, der.explicit(0, signed_data))


def _attribute(oid: bytes, *values: bytes) -> bytes:
    """Attribute ::= SEQUENCE { attrType OID, attrValues SET OF value } (RFC 5652 §5.3)."""
    return der.sequence(oid, der.set_of(*values))


@dataclass(frozen=True)
class _Derived:
    """DER parts that do not change between tokens, made once per configuration."""

    public_key: ec.EllipticCurvePublicKey
    signature_hash: hashes.SHA256 | hashes.SHA384 | hashes.SHA512
    policy: bytes
    imprint_algorithms: dict[str, bytes]
    accuracy: bytes
    tsa_name: bytes
    content_type_attribute: bytes
    signing_certificate_attribute: bytes
    sid: bytes
    digest_algorithm: bytes
    signature_algorithm: bytes
    certificates: bytes
    certificates_and_chain: bytes
    usage: tuple[datetime, datetime]

    @classmethod
    def of(cls, tsa: TimeStampAuthority) -> _Derived:
        cert_der = tsa.certificate.public_bytes(Encoding.DER)
        cert = asn1_x509.Certificate.load(cert_der)
        cert_hash = hashes.Hash(hashes.SHA256())
        cert_hash.update(cert_der)
        # ESSCertIDv2: hashAlgorithm DEFAULT id-sha256 is omitted in DER (RFC 5816 §2.2.1,
        # RFC 5035 §4); issuerSerial present (EN 319 122-1 §5.2.2.3).
        ess_cert_id = {
            "hash_algorithm": {"algorithm": "sha256"},
            "cert_hash": cert_hash.finalize(),
            "issuer_serial": {
                "issuer": [asn1_x509.GeneralName(name="directory_name", value=cert.issuer)],
                "serial_number": cert.serial_number,
            },
        }
        signature_hash = hash_for(_ec_public_key(tsa.certificate))
        tsa_name = asn1_x509.GeneralName(name="directory_name", value=cert.subject).dump()
        return cls(
            public_key=_ec_public_key(tsa.certificate),
            signature_hash=signature_hash,
            policy=core.ObjectIdentifier(tsa.policy_oid).dump(),
            imprint_algorithms={
                name: algos.DigestAlgorithm({"algorithm": name}).dump()
                for name in tsa.hash_algorithms
            },
            accuracy=_accuracy(tsa.accuracy).dump(),
            tsa_name=der.explicit(0, tsa_name) if tsa.include_tsa_name else b"",
            content_type_attribute=_attribute(_OID_CONTENT_TYPE, _OID_TST_INFO),
            signing_certificate_attribute=_attribute(
                _OID_SIGNING_CERTIFICATE_V2,
                tsp.SigningCertificateV2({"certs": [ess_cert_id]}).dump(),
            ),
            sid=cms.IssuerAndSerialNumber(
                {"issuer": cert.issuer, "serial_number": cert.serial_number}
            ).dump(),
            digest_algorithm=algos.DigestAlgorithm({"algorithm": signature_hash.name}).dump(),
            signature_algorithm=algos.SignedDigestAlgorithm(
                {"algorithm": _ECDSA[signature_hash.name]}
            ).dump(),
            certificates=_certificate_set((tsa.certificate,)),
            usage=key_usage_period(tsa.certificate),
            certificates_and_chain=_certificate_set(
                (tsa.certificate, *(c for c in tsa.chain if c.subject != c.issuer))
            ),
        )


def _certificate_set(certificates: tuple[x509.Certificate, ...]) -> bytes:
    """DER CertificateSet, a SET OF and so sorted (rfc3161-client rejects unsorted sets,
    STANDARDS.md §3)."""
    return der.set_of(*(cert.public_bytes(Encoding.DER) for cert in certificates))


def _ec_public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PolicyError("certificate: TSA key must be an EC key")
    return key


def _check_tsa_certificate(cert: x509.Certificate) -> None:
    """RFC 3161 §2.3: EKU timeStamping only, critical; keyUsage must allow digitalSignature."""
    if not isinstance(cert, x509.Certificate):
        raise PolicyError("certificate: must be an x509.Certificate")
    hash_for(_ec_public_key(cert))
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise PolicyError("certificate: needs keyUsage and extendedKeyUsage") from exc
    if not eku.critical or list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise PolicyError("certificate: extendedKeyUsage must be timeStamping only, critical")
    if not usage.digital_signature:
        raise PolicyError("certificate: keyUsage must include digitalSignature")


def _check_chain(cert: x509.Certificate, chain: tuple[x509.Certificate, ...]) -> None:
    if not isinstance(chain, tuple) or not chain:
        raise PolicyError("chain: must be a non-empty tuple, the TSA's issuer first")
    for child, parent in zip((cert, *chain), chain, strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise PolicyError("chain: each certificate must be issued by the next") from exc


def _accuracy(accuracy: timedelta) -> tsp.Accuracy:
    """Accuracy ::= SEQUENCE { seconds, millis [0] 1..999, micros [1] 1..999 }, zero parts
    omitted (RFC 3161 §2.4.2)."""
    seconds, micros = divmod(accuracy // timedelta(microseconds=1), 1_000_000)
    millis, micros = divmod(micros, 1000)
    parts = {"seconds": seconds, "millis": millis, "micros": micros}
    return tsp.Accuracy({name: value for name, value in parts.items() if value})


def _nonce_ok(nonce: object) -> bool:
    return (
        isinstance(nonce, int)
        and not isinstance(nonce, bool)
        and nonce.bit_length() <= _MAX_NONCE_BITS
    )


def _rejection(failure: str, reason: str) -> bytes:
    """TimeStampResp with status rejection, a statusString and one failInfo bit."""
    status = tsp.PKIStatusInfo(
        {
            "status": "rejection",
            "status_string": [reason],
            "fail_info": tsp.PKIFailureInfo({failure}),
        }
    )
    return bytes(TimeStampResp({"status": status}).dump())
