"""Validated CA settings: names, issuance policy and the certificate chain.

Frozen values whose invariants are checked in ``__post_init__`` (DESIGN.md rule 3); a bad
setting raises :class:`~ca.errors.PolicyError` naming it, so the service refuses to start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from ca import _validate
from ca.errors import PolicyError, ProfileError
from ca.profiles import LegalPerson

__all__ = ["MAX_VALIDITY", "CaNames", "Chain", "IssuancePolicy"]

#: Longest end-entity validity (DESIGN.md; short-term per EN 319 411-1 REV-6.3.9-15).
MAX_VALIDITY = timedelta(minutes=10)


@dataclass(frozen=True)
class CaNames:
    """Names of the root and issuing CA: C, O, organizationIdentifier, CN.

    The issuer DN of an EU qualified certificate carries C, O and organizationIdentifier
    (EN 319 412-2 §4.2.3.1, EN 319 412-3 §4.2.1), so each CA name is validated like a
    legal-person subject.
    """

    country: str
    organization: str
    organization_identifier: str
    root_common_name: str
    issuing_common_name: str

    def __post_init__(self) -> None:
        try:
            self.root_name()
            self.issuing_name()
        except ProfileError as exc:
            raise PolicyError(f"CaNames.{exc}") from exc
        if self.root_common_name == self.issuing_common_name:
            raise PolicyError("CaNames.issuing_common_name: must differ from root_common_name")

    def root_name(self) -> x509.Name:
        return self._name(self.root_common_name)

    def issuing_name(self) -> x509.Name:
        return self._name(self.issuing_common_name)

    def service_name(self, common_name: str) -> x509.Name:
        """The subject of a service certificate (TSA, OCSP responder): the legal person operating
        it, named like the CA with its own ``common_name`` (EN 319 412-3 §4.2.1); raises
        :class:`PolicyError`."""
        try:
            return self._name(common_name)
        except ProfileError as exc:
            raise PolicyError(str(exc)) from exc

    def _name(self, common_name: str) -> x509.Name:
        return LegalPerson(
            self.country, self.organization, self.organization_identifier, common_name
        ).x509_name()


@dataclass(frozen=True)
class IssuancePolicy:
    """Settings of end-entity issuance.

    ``notBefore = now - backdate`` and ``notAfter = notBefore + validity``: the clock-skew
    backdate counts inside the validity (STANDARDS.md §1), which is at most 10 minutes.
    Both durations are whole seconds, because certificate times carry no fractions.
    """

    service_policy_oid: str
    ca_issuers_url: str
    pds_url: str
    crl_url: str
    validity: timedelta = MAX_VALIDITY
    backdate: timedelta = timedelta(seconds=30)
    pds_language: str = "en"

    def __post_init__(self) -> None:
        try:
            x509.ObjectIdentifier(self.service_policy_oid)
        except (TypeError, ValueError) as exc:
            raise PolicyError("service_policy_oid: must be a dotted OID") from exc
        try:
            _validate.url("ca_issuers_url", self.ca_issuers_url)
            _validate.url("crl_url", self.crl_url)
            _validate.url("pds_url", self.pds_url, https_only=True)  # EN 319 412-5 §4.3.4
        except ProfileError as exc:
            raise PolicyError(str(exc)) from exc
        lang = self.pds_language
        if not (isinstance(lang, str) and len(lang) == 2 and lang.isascii() and lang.isalpha()):
            raise PolicyError("pds_language: must be an ISO 639-1 two-letter code")
        for name in ("validity", "backdate"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value % timedelta(seconds=1):
                raise PolicyError(f"{name}: must be a timedelta of whole seconds")
        if self.validity > MAX_VALIDITY:
            raise PolicyError(f"validity: must not exceed {MAX_VALIDITY}")
        if self.backdate < timedelta(0):
            raise PolicyError("backdate: must not be negative")
        if self.validity <= self.backdate:
            raise PolicyError("validity: must be longer than backdate")

    @property
    def service_policy(self) -> x509.ObjectIdentifier:
        return x509.ObjectIdentifier(self.service_policy_oid)


@dataclass(frozen=True)
class Chain:
    """The issuing CA certificate and the root above it, checked to chain when built."""

    issuing: x509.Certificate
    root: x509.Certificate

    def __post_init__(self) -> None:
        try:
            self.issuing.verify_directly_issued_by(self.root)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise PolicyError("Chain.issuing: is not issued by Chain.root") from exc

    def pem(self) -> str:
        """PEM of the issuing certificate followed by the root certificate."""
        return "".join(
            cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
            for cert in (self.issuing, self.root)
        )
