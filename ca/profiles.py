"""Certificate subjects: natural persons (EN 319 412-2) and legal persons (EN 319 412-3).

The dataclasses are the only way into issuance, and they refuse values that cannot form a
valid subject, so the certificate builder never has to second-guess its input.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.x509.oid import NameOID

from ca import _validate
from ca.errors import ProfileError

__all__ = [
    "LegalPerson",
    "Level",
    "NaturalPerson",
    "Subject",
    "subject_from_attributes",
]

# EN 319 412-1 §5.1.3: natural-person semantics identifier "PNOxx-...", "IDCxx-", "PASxx-",
# "TINxx-" (xx = ISO 3166 country code).
_NATURAL_SEMANTICS_ID = re.compile(r"(?:PNO|IDC|PAS|TIN)[A-Z]{2}-[A-Za-z0-9 '()+,\-./:=?]+")
# EN 319 412-1 §5.1.4: legal-person semantics identifier "VATxx-...", "NTRxx-", "PSDxx-",
# "LEIXG-".
_LEGAL_SEMANTICS_ID = re.compile(r"(?:VAT|NTR|PSD|LEI)[A-Z]{2}-\S.*")


class Level(enum.StrEnum):
    """Assurance level of the issued certificate.

    ``QES``: EU qualified certificate, key in a QSCD (QCP-n-qscd / QCP-l-qscd).
    ``QUALIFIED``: EU qualified certificate, no QSCD claim (QCP-n / QCP-l).
    ``ADVANCED``: non-qualified certificate for an HSM key (NCP+), EN 319 411-1 §5.3.
    """

    QES = "qes"
    QUALIFIED = "qualified"
    ADVANCED = "advanced"


@dataclass(frozen=True)
class NaturalPerson:
    """Subject of a natural-person signing certificate, EN 319 412-2 §4.2.4.

    Exactly one of the two naming forms is used: ``given_name`` and/or ``surname``, or
    ``pseudonym`` (NAT-4.2.4-1, -3). ``serial_number``, when present, is an EN 319 412-1
    §5.1.3 semantics identifier (``PNODE-...``, ``IDCxx-``, ``PASxx-``, ``TINxx-``).
    ``email`` goes to subjectAltName rfc822Name (RFC 5280 §4.2.1.6), not to the subject DN.
    """

    country: str
    common_name: str
    given_name: str | None = None
    surname: str | None = None
    pseudonym: str | None = None
    serial_number: str | None = None
    email: str | None = None

    def __post_init__(self) -> None:
        _validate.country("country", self.country)
        _validate.text("common_name", self.common_name, _validate.UB_COMMON_NAME)
        for name in ("given_name", "surname"):
            value = getattr(self, name)
            if value is not None:
                _validate.text(name, value, _validate.UB_NAME)
        if self.pseudonym is not None:
            _validate.text("pseudonym", self.pseudonym, _validate.UB_PSEUDONYM)
            if self.given_name is not None or self.surname is not None:
                raise ProfileError("pseudonym", "must not be combined with given_name or surname")
        elif self.given_name is None and self.surname is None:
            raise ProfileError(
                "given_name", "given_name and/or surname, or a pseudonym, is required"
            )
        if self.serial_number is not None:
            _validate.printable("serial_number", self.serial_number, _validate.UB_SERIAL_NUMBER)
            _validate.pattern(
                "serial_number",
                self.serial_number,
                _NATURAL_SEMANTICS_ID,
                "a semantics identifier such as PNODE-1234 (EN 319 412-1 §5.1.3)",
            )
        if self.email is not None:
            _validate.email("email", self.email)

    def x509_name(self) -> x509.Name:
        """The subject DN: C, givenName, surname or pseudonym, serialNumber, CN."""
        attributes = [
            (NameOID.COUNTRY_NAME, self.country),
            (NameOID.GIVEN_NAME, self.given_name),
            (NameOID.SURNAME, self.surname),
            (NameOID.PSEUDONYM, self.pseudonym),
            (NameOID.SERIAL_NUMBER, self.serial_number),
            (NameOID.COMMON_NAME, self.common_name),
        ]
        return x509.Name(
            [x509.NameAttribute(oid, value) for oid, value in attributes if value is not None]
        )


@dataclass(frozen=True)
class LegalPerson:
    """Subject of a legal-person seal certificate, EN 319 412-3 §4.2.1.

    ``organization_identifier`` is an EN 319 412-1 §5.1.4 semantics identifier
    (``NTRDE-HRB1234``, ``VATDE-123456789``, ``PSDxx-``, ``LEIXG-``).
    """

    country: str
    organization: str
    organization_identifier: str
    common_name: str

    def __post_init__(self) -> None:
        _validate.country("country", self.country)
        _validate.text("organization", self.organization, _validate.UB_ORGANIZATION)
        _validate.text(
            "organization_identifier", self.organization_identifier, _validate.UB_ORGANIZATION
        )
        _validate.pattern(
            "organization_identifier",
            self.organization_identifier,
            _LEGAL_SEMANTICS_ID,
            "a semantics identifier such as NTRDE-HRB1234 (EN 319 412-1 §5.1.4)",
        )
        _validate.text("common_name", self.common_name, _validate.UB_COMMON_NAME)

    def x509_name(self) -> x509.Name:
        """The subject DN: C, O, organizationIdentifier, CN (LEG-4.2.1-2, -3)."""
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, self.country),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
                x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, self.organization_identifier),
                x509.NameAttribute(NameOID.COMMON_NAME, self.common_name),
            ]
        )


Subject: TypeAlias = NaturalPerson | LegalPerson


def subject_from_attributes(
    kind: Literal["natural", "legal"], attributes: Mapping[str, str]
) -> Subject:
    """Build a subject from a mapping whose keys are the dataclass field names.

    Raises :class:`ProfileError` naming the field that is unknown, missing or invalid.
    """
    cls: type[NaturalPerson] | type[LegalPerson]
    if kind == "natural":
        cls = NaturalPerson
    elif kind == "legal":
        cls = LegalPerson
    else:
        raise ProfileError("kind", "must be 'natural' or 'legal'")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in attributes:
        if key not in fields:
            raise ProfileError(key, f"is not a {kind}-person attribute")
    for name, field in fields.items():
        if field.default is dataclasses.MISSING and name not in attributes:
            raise ProfileError(name, "is required")
    for key, value in attributes.items():
        if not isinstance(value, str):
            raise ProfileError(key, "must be a string")
    return cls(**attributes)
