"""Root and issuing CA certificates, the chain value, CA names and the root's CRL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from ca.authority import (
    CaNames,
    Chain,
    IssuancePolicy,
    build_crl,
    build_issuing_certificate,
    build_root_certificate,
)
from ca.errors import PolicyError

CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_root_certificate(
    root_cert: x509.Certificate, root_key: ec.EllipticCurvePrivateKey
) -> None:
    ext = root_cert.extensions
    assert root_cert.subject == root_cert.issuer
    assert [a.oid for a in root_cert.subject] == [
        NameOID.COUNTRY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATION_IDENTIFIER,
        NameOID.COMMON_NAME,
    ]
    constraints = ext.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    key_usage = ext.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical and key_usage.value == CA_KEY_USAGE
    assert (
        _ski(root_cert) == x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()).digest
    )
    assert root_cert.serial_number > 2**64
    root_cert.verify_directly_issued_by(root_cert)


def test_issuing_certificate(chain: Chain, policy: IssuancePolicy) -> None:
    issuing = chain.issuing
    ext = issuing.extensions
    assert issuing.issuer == chain.root.subject
    assert issuing.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "Example Short-Term Issuing CA"
    )
    constraints = ext.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=0)
    key_usage = ext.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical and key_usage.value == CA_KEY_USAGE
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ski(chain.root)
    assert _ski(issuing) == x509.SubjectKeyIdentifier.from_public_key(issuing.public_key()).digest
    crl_dp = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [[n.value for n in dp.full_name or []] for dp in crl_dp] == [[policy.crl_url]]
    with pytest.raises(x509.ExtensionNotFound):
        ext.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS)
    issuing.verify_directly_issued_by(chain.root)


def test_chain_pem_is_issuing_then_root(chain: Chain) -> None:
    assert x509.load_pem_x509_certificates(chain.pem().encode()) == [chain.issuing, chain.root]


def test_chain_refuses_unrelated_certificates(chain: Chain) -> None:
    with pytest.raises(PolicyError, match="Chain"):
        Chain(issuing=chain.root, root=chain.issuing)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"country": "Germany"}, "country"),
        ({"organization_identifier": "HRB12345"}, "organization_identifier"),
        ({"root_common_name": ""}, "common_name"),
        ({"issuing_common_name": "Example Signing Root CA"}, "issuing_common_name"),
    ],
)
def test_bad_ca_names_are_refused(ca_names: CaNames, changes: dict[str, Any], field: str) -> None:
    values = {**ca_names.__dict__, **changes}
    with pytest.raises(PolicyError, match=field):
        CaNames(**values)


def test_issuing_certificate_refusals(
    root_key: ec.EllipticCurvePrivateKey,
    root_cert: x509.Certificate,
    issuing_key: ec.EllipticCurvePrivateKey,
    ca_names: CaNames,
    policy: IssuancePolicy,
    clock: Callable[[], datetime],
) -> None:
    now = clock()

    def build(**overrides: Any) -> x509.Certificate:
        args: dict[str, Any] = {
            "root_key": root_key,
            "root": root_cert,
            "issuing_public_key": issuing_key.public_key(),
            "names": ca_names,
            "policy": policy,
            "now": now,
            "lifetime": timedelta(days=365),
        }
        return build_issuing_certificate(**{**args, **overrides})

    build()
    with pytest.raises(PolicyError, match="key"):
        build(root_key=issuing_key)
    with pytest.raises(PolicyError, match="outlive"):
        build(lifetime=timedelta(days=36500))
    with pytest.raises(PolicyError, match="lifetime"):
        build(lifetime=timedelta(0))
    with pytest.raises(PolicyError, match="not valid"):
        build(now=root_cert.not_valid_before_utc - timedelta(days=1))
    other = CaNames(**{**ca_names.__dict__, "root_common_name": "Another Root"})
    with pytest.raises(PolicyError, match="root_common_name"):
        build(names=other)
    with pytest.raises(PolicyError, match="curve"):
        build(issuing_public_key=ec.generate_private_key(ec.SECP256K1()).public_key())


def test_root_with_unsupported_curve_is_refused(
    ca_names: CaNames, clock: Callable[[], datetime]
) -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(PolicyError, match="curve"):
        build_root_certificate(key, ca_names, clock(), timedelta(days=1))


def test_crl(
    chain: Chain, root_key: ec.EllipticCurvePrivateKey, clock: Callable[[], datetime]
) -> None:
    now = clock()
    earlier = now - timedelta(days=2)
    crl = build_crl(root_key, chain.root, now, timedelta(days=7), revoked={77: earlier, 5: now})
    assert crl.issuer == chain.root.subject
    assert crl.last_update_utc == now
    assert crl.next_update_utc == now + timedelta(days=7)
    assert crl.is_signature_valid(chain.root.public_key())  # type: ignore[arg-type]
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ski(chain.root)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == int(now.timestamp())
    later = build_crl(root_key, chain.root, now + timedelta(hours=1), timedelta(days=7))
    assert later.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > number
    dates = {entry.serial_number: entry.revocation_date_utc for entry in crl}
    assert dates == {77: earlier, 5: now}
    assert len(build_crl(root_key, chain.root, now, timedelta(days=7), revoked=[9, 10])) == 2


def test_crl_refusals(
    chain: Chain,
    root_key: ec.EllipticCurvePrivateKey,
    issuing_key: ec.EllipticCurvePrivateKey,
    clock: Callable[[], datetime],
) -> None:
    with pytest.raises(PolicyError, match="key"):
        build_crl(issuing_key, chain.root, clock(), timedelta(days=7))
    with pytest.raises(PolicyError, match="lifetime"):
        build_crl(root_key, chain.root, clock(), timedelta(days=-1))
