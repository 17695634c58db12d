"""A throwaway PKI built with the production ``ca`` functions: root, issuing CA, TSA, signer.

In-memory P-256 keys, a fixed clock; the certificates are exactly what ``qes init`` and the
pipeline would issue, so the independent validators judge the real profiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.authority import (
    CaNames,
    Chain,
    IssuancePolicy,
    IssuingCA,
    build_issuing_certificate,
    build_root_certificate,
)
from ca.profiles import Level, NaturalPerson
from ca.tsa import TimeStampAuthority, build_tsa_certificate

NOW = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
TSA_POLICY_OID = "1.3.6.1.4.1.32473.1.2"
#: The TSA key's private-key usage period: two years of the certificate's three.
TSA_KEY_USAGE = timedelta(days=730)
SERVICE_POLICY_OID = "1.3.6.1.4.1.32473.1.1"
NAMES = CaNames(
    country="DE",
    organization="Example Trust Services GmbH",
    organization_identifier="NTRDE-HRB12345",
    root_common_name="Example Signing Root CA",
    issuing_common_name="Example Short-Term Issuing CA",
)
POLICY = IssuancePolicy(
    service_policy_oid=SERVICE_POLICY_OID,
    ca_issuers_url="http://pki.example.com/issuing.cer",
    pds_url="https://pki.example.com/pds-en.pdf",
    crl_url="http://pki.example.com/root.crl",
)
ISSUING_CRL_URL = "http://pki.example.com/issuing.crl"
TSA_NAME = "Example Time-Stamping Unit 1"


class Clock:
    """Returns ``now`` until a test moves it: nothing under test may read the real clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Serials:
    """Distinct serials from a counter above 2**64 (the CA's minimum entropy is not at stake)."""

    def __init__(self) -> None:
        self._next = 2**64 + 1

    def __call__(self) -> int:
        self._next += 1
        return self._next


@dataclass(frozen=True)
class Pki:
    root_key: ec.EllipticCurvePrivateKey
    issuing_key: ec.EllipticCurvePrivateKey
    chain: Chain
    tsa_key: ec.EllipticCurvePrivateKey
    tsa_certificate: x509.Certificate
    issuing_ca: IssuingCA
    clock: Clock

    def tsa(self, **overrides: object) -> TimeStampAuthority:
        settings: dict[str, object] = {
            "certificate": self.tsa_certificate,
            "chain": (self.chain.issuing, self.chain.root),
            "policy_oid": TSA_POLICY_OID,
            "clock": self.clock,
            "serial_source": Serials(),
        }
        settings.update(overrides)
        return TimeStampAuthority(**settings)  # type: ignore[arg-type]

    def successor_tsa(
        self, number: int, now: datetime
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The key and 3-year certificate of time-stamping unit ``number``, issued at ``now``
        by the same issuing CA: how a TSA is renewed before its certificate expires."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = build_tsa_certificate(
            self.issuing_key,
            self.chain.issuing,
            key.public_key(),
            NAMES,
            f"Example Time-Stamping Unit {number}",
            ca_issuers_url=POLICY.ca_issuers_url,
            crl_url=ISSUING_CRL_URL,
            now=now,
            lifetime=timedelta(days=1095),
            key_usage=TSA_KEY_USAGE,
        )
        return key, cert

    def signer(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A fresh signing key and its 10-minute QES certificate, as the pipeline issues."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = NaturalPerson(
            country="DE",
            common_name="Erika Mustermann",
            given_name="Erika",
            surname="Mustermann",
            serial_number="PNODE-1234567890",
        )
        return key, self.issuing_ca.issue(self.issuing_key, key.public_key(), subject, Level.QES)

    def write(self, directory: Path) -> dict[str, Path]:
        """PEM files: root.pem, issuing.pem, tsa.pem, and chain.pem (issuing + root)."""
        files = {
            "root": directory / "root.pem",
            "issuing": directory / "issuing.pem",
            "tsa": directory / "tsa.pem",
            "chain": directory / "chain.pem",
        }
        files["root"].write_bytes(pem(self.chain.root))
        files["issuing"].write_bytes(pem(self.chain.issuing))
        files["tsa"].write_bytes(pem(self.tsa_certificate))
        files["chain"].write_bytes(pem(self.chain.issuing) + pem(self.chain.root))
        return files


def signed_pdf(
    pki: Pki,
    when: datetime,
    tsa: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
    signer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
) -> bytes:
    """A two-page PDF with a PAdES B-T signature (``Signature1``) by ``signer`` (default: a
    fresh 10-minute signer of ``pki``), time-stamped at ``when`` by ``tsa`` (key and
    certificate; default: the PKI's own TSA)."""
    from signer.formats.cms import CmsSigner, pades_b_t
    from signer.formats.pdf import embed, prepare
    from tests.support.pdfs import multi_page_pdf

    tsa_key, tsa_certificate = tsa or (pki.tsa_key, pki.tsa_certificate)
    authority = pki.tsa(certificate=tsa_certificate, clock=Clock(when))
    key, cert = signer or pki.signer()
    prepared = prepare(multi_page_pdf(2), "Signature1", when)
    cms_der = pades_b_t(
        prepared.digest,
        "sha256",
        CmsSigner(
            cert,
            (pki.chain.issuing, pki.chain.root),
            key,
            lambda digest, algorithm: authority.timestamp_digest(digest, algorithm, tsa_key),
        ),
    )
    return embed(prepared, cms_der)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(
    now: datetime = NOW,
    *,
    root_lifetime: timedelta = timedelta(days=3650),
    issuing_lifetime: timedelta = timedelta(days=1826),
) -> Pki:
    """Root (10 years), issuing CA (5 years), TSA (3 years, its key used for the first two), all
    from ``now`` - 1 day.

    Long-term tests pass the lifetimes of ``qes init`` (root 20, issuing CA 10 years: the
    ``ca`` settings' defaults), so the CA certificates outlive the years they look at."""
    start = now - timedelta(days=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    root = build_root_certificate(root_key, NAMES, start, root_lifetime)
    issuing = build_issuing_certificate(
        root_key, root, issuing_key.public_key(), NAMES, POLICY, start, issuing_lifetime
    )
    chain = Chain(issuing=issuing, root=root)
    tsa_certificate = build_tsa_certificate(
        issuing_key,
        issuing,
        tsa_key.public_key(),
        NAMES,
        TSA_NAME,
        ca_issuers_url=POLICY.ca_issuers_url,
        crl_url=ISSUING_CRL_URL,
        now=start,
        lifetime=timedelta(days=1095),
        key_usage=TSA_KEY_USAGE,
    )
    clock = Clock(now)
    return Pki(
        root_key=root_key,
        issuing_key=issuing_key,
        chain=chain,
        tsa_key=tsa_key,
        tsa_certificate=tsa_certificate,
        issuing_ca=IssuingCA(chain, POLICY, clock),
        clock=clock,
    )
