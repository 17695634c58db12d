"""Value types and pure helpers of signer.keys (no token needed)."""

from __future__ import annotations

import dataclasses

import pytest
from asn1crypto.core import OctetString
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from signer.errors import ConfigError, HsmUnavailable
from signer.keys import Destruction, HsmSettings, KeyEvidence
from signer.keys.key import EC_PARAMS, digest_for, public_key_from_attributes
from signer.secrets import Secret

GOOD = KeyEvidence(
    local=True,
    never_extractable=True,
    always_sensitive=True,
    extractable=False,
    sensitive=True,
    token=False,
)


def test_settings_defaults_and_redacted_pin() -> None:
    s = HsmSettings(module="/lib/x.so", token_label="t", pin=Secret("987654"))
    assert (s.sessions, s.curve) == (4, "P-256")
    assert "987654" not in repr(s)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"sessions": 0}, "hsm.sessions"),
        ({"curve": "P-521"}, "hsm.curve"),
        ({"module": ""}, "hsm.module"),
        ({"token_label": ""}, "hsm.token_label"),
    ],
)
def test_settings_reject_bad_values_naming_the_key(change: dict[str, object], key: str) -> None:
    base: dict[str, object] = {"module": "/lib/x.so", "token_label": "t", "pin": Secret("1")}
    with pytest.raises(ConfigError, match=key):
        HsmSettings(**{**base, **change})  # type: ignore[arg-type]


def test_evidence_acceptable_only_when_every_attribute_is_right() -> None:
    assert GOOD.acceptable()
    for f in dataclasses.fields(KeyEvidence):
        flipped = dataclasses.replace(GOOD, **{f.name: not getattr(GOOD, f.name)})
        assert not flipped.acceptable(), f.name
    assert GOOD.as_dict()["never_extractable"] is True


def test_destruction_as_dict() -> None:
    assert Destruction(True, False, True).as_dict() == {
        "private_destroyed": True,
        "public_destroyed": False,
        "confirmed_absent": True,
    }


@pytest.mark.parametrize(("curve", "cls"), [("P-256", ec.SECP256R1), ("P-384", ec.SECP384R1)])
@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.parametrize("fmt", ["uncompressed", "compressed"])
def test_ec_point_raw_or_der_wrapped(curve: str, cls: type, wrapped: bool, fmt: str) -> None:
    reference = ec.generate_private_key(cls()).public_key()
    pf = serialization.PublicFormat.UncompressedPoint
    if fmt == "compressed":
        pf = serialization.PublicFormat.CompressedPoint
    point = reference.public_bytes(serialization.Encoding.X962, pf)
    attr = OctetString(point).dump() if wrapped else point
    got = public_key_from_attributes(EC_PARAMS[curve], attr)  # type: ignore[index]
    assert got == reference


def test_ec_point_garbage_and_unknown_curve_are_hsm_errors() -> None:
    with pytest.raises(HsmUnavailable):
        public_key_from_attributes(EC_PARAMS["P-256"], b"\x04\x03abc")
    with pytest.raises(HsmUnavailable, match="unsupported curve"):
        public_key_from_attributes(b"\x06\x03\x2b\x65\x70", b"\x04" * 65)


def test_digest_for_hashes_or_passes_prehashed() -> None:
    assert digest_for(b"abc", ec.ECDSA(hashes.SHA256())) == bytes.fromhex(
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    d = b"\x01" * 48
    assert digest_for(d, ec.ECDSA(utils.Prehashed(hashes.SHA384()))) == d
    with pytest.raises(ValueError, match="same length"):
        digest_for(d, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    with pytest.raises(UnsupportedAlgorithm):
        digest_for(b"x", ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
