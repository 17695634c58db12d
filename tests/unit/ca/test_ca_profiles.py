"""Subject validation: bad subjects raise ProfileError naming the offending field."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.x509.oid import NameOID

from ca.errors import CaError, ProfileError
from ca.profiles import LegalPerson, Level, NaturalPerson, subject_from_attributes

NATURAL: dict[str, Any] = {
    "country": "DE",
    "common_name": "Erika Mustermann",
    "given_name": "Erika",
    "surname": "Mustermann",
}
LEGAL: dict[str, Any] = {
    "country": "DE",
    "organization": "Example Payroll GmbH",
    "organization_identifier": "NTRDE-HRB12345",
    "common_name": "Example Payroll Batch Seal",
}


def test_level_values_are_the_wire_strings() -> None:
    assert [str(level) for level in Level] == ["qes", "qualified", "advanced"]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"given_name": None},
        {"surname": None},
        {"given_name": None, "surname": None, "pseudonym": "Erika77"},
        {"serial_number": "PNODE-1234567890"},
        {"serial_number": "IDCBE-590330101"},
        {"serial_number": "PASFR-12AB34567"},
        {"serial_number": "TINIT-RSSMRA80A01H501U"},
        {"email": "erika.mustermann@example.com"},
        {"common_name": "Éva Ŝtraße-Łukasz"},
    ],
)
def test_valid_natural_person(changes: dict[str, Any]) -> None:
    NaturalPerson(**{**NATURAL, **changes})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"country": "de"}, "country"),
        ({"country": "DEU"}, "country"),
        ({"country": ""}, "country"),
        ({"common_name": ""}, "common_name"),
        ({"common_name": " Erika"}, "common_name"),
        ({"common_name": "x" * 65}, "common_name"),
        ({"common_name": "Erika\x00Mustermann"}, "common_name"),
        ({"common_name": "Erika\u202eMustermann"}, "common_name"),
        ({"common_name": 42}, "common_name"),
        ({"given_name": ""}, "given_name"),
        ({"surname": "Muster\nmann"}, "surname"),
        ({"pseudonym": "Erika77"}, "pseudonym"),
        ({"given_name": None, "surname": None}, "given_name"),
        ({"serial_number": "1234567890"}, "serial_number"),
        ({"serial_number": "PNOde-1234"}, "serial_number"),
        ({"serial_number": "XYZDE-1234"}, "serial_number"),
        ({"serial_number": "PNODE-"}, "serial_number"),
        ({"serial_number": "PNODE-12_34"}, "serial_number"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "erika@localhost"}, "email"),
        ({"email": "érika@example.com"}, "email"),
    ],
)
def test_invalid_natural_person_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ProfileError) as info:
        NaturalPerson(**{**NATURAL, **changes})
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")
    assert isinstance(info.value, CaError)


@pytest.mark.parametrize(
    "identifier",
    ["NTRDE-HRB12345", "VATDE-123456789", "PSDBE-NBB-0314.595.348", "LEIXG-5299000J2N45DDNE4Y28"],
)
def test_valid_legal_person(identifier: str) -> None:
    LegalPerson(**{**LEGAL, "organization_identifier": identifier})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"country": "EU1"}, "country"),
        ({"organization": ""}, "organization"),
        ({"organization": "x" * 65}, "organization"),
        ({"organization_identifier": "HRB12345"}, "organization_identifier"),
        ({"organization_identifier": "NTRDE HRB12345"}, "organization_identifier"),
        ({"organization_identifier": "ABCDE-123"}, "organization_identifier"),
        ({"organization_identifier": "NTRDE-"}, "organization_identifier"),
        ({"common_name": ""}, "common_name"),
    ],
)
def test_invalid_legal_person_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ProfileError) as info:
        LegalPerson(**{**LEGAL, **changes})
    assert info.value.field == field


def test_subjects_are_frozen() -> None:
    person = NaturalPerson(**NATURAL)
    with pytest.raises(AttributeError):
        person.country = "FR"  # type: ignore[misc]


def test_subject_from_attributes_builds_both_kinds() -> None:
    natural = subject_from_attributes("natural", {**NATURAL, "serial_number": "PNODE-1"})
    assert natural == NaturalPerson(**NATURAL, serial_number="PNODE-1")
    assert subject_from_attributes("legal", LEGAL) == LegalPerson(**LEGAL)


@pytest.mark.parametrize(
    ("kind", "attributes", "field"),
    [
        ("natural", {**NATURAL, "nickname": "Eri"}, "nickname"),
        ("natural", {**NATURAL, "organization": "Example GmbH"}, "organization"),
        ("natural", {k: v for k, v in NATURAL.items() if k != "country"}, "country"),
        ("natural", {**NATURAL, "surname": 7}, "surname"),
        ("natural", {**NATURAL, "country": "xx"}, "country"),
        ("legal", {**LEGAL, "given_name": "Erika"}, "given_name"),
        ("legal", {k: v for k, v in LEGAL.items() if k != "organization"}, "organization"),
        ("robot", NATURAL, "kind"),
    ],
)
def test_subject_from_attributes_names_the_field(
    kind: Any, attributes: dict[str, Any], field: str
) -> None:
    with pytest.raises(ProfileError) as info:
        subject_from_attributes(kind, attributes)
    assert info.value.field == field


def test_natural_person_dn_order_and_email_not_in_dn() -> None:
    person = NaturalPerson(**NATURAL, serial_number="PNODE-1", email="erika@example.com")
    oids = [attribute.oid for attribute in person.x509_name()]
    assert oids == [
        NameOID.COUNTRY_NAME,
        NameOID.GIVEN_NAME,
        NameOID.SURNAME,
        NameOID.SERIAL_NUMBER,
        NameOID.COMMON_NAME,
    ]


def test_legal_person_dn() -> None:
    name = LegalPerson(**LEGAL).x509_name()
    assert name.rfc4514_string() == (
        "CN=Example Payroll Batch Seal,2.5.4.97=NTRDE-HRB12345,O=Example Payroll GmbH,C=DE"
    )


def test_profile_error_accepts_a_preformatted_message() -> None:
    error = ProfileError("surname: must be a non-empty string")
    assert (error.field, error.reason) == ("surname", "must be a non-empty string")
    assert str(error) == "surname: must be a non-empty string"
