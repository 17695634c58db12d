"""Fixtures for the micro-CA tests: in-memory keys, a fixed clock, a two-level chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ca.authority import (
    CaNames,
    Chain,
    IssuancePolicy,
    IssuingCA,
    build_issuing_certificate,
    build_root_certificate,
)
from ca.profiles import LegalPerson, NaturalPerson

# Documentation arc (RFC 5612) and example.com: pkilint decodes both (STANDARDS.md §1).
SERVICE_POLICY_OID = "1.3.6.1.4.1.32473.1.1"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class FixedClock:
    """A clock that returns ``now`` until moved; the CA must never read the real clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def ca_names() -> CaNames:
    return CaNames(
        country="DE",
        organization="Example Trust Services GmbH",
        organization_identifier="NTRDE-HRB12345",
        root_common_name="Example Signing Root CA",
        issuing_common_name="Example Short-Term Issuing CA",
    )


@pytest.fixture
def policy() -> IssuancePolicy:
    return IssuancePolicy(
        service_policy_oid=SERVICE_POLICY_OID,
        ca_issuers_url="http://pki.example.com/issuing.cer",
        pds_url="https://pki.example.com/pds-en.pdf",
        crl_url="http://pki.example.com/root.crl",
    )


@pytest.fixture(params=[ec.SECP256R1, ec.SECP384R1], ids=["p256", "p384"])
def ca_curve(request: pytest.FixtureRequest) -> type[ec.EllipticCurve]:
    curve: type[ec.EllipticCurve] = request.param
    return curve


@pytest.fixture
def root_key(ca_curve: type[ec.EllipticCurve]) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ca_curve())


@pytest.fixture
def issuing_key(ca_curve: type[ec.EllipticCurve]) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ca_curve())


@pytest.fixture
def root_cert(root_key: ec.EllipticCurvePrivateKey, ca_names: CaNames) -> x509.Certificate:
    return build_root_certificate(root_key, ca_names, NOW - timedelta(days=1), timedelta(days=3650))


@pytest.fixture
def chain(
    root_key: ec.EllipticCurvePrivateKey,
    root_cert: x509.Certificate,
    issuing_key: ec.EllipticCurvePrivateKey,
    ca_names: CaNames,
    policy: IssuancePolicy,
) -> Chain:
    issuing = build_issuing_certificate(
        root_key,
        root_cert,
        issuing_key.public_key(),
        ca_names,
        policy,
        NOW - timedelta(days=1),
        timedelta(days=365),
    )
    return Chain(issuing=issuing, root=root_cert)


@pytest.fixture
def issuing_ca(chain: Chain, policy: IssuancePolicy, clock: FixedClock) -> IssuingCA:
    return IssuingCA(chain, policy, clock)


@pytest.fixture
def leaf_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def natural_person() -> NaturalPerson:
    return NaturalPerson(
        country="DE",
        common_name="Erika Mustermann",
        given_name="Erika",
        surname="Mustermann",
        serial_number="PNODE-1234567890",
        email="erika.mustermann@example.com",
    )


@pytest.fixture
def legal_person() -> LegalPerson:
    return LegalPerson(
        country="DE",
        organization="Example Payroll GmbH",
        organization_identifier="VATDE-123456789",
        common_name="Example Payroll Batch Seal",
    )
