"""Generations of the issuing CA and TSA (signer.signing.rollover, signer.storage.authority):
states, key labels, and which generation issued a certificate when two CAs share a name."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ca.authority import build_issuing_certificate
from signer.errors import ConfigError
from signer.signing.rollover import Authorities
from signer.storage.authority import Generation, generation_label
from tests.support.pki import NAMES, NOW, POLICY, make_pki


def test_key_labels_and_states() -> None:
    assert generation_label("qes-issuing-ca", 1) == "qes-issuing-ca"
    assert generation_label("qes-issuing-ca", 2) == "qes-issuing-ca-g2"
    pki = make_pki()
    cert = pki.chain.issuing
    assert Generation("issuing", 2, "x-g2", cert).state == "pending"
    assert Generation("issuing", 1, "x", cert, NOW).state == "current"
    assert Generation("issuing", 1, "x", cert, NOW, NOW + timedelta(days=1)).state == "past"
    for bad in (
        {"role": "ocsp"},
        {"number": 0},
        {"issued_until": NOW},  # ended without having begun
    ):
        values: dict[str, object] = {"role": "tsa", "number": 1, "key_label": "t"}
        values.update(bad)
        with pytest.raises(ValueError, match=next(iter(bad))):
            Generation(certificate=cert, **values)  # type: ignore[arg-type]


def test_the_issuer_of_a_certificate_among_generations_of_one_name() -> None:
    pki = make_pki()
    key = ec.generate_private_key(ec.SECP256R1())
    successor = build_issuing_certificate(
        pki.root_key, pki.chain.root, key.public_key(), NAMES, POLICY, NOW, timedelta(days=900)
    )
    assert successor.subject == pki.chain.issuing.subject  # the same name, another key
    switched = NOW + timedelta(hours=1)
    first = Generation("issuing", 1, "ca", pki.chain.issuing, NOW - timedelta(days=1), switched)
    second = Generation("issuing", 2, "ca-g2", successor, switched)
    authorities = Authorities(root=pki.chain.root, issuing=(first, second))
    assert authorities.issuing_ca == second and authorities.chain.issuing == successor
    assert authorities.current("tsa") is None
    assert authorities.issuer_of(pki.tsa_certificate) == first  # the TSA the old CA certified
    assert authorities.history == (first, second)
    with pytest.raises(ConfigError, match="issued by none"):
        authorities.issuer_of(pki.chain.root)
    with pytest.raises(ConfigError, match="no current issuing CA"):
        Authorities(root=pki.chain.root, issuing=(Generation("issuing", 3, "p", successor),))


def test_qes_verify_walks_to_the_issuing_ca_by_key_identifier() -> None:
    """After a rollover two issuing CAs share a name; the walk that names an expired link
    takes the one whose SKI is the leaf's AKI, wherever the bundle lists it."""
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from signer.formats.verify import _issuer_walk

    pki = make_pki()
    key = ec.generate_private_key(ec.SECP256R1())
    successor = build_issuing_certificate(
        pki.root_key, pki.chain.root, key.public_key(), NAMES, POLICY, NOW, timedelta(days=900)
    )
    _, leaf = pki.signer()  # issued by the first issuing CA

    def der(cert: object) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))  # type: ignore[attr-defined]

    pool = [der(successor), der(pki.chain.issuing), der(pki.chain.root)]
    walk = _issuer_walk(der(leaf), pool)
    assert [c.dump() for c in walk] == [
        der(c).dump() for c in (leaf, pki.chain.issuing, pki.chain.root)
    ]
