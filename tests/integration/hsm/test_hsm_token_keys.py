"""Long-lived token keys: lookup, refusal to overwrite, replacement, use as an X.509 signer."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signer.errors import HsmUnavailable
from signer.keys import Hsm, HsmEcPrivateKey, HsmSession, TokenKeyExists
from tests.support.softhsm import SoftHsmToken


def test_token_keys_are_found_cached_and_sign(hsm: Hsm, long_lived: dict[str, str]) -> None:
    for label, curve in long_lived.items():
        key = hsm.run_sync(lambda s, lb=label: s.token_key(lb))
        assert key.curve.name == {"P-256": "secp256r1", "P-384": "secp384r1"}[curve]
        again, sig = hsm.run_sync(
            lambda s, lb=label: (
                s.token_key(lb),
                s.token_key(lb).sign(b"m", ec.ECDSA(hashes.SHA256())),
            )
        )
        key.public_key().verify(sig, b"m", ec.ECDSA(hashes.SHA256()))
        assert again.public_key() == key.public_key()
        assert hsm.run_sync(lambda s, lb=label: s.has_token_key(lb))


def test_a_token_key_object_works_on_every_session(hsm: Hsm) -> None:
    """A key fetched once at start-up (e.g. the CA key) may be used from any later hop."""
    key = hsm.run_sync(lambda s: s.token_key("it-hsm-p256"))
    for _ in range(8):
        sig = hsm.run_sync(lambda s: key.sign(b"crl", ec.ECDSA(hashes.SHA256())))
        key.public_key().verify(sig, b"crl", ec.ECDSA(hashes.SHA256()))


def test_missing_token_key_names_the_label(hsm: Hsm) -> None:
    with pytest.raises(HsmUnavailable, match="no-such-key"):
        hsm.run_sync(lambda s: s.token_key("no-such-key"))
    assert not hsm.run_sync(lambda s: s.has_token_key("no-such-key"))


def test_create_refuses_existing_label_and_replace_swaps_the_key(
    hsm: Hsm, softhsm_token: SoftHsmToken
) -> None:
    label = "it-hsm-replace"
    first = hsm.run_sync(lambda s: s.create_token_key(label, "P-256"))
    with pytest.raises(TokenKeyExists, match=label):
        hsm.run_sync(lambda s: s.create_token_key(label, "P-256"))
    assert hsm.run_sync(lambda s: s.token_key(label)).public_key() == first.public_key()

    second = hsm.run_sync(lambda s: s.create_token_key(label, "P-384", replace=True))
    assert second.public_key() != first.public_key()
    assert second.curve.name == "secp384r1"
    # Every session sees the new key (per-session caches were invalidated).
    for _ in range(5):
        got = hsm.run_sync(lambda s: s.token_key(label))
        assert got.public_key() == second.public_key()
    # A separate process sees exactly one key pair under the label.
    objects = [o for o in softhsm_token.list_objects() if o.label == label]
    assert sorted(o.cls for o in objects) == ["PRIVATE_KEY", "PUBLIC_KEY"]
    assert all(o.token for o in objects)
    assert len({o.id for o in objects}) == 1


def _self_signed(key: HsmEcPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HSM test root")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize("label", ["it-hsm-p256", "it-hsm-p384"])
def test_token_key_signs_a_certificate_that_openssl_verifies(
    hsm: Hsm, label: str, tmp_path: Path
) -> None:
    def build(s: HsmSession) -> x509.Certificate:
        return _self_signed(s.token_key(label))

    cert = hsm.run_sync(build)
    cert.verify_directly_issued_by(cert)
    pem = tmp_path / "root.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(pem), str(pem)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stderr
