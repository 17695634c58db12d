"""Ephemeral keys on a real SoftHSM2 token: evidence, signatures checked by OpenSSL, destruction."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from pkcs11.exceptions import PKCS11Error

from signer.errors import HsmUnavailable
from signer.keys import Destruction, EphemeralKey, Hsm, HsmSession

HASHES = {"P-256": hashes.SHA256(), "P-384": hashes.SHA384()}
CURVE_NAMES = {"P-256": "secp256r1", "P-384": "secp384r1"}


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def _write_public(key: EphemeralKey, path: Path) -> Path:
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.write_bytes(pem)
    return path


def _no_session_objects(hsm: Hsm) -> None:
    summary = hsm.run_sync(lambda s: s.object_summary())
    assert [o for o in summary if not o[2]] == []
    assert hsm.live_ephemeral_keys() == 0


@pytest.mark.parametrize("curve", ["P-256", "P-384"])
def test_ephemeral_key_evidence_and_destruction(hsm: Hsm, curve: str) -> None:
    key = hsm.run_sync(lambda s: s.generate_ephemeral(curve))  # type: ignore[arg-type]
    assert key.evidence.acceptable()
    assert key.evidence.as_dict() == {
        "local": True,
        "never_extractable": True,
        "always_sensitive": True,
        "extractable": False,
        "sensitive": True,
        "token": False,
    }
    assert key.private.curve.name == CURVE_NAMES[curve]
    assert len(key.key_id) == 16
    seen = hsm.run_sync(lambda s: s.object_summary())
    assert ("qes-ephemeral", "PRIVATE_KEY", False) in seen
    assert ("qes-ephemeral", "PUBLIC_KEY", False) in seen

    receipt = hsm.run_sync(lambda s: s.destroy(key))
    assert receipt == Destruction(
        private_destroyed=True, public_destroyed=True, confirmed_absent=True
    )
    _no_session_objects(hsm)
    # Destroying again is not an error: nothing was destroyed now, absence still confirmed.
    again = hsm.run_sync(lambda s: s.destroy(key))
    assert again.as_dict() == {
        "private_destroyed": False,
        "public_destroyed": False,
        "confirmed_absent": True,
    }


@pytest.mark.parametrize("curve", ["P-256", "P-384"])
def test_signatures_verify_with_cryptography_and_openssl(
    hsm: Hsm, curve: str, tmp_path: Path
) -> None:
    hash_alg = HASHES[curve]
    data = b"document bytes \x00\x01" * 100
    digest = hashes.Hash(hash_alg)
    digest.update(data)
    prehashed = digest.finalize()

    def work(s: HsmSession) -> tuple[EphemeralKey, bytes, bytes, bytes]:
        key = s.generate_ephemeral(curve)  # type: ignore[arg-type]
        over_data = key.private.sign(data, ec.ECDSA(hash_alg))
        over_digest = key.private.sign_digest(prehashed)
        via_prehashed = key.private.sign(prehashed, ec.ECDSA(utils.Prehashed(hash_alg)))
        s.destroy(key)
        return key, over_data, over_digest, via_prehashed

    key, over_data, over_digest, via_prehashed = hsm.run_sync(work)
    public = key.private.public_key()
    for sig in (over_data, over_digest, via_prehashed):
        public.verify(sig, data, ec.ECDSA(hash_alg))
        utils.decode_dss_signature(sig)  # DER Ecdsa-Sig-Value, not raw r||s

    # Independent verifier: OpenSSL over the data and over the digest.
    pub = _write_public(key, tmp_path / "pub.pem")
    (tmp_path / "data.bin").write_bytes(data)
    (tmp_path / "digest.bin").write_bytes(prehashed)
    (tmp_path / "sig.der").write_bytes(over_data)
    (tmp_path / "sig2.der").write_bytes(over_digest)
    name = hash_alg.name
    dgst = _openssl(
        "dgst",
        f"-{name}",
        "-verify",
        str(pub),
        "-signature",
        str(tmp_path / "sig.der"),
        str(tmp_path / "data.bin"),
    )
    assert dgst.returncode == 0 and "Verified OK" in dgst.stdout, dgst.stdout + dgst.stderr
    pkey = _openssl(
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(pub),
        "-in",
        str(tmp_path / "digest.bin"),
        "-sigfile",
        str(tmp_path / "sig2.der"),
    )
    assert pkey.returncode == 0 and "Signature Verified Successfully" in pkey.stdout, pkey.stderr
    # ...and OpenSSL rejects a signature over other data (the check can fail).
    (tmp_path / "other.bin").write_bytes(data + b"!")
    bad = _openssl(
        "dgst",
        f"-{name}",
        "-verify",
        str(pub),
        "-signature",
        str(tmp_path / "sig.der"),
        str(tmp_path / "other.bin"),
    )
    assert bad.returncode != 0


def test_p256_key_with_longer_hash_truncates_like_cryptography(hsm: Hsm) -> None:
    def work(s: HsmSession) -> tuple[EphemeralKey, bytes]:
        key = s.generate_ephemeral("P-256")
        sig = key.private.sign(b"x", ec.ECDSA(hashes.SHA512()))
        s.destroy(key)
        return key, sig

    key, sig = hsm.run_sync(work)
    key.private.public_key().verify(sig, b"x", ec.ECDSA(hashes.SHA512()))


def test_key_generated_on_one_session_signs_and_dies_on_another(hsm: Hsm) -> None:
    """The pool hands out sessions round-robin; a key must work on whichever one runs next."""
    key, first = hsm.run_sync(lambda s: (s.generate_ephemeral(), s))
    sessions = set()
    sigs = []
    for _ in range(6):  # more than the pool size: every session signs at least once
        sig, s_used = hsm.run_sync(lambda s: (key.private.sign_digest(b"\x11" * 32), s))
        sigs.append(sig)
        sessions.add(s_used)
    assert len(sessions) == 4 and first in sessions
    for sig in sigs:
        key.private.public_key().verify(
            sig, b"\x11" * 32, ec.ECDSA(utils.Prehashed(hashes.SHA256()))
        )
    other = hsm.run_sync(lambda s: s)
    assert other is not first
    receipt = hsm.run_sync(lambda s: s.destroy(key))
    assert receipt.confirmed_absent and receipt.private_destroyed and receipt.public_destroyed
    _no_session_objects(hsm)

    # The destroyed key can no longer sign, on any session; the error is ours (chained) even
    # when caught inside the callback, not python-pkcs11's.
    def attempt(s: HsmSession) -> BaseException | None:
        try:
            key.private.sign_digest(b"\x11" * 32)
        except Exception as exc:
            return exc
        return None

    for _ in range(4):
        err = hsm.run_sync(attempt)
        assert isinstance(err, HsmUnavailable), err
        assert isinstance(err.__cause__, PKCS11Error)


def test_key_refuses_use_outside_run_and_extraction(hsm: Hsm) -> None:
    key = hsm.run_sync(lambda s: s.generate_ephemeral())
    try:
        with pytest.raises(RuntimeError, match=r"outside an Hsm\.run"):
            key.private.sign_digest(b"\x00" * 32)
        with pytest.raises(UnsupportedAlgorithm):
            key.private.private_numbers()
        with pytest.raises(UnsupportedAlgorithm):
            key.private.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        with pytest.raises(ValueError, match="digest of 5 bytes"):
            hsm.run_sync(lambda s: key.private.sign_digest(b"short"))
    finally:
        assert hsm.run_sync(lambda s: s.destroy(key)).confirmed_absent


def test_destroy_stale_reaps_forgotten_keys(hsm: Hsm) -> None:
    keys = [hsm.run_sync(lambda s: s.generate_ephemeral()) for _ in range(3)]
    assert hsm.live_ephemeral_keys() == 3
    assert hsm.run_sync(lambda s: s.destroy_stale(3600.0)) == 0
    assert hsm.run_sync(lambda s: s.destroy_stale(0.0)) == 3
    _no_session_objects(hsm)
    assert all(hsm.run_sync(lambda s, k=k: s.destroy(k)).confirmed_absent for k in keys)
