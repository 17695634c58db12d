"""End-entity issuance: validity, serial numbers, the HSM key interface and refusals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.authority import (
    MAX_VALIDITY,
    CaNames,
    Chain,
    IssuancePolicy,
    IssuingCA,
    build_crl,
    build_issuing_certificate,
    build_root_certificate,
    random_serial,
)
from ca.errors import CaError, PolicyError, ProfileError
from ca.profiles import LegalPerson, Level, NaturalPerson


def _issue(
    ca: IssuingCA, key: ec.EllipticCurvePrivateKey, subject: Any, level: Level
) -> x509.Certificate:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    return ca.issue(key, leaf_key.public_key(), subject, level)


# -- validity ----------------------------------------------------------------------------------


def test_default_validity_is_exactly_ten_minutes_including_backdate(
    issuing_ca: IssuingCA,
    issuing_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
    clock: Callable[[], datetime],
) -> None:
    cert = _issue(issuing_ca, issuing_key, natural_person, Level.QES)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(minutes=10)
    assert cert.not_valid_before_utc == clock() - timedelta(seconds=30)


def test_sub_second_clock_still_gives_exact_validity(
    chain: Chain,
    policy: IssuancePolicy,
    issuing_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
    clock: Callable[[], datetime],
) -> None:
    ca = IssuingCA(chain, policy, lambda: clock() + timedelta(microseconds=999_999))
    cert = _issue(ca, issuing_key, natural_person, Level.QES)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == MAX_VALIDITY


def test_shorter_validity_is_configurable(
    chain: Chain,
    policy: IssuancePolicy,
    issuing_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
    clock: Callable[[], datetime],
) -> None:
    short = IssuancePolicy(
        service_policy_oid=policy.service_policy_oid,
        ca_issuers_url=policy.ca_issuers_url,
        pds_url=policy.pds_url,
        crl_url=policy.crl_url,
        validity=timedelta(minutes=5),
        backdate=timedelta(seconds=0),
    )
    cert = _issue(IssuingCA(chain, short, clock), issuing_key, natural_person, Level.QES)
    assert cert.not_valid_before_utc == clock()
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"validity": timedelta(minutes=10, seconds=1)}, "validity"),
        ({"validity": timedelta(hours=24)}, "validity"),
        ({"validity": timedelta(seconds=30)}, "validity"),
        ({"validity": timedelta(seconds=90.5)}, "validity"),
        ({"backdate": timedelta(seconds=-1)}, "backdate"),
        ({"service_policy_oid": "not.an.oid"}, "service_policy_oid"),
        ({"ca_issuers_url": "ldap://pki.example.com/ca"}, "ca_issuers_url"),
        ({"crl_url": "pki.example.com/root.crl"}, "crl_url"),
        ({"pds_url": "http://pki.example.com/pds.pdf"}, "pds_url"),
        ({"pds_language": "eng"}, "pds_language"),
    ],
)
def test_invalid_policy_is_refused(
    policy: IssuancePolicy, changes: dict[str, Any], field: str
) -> None:
    settings = {
        "service_policy_oid": policy.service_policy_oid,
        "ca_issuers_url": policy.ca_issuers_url,
        "pds_url": policy.pds_url,
        "crl_url": policy.crl_url,
        **changes,
    }
    with pytest.raises(PolicyError, match=f"^{field}:"):
        IssuancePolicy(**settings)


def test_naive_clock_is_refused(
    chain: Chain,
    policy: IssuancePolicy,
    issuing_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
) -> None:
    ca = IssuingCA(chain, policy, lambda: datetime(2026, 3, 1, 12, 0))
    with pytest.raises(PolicyError, match="timezone-aware"):
        _issue(ca, issuing_key, natural_person, Level.QES)


def test_refuses_to_outlive_the_issuing_ca(
    chain: Chain,
    policy: IssuancePolicy,
    issuing_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
) -> None:
    end = chain.issuing.not_valid_after_utc
    nearly = IssuingCA(chain, policy, lambda: end - timedelta(minutes=5))
    with pytest.raises(PolicyError, match="expires"):
        _issue(nearly, issuing_key, natural_person, Level.QES)
    after = IssuingCA(chain, policy, lambda: end + timedelta(seconds=1))
    with pytest.raises(PolicyError, match="not valid"):
        _issue(after, issuing_key, natural_person, Level.QES)


# -- serial numbers ----------------------------------------------------------------------------


def test_default_serials_are_positive_large_and_fit_20_octets() -> None:
    serials = [random_serial() for _ in range(2000)]
    assert len(set(serials)) == len(serials)
    for serial in serials:
        assert serial > 2**64
        # DER INTEGER content octets, including a leading zero octet for the sign bit.
        assert (serial.bit_length() + 8) // 8 <= 20
    # Over 2000 draws, every one of the top 64 bit positions should have been set somewhere.
    union = 0
    for serial in serials:
        union |= serial
    assert union >> 95 == 2**64 - 1


def test_issued_serial_comes_from_the_serial_source(
    chain: Chain,
    policy: IssuancePolicy,
    issuing_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
    clock: Callable[[], datetime],
) -> None:
    ca = IssuingCA(chain, policy, clock, serial_source=lambda: 2**158 + 12345)
    assert _issue(ca, issuing_key, natural_person, Level.QES).serial_number == 2**158 + 12345


@pytest.mark.parametrize("serial", [0, -5, 2**159, True, "123"])
def test_bad_serial_from_the_source_is_refused(
    chain: Chain,
    policy: IssuancePolicy,
    issuing_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
    clock: Callable[[], datetime],
    serial: Any,
) -> None:
    ca = IssuingCA(chain, policy, clock, serial_source=lambda: serial)
    with pytest.raises(CaError, match="serial"):
        _issue(ca, issuing_key, natural_person, Level.QES)


# -- the HSM key interface ---------------------------------------------------------------------


class HsmLikeKey(ec.EllipticCurvePrivateKey):
    """Mimics the signer's PKCS#11 key: it can sign and tell its public key, nothing else."""

    def __init__(self, inner: ec.EllipticCurvePrivateKey) -> None:
        self._inner = inner
        self.algorithms: list[ec.EllipticCurveSignatureAlgorithm] = []

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        self.algorithms.append(signature_algorithm)
        return self._inner.sign(bytes(data), signature_algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._inner.curve

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise AssertionError("the CA must never do key agreement")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise AssertionError("the CA must never read private numbers")

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise AssertionError("the CA must never export a private key")

    def __copy__(self) -> HsmLikeKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> HsmLikeKey:
        return self


def test_issue_works_through_the_hsm_key_interface(
    issuing_ca: IssuingCA,
    issuing_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
    ca_curve: type[ec.EllipticCurve],
) -> None:
    hsm_key = HsmLikeKey(issuing_key)
    cert = _issue(issuing_ca, hsm_key, natural_person, Level.QES)

    expected_hash = hashes.SHA256 if ca_curve is ec.SECP256R1 else hashes.SHA384
    assert len(hsm_key.algorithms) == 1
    algorithm = hsm_key.algorithms[0]
    assert isinstance(algorithm, ec.ECDSA)
    assert isinstance(algorithm.algorithm, expected_hash)
    assert isinstance(cert.signature_hash_algorithm, expected_hash)
    cert.verify_directly_issued_by(issuing_ca.chain.issuing)


def test_ca_certificates_and_crl_build_with_hsm_keys(
    ca_names: CaNames, policy: IssuancePolicy, clock: Callable[[], datetime]
) -> None:
    root_key = HsmLikeKey(ec.generate_private_key(ec.SECP384R1()))
    issuing_key = HsmLikeKey(ec.generate_private_key(ec.SECP256R1()))
    now = clock()
    root = build_root_certificate(root_key, ca_names, now, timedelta(days=3650))
    issuing = build_issuing_certificate(
        root_key, root, issuing_key.public_key(), ca_names, policy, now, timedelta(days=365)
    )
    chain = Chain(issuing=issuing, root=root)
    crl = build_crl(root_key, root, now, timedelta(days=7))
    assert crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    cert = _issue(
        IssuingCA(chain, policy, clock),
        issuing_key,
        LegalPerson("DE", "Example GmbH", "NTRDE-HRB1", "Seal"),
        Level.QES,
    )
    cert.verify_directly_issued_by(issuing)
    assert all(isinstance(a, ec.ECDSA) for a in root_key.algorithms + issuing_key.algorithms)
    assert [type(a.algorithm) for a in root_key.algorithms] == [hashes.SHA384] * 3


# -- refused requests --------------------------------------------------------------------------


def test_wrong_signing_key_is_refused(
    issuing_ca: IssuingCA, natural_person: NaturalPerson, root_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(CaError, match="signing_key"):
        _issue(issuing_ca, root_key, natural_person, Level.QES)


@pytest.mark.parametrize(
    ("public_key", "field"),
    [
        (lambda: ec.generate_private_key(ec.SECP256K1()).public_key(), "public_key"),
        (lambda: "not a key", "public_key"),
    ],
)
def test_unusable_subject_key_is_refused(
    issuing_ca: IssuingCA,
    issuing_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
    public_key: Callable[[], Any],
    field: str,
) -> None:
    with pytest.raises(ProfileError) as info:
        issuing_ca.issue(issuing_key, public_key(), natural_person, Level.QES)
    assert info.value.field == field


def test_issuing_key_as_subject_key_is_refused(
    issuing_ca: IssuingCA, issuing_key: ec.EllipticCurvePrivateKey, natural_person: NaturalPerson
) -> None:
    with pytest.raises(ProfileError, match="public_key"):
        issuing_ca.issue(issuing_key, issuing_key.public_key(), natural_person, Level.QES)


def test_unknown_level_and_subject_are_refused(
    issuing_ca: IssuingCA, issuing_key: ec.EllipticCurvePrivateKey, natural_person: NaturalPerson
) -> None:
    with pytest.raises(ProfileError) as info:
        _issue(issuing_ca, issuing_key, natural_person, "eidas-high")  # type: ignore[arg-type]
    assert info.value.field == "level"
    with pytest.raises(ProfileError) as info:
        _issue(issuing_ca, issuing_key, {"country": "DE"}, Level.QES)
    assert info.value.field == "subject"
