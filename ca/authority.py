"""The issuing CA: short-term end-entity certificates, plus the CA building blocks.

Pure: the clock and the serial source are injected, nothing here touches the network, files
or a database. Private keys are only asked for ``sign()`` and ``public_key()``, so an
HSM-backed :class:`~cryptography.hazmat.primitives.asymmetric.ec.EllipticCurvePrivateKey`
subclass works exactly like an in-memory key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ca._certs import check_serial, hash_for, random_serial, utc_seconds
from ca.cacerts import build_crl, build_issuing_certificate, build_root_certificate
from ca.errors import CaError, PolicyError, ProfileError
from ca.extensions import LeafContext, leaf_extensions
from ca.profiles import LegalPerson, Level, NaturalPerson, Subject
from ca.settings import MAX_VALIDITY, CaNames, Chain, IssuancePolicy

__all__ = [
    "MAX_VALIDITY",
    "CaNames",
    "Chain",
    "IssuancePolicy",
    "IssuingCA",
    "build_crl",
    "build_issuing_certificate",
    "build_root_certificate",
    "random_serial",
]

# Curves accepted for subject keys: NIST P-256/384/521 (ETSI TS 119 312).
_SUBJECT_CURVES = frozenset({ec.SECP256R1.name, ec.SECP384R1.name, ec.SECP521R1.name})


class IssuingCA:
    """Issues short-term certificates under ``chain.issuing`` (STANDARDS.md §1).

    ``clock`` returns the current time as a timezone-aware datetime; ``serial_source``
    returns a positive serial of at most 20 octets with at least 64 bits from a CSPRNG
    (RFC 5280 §4.1.2.2; CA/B Forum BR §7.1). Both are injected so tests can pin them.
    """

    def __init__(
        self,
        chain: Chain,
        policy: IssuancePolicy,
        clock: Callable[[], datetime],
        serial_source: Callable[[], int] = random_serial,
    ) -> None:
        if not isinstance(chain, Chain):
            raise PolicyError("chain: must be a Chain")
        if not isinstance(policy, IssuancePolicy):
            raise PolicyError("policy: must be an IssuancePolicy")
        self.chain = chain
        self.policy = policy
        self._clock = clock
        self._serial_source = serial_source
        self._issuing_key = chain.issuing.public_key()
        self._hash = hash_for(self._issuing_key)
        self._context = LeafContext(
            issuer=chain.issuing,
            service_policy_oid=policy.service_policy,
            ca_issuers_url=policy.ca_issuers_url,
            pds_url=policy.pds_url,
            pds_language=policy.pds_language,
        )

    def issue(
        self,
        signing_key: ec.EllipticCurvePrivateKey,
        public_key: ec.EllipticCurvePublicKey,
        subject: Subject,
        level: Level,
    ) -> x509.Certificate:
        """Issue a certificate for ``public_key``, signed by the issuing CA's ``signing_key``.

        Validity is ``[now - backdate, now - backdate + validity]`` (at most 10 minutes, so
        the certificate is short-term and carries noRevAvail, RFC 9608 §3). Raises
        :class:`ProfileError` for an unusable subject, key or level, :class:`PolicyError`
        when the issuing CA is not valid for the whole leaf validity, and :class:`CaError`
        when ``signing_key`` does not belong to the issuing CA certificate.
        """
        level = _level(level)
        if not isinstance(subject, NaturalPerson | LegalPerson):
            raise ProfileError("subject", "must be a NaturalPerson or LegalPerson")
        self._check_subject_key(public_key)
        if signing_key.public_key() != self._issuing_key:
            raise CaError("signing_key: does not match the issuing CA certificate")
        now = utc_seconds(self._clock())
        not_before = now - self.policy.backdate
        not_after = not_before + self.policy.validity
        issuing = self.chain.issuing
        if not issuing.not_valid_before_utc <= now <= issuing.not_valid_after_utc:
            raise PolicyError("chain.issuing: is not valid now")
        if not_after > issuing.not_valid_after_utc:
            raise PolicyError("chain.issuing: expires before the certificate would")
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject.x509_name())
            .issuer_name(issuing.subject)
            .public_key(public_key)
            .serial_number(check_serial(self._serial_source()))
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        for extension, critical in leaf_extensions(public_key, subject, level, self._context):
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, self._hash)

    def _check_subject_key(self, public_key: object) -> None:
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ProfileError("public_key", "must be an EC public key")
        if public_key.curve.name not in _SUBJECT_CURVES:
            raise ProfileError("public_key", f"curve {public_key.curve.name} is not allowed")
        if public_key == self._issuing_key:
            raise ProfileError("public_key", "must not be the issuing CA's key")


def _level(level: object) -> Level:
    try:
        return Level(str(level))
    except ValueError:
        raise ProfileError("level", f"must be one of {', '.join(Level)}") from None
