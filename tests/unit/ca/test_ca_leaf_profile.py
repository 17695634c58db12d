"""Contents of the short-term end-entity profiles (STANDARDS.md §1).

Extension values are decoded with pyasn1 and the pkilint/pyasn1-alt-modules ASN.1
definitions, independently of the asn1crypto encoder under test.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID
from pkilint.etsi.asn1 import en_319_412_5
from pyasn1.codec.der.decoder import decode
from pyasn1_alt_modules import rfc3739

from ca.authority import IssuingCA
from ca.profiles import LegalPerson, Level, NaturalPerson

SERVICE_POLICY = "1.3.6.1.4.1.32473.1.1"
NULL = b"\x05\x00"


def _qc_statements(cert: x509.Certificate) -> dict[str, Any]:
    """Decode qcStatements into {statementId: decoded statementInfo or None}."""
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.3"))
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    statements, rest = decode(ext.value.value, asn1Spec=rfc3739.QCStatements())
    assert rest == b""
    specs: dict[str, Any] = {
        "0.4.0.1862.1.5": en_319_412_5.PdsLocations(),
        "0.4.0.1862.1.6": en_319_412_5.QcType(),
        "1.3.6.1.5.5.7.11.2": rfc3739.SemanticsInformation(),
    }
    result: dict[str, Any] = {}
    for statement in statements:
        oid = str(statement["statementId"])
        info = statement["statementInfo"]
        if not info.isValue:
            result[oid] = None
            continue
        value, rest = decode(info.asOctets(), asn1Spec=specs[oid])
        assert rest == b""
        result[oid] = value
    return result


def _issue(
    ca: IssuingCA, key: ec.EllipticCurvePrivateKey, subject: Any, level: Level
) -> x509.Certificate:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    return ca.issue(key, leaf_key.public_key(), subject, level)


# -- profile contents --------------------------------------------------------------------------

ETSI_POLICY = {
    ("natural", Level.QES): "0.4.0.194112.1.2",
    ("natural", Level.QUALIFIED): "0.4.0.194112.1.0",
    ("natural", Level.ADVANCED): "0.4.0.2042.1.2",
    ("legal", Level.QES): "0.4.0.194112.1.3",
    ("legal", Level.QUALIFIED): "0.4.0.194112.1.1",
    ("legal", Level.ADVANCED): "0.4.0.2042.1.2",
}


def _expected_statements(kind: str, level: Level) -> dict[str, Any]:
    """statementId -> expected info, per STANDARDS.md §1 and EN 319 412-5 §4-5."""
    expected: dict[str, Any] = {
        "1.3.6.1.5.5.7.11.2": "0.4.0.194121.1.1" if kind == "natural" else "0.4.0.194121.1.2"
    }
    if level is not Level.ADVANCED:
        expected["0.4.0.1862.1.1"] = None
        expected["0.4.0.1862.1.6"] = "0.4.0.1862.1.6.1" if kind == "natural" else "0.4.0.1862.1.6.2"
        expected["0.4.0.1862.1.5"] = ("https://pki.example.com/pds-en.pdf", "en")
    if level is Level.QES:
        expected["0.4.0.1862.1.4"] = None
    return expected


def _flatten(statements: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for oid, value in statements.items():
        if oid == "1.3.6.1.5.5.7.11.2":
            flat[oid] = str(value["semanticsIdentifier"])
        elif oid == "0.4.0.1862.1.6":
            flat[oid] = str(value[0])
        elif oid == "0.4.0.1862.1.5":
            assert len(value) == 1
            flat[oid] = (str(value[0]["url"]), str(value[0]["language"]))
        else:
            flat[oid] = value
    return flat


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("kind", ["natural", "legal"])
def test_leaf_profile(
    issuing_ca: IssuingCA,
    issuing_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
    legal_person: LegalPerson,
    kind: str,
    level: Level,
) -> None:
    subject = natural_person if kind == "natural" else legal_person
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    cert = issuing_ca.issue(issuing_key, leaf_key.public_key(), subject, level)
    ext = cert.extensions

    assert cert.subject == subject.x509_name()
    assert cert.issuer == issuing_ca.chain.issuing.subject
    assert cert.version is x509.Version.v3

    key_usage = ext.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value == x509.KeyUsage(
        digital_signature=False,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )

    policies = ext.get_extension_for_class(x509.CertificatePolicies)
    assert not policies.critical
    assert [p.policy_identifier.dotted_string for p in policies.value] == [
        ETSI_POLICY[(kind, level)],
        SERVICE_POLICY,
    ]

    issuing_ski = issuing_ca.chain.issuing.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    )
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == issuing_ski.value.digest
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key())

    aia = ext.get_extension_for_class(x509.AuthorityInformationAccess)
    assert not aia.critical
    assert [(d.access_method, d.access_location.value) for d in aia.value] == [
        (AuthorityInformationAccessOID.CA_ISSUERS, "http://pki.example.com/issuing.cer")
    ]

    # RFC 9608 §3: nothing that points at revocation information, and not a CA.
    for absent in (
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.FRESHEST_CRL,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.EXTENDED_KEY_USAGE,
    ):
        with pytest.raises(x509.ExtensionNotFound):
            ext.get_extension_for_oid(absent)

    for marker in ("0.4.0.194121.2.1", "2.5.29.56"):
        found = ext.get_extension_for_oid(x509.ObjectIdentifier(marker))
        assert not found.critical
        assert isinstance(found.value, x509.UnrecognizedExtension)
        assert found.value.value == NULL

    assert _flatten(_qc_statements(cert)) == _expected_statements(kind, level)

    if kind == "natural":
        san = ext.get_extension_for_class(x509.SubjectAlternativeName)
        assert not san.critical
        assert san.value.get_values_for_type(x509.RFC822Name) == ["erika.mustermann@example.com"]
    else:
        with pytest.raises(x509.ExtensionNotFound):
            ext.get_extension_for_class(x509.SubjectAlternativeName)


def test_natural_person_without_identifier_has_no_semantics_statement(
    issuing_ca: IssuingCA, issuing_key: ec.EllipticCurvePrivateKey
) -> None:
    person = NaturalPerson(country="FR", common_name="Jean Dupont", surname="Dupont")
    cert = _issue(issuing_ca, issuing_key, person, Level.QES)
    assert "1.3.6.1.5.5.7.11.2" not in _qc_statements(cert)
    advanced = _issue(issuing_ca, issuing_key, person, Level.ADVANCED)
    with pytest.raises(x509.ExtensionNotFound):
        advanced.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.3"))


def test_level_may_be_given_as_its_string(
    issuing_ca: IssuingCA, issuing_key: ec.EllipticCurvePrivateKey, legal_person: LegalPerson
) -> None:
    cert = _issue(issuing_ca, issuing_key, legal_person, "qes")  # type: ignore[arg-type]
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert policies[0].policy_identifier.dotted_string == "0.4.0.194112.1.3"
