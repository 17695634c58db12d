"""signer.formats.tsp_verify: what an external TSA's reply must satisfy before its token is
embedded. The accepted case is also accepted by ``openssl ts -verify``; every
refusal names its reason."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import tsp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ca.tsa import TimeStampResp
from signer.formats.tsp_verify import TokenRejected, verify_reply
from tests.support.pki import Pki, make_pki

DIGEST = hashlib.sha256(b"signature value").digest()
NONCE = 0x1234_5678_9ABC_DEF0


def query(digest: bytes = DIGEST, algorithm: str = "sha256", nonce: int | None = NONCE) -> bytes:
    fields: dict[str, object] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": algorithm}, "hashed_message": digest},
        "cert_req": True,
    }
    if nonce is not None:
        fields["nonce"] = nonce
    return bytes(tsp.TimeStampReq(fields).dump())


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def check(pki: Pki, reply: bytes, **overrides: object) -> object:
    args: dict[str, object] = {
        "digest": DIGEST,
        "hash_algorithm": "sha256",
        "nonce": NONCE,
        "trust_anchors": [pki.chain.root],
        "intermediates": [pki.chain.issuing],
    }
    args.update(overrides)
    return verify_reply(reply, **args)  # type: ignore[arg-type]


def test_a_good_reply_is_accepted_here_and_by_openssl(pki: Pki, tmp_path: Path) -> None:
    reply = pki.tsa().respond(query(), pki.tsa_key)
    verified = check(pki, reply)
    assert verified.gen_time == pki.clock.now  # type: ignore[attr-defined]
    assert verified.certificate == pki.tsa_certificate  # type: ignore[attr-defined]
    files = pki.write(tmp_path)
    (tmp_path / "token.der").write_bytes(verified.token)  # type: ignore[attr-defined]
    done = subprocess.run(
        ["openssl", "ts", "-verify", "-token_in", "-in", str(tmp_path / "token.der"),
         "-digest", DIGEST.hex(), "-CAfile", str(files["root"]),
         "-untrusted", str(files["issuing"]), "-attime", str(int(pki.clock.now.timestamp()))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"nonce": NONCE + 1}, "does not echo the nonce"),
        ({"digest": hashlib.sha256(b"other").digest()}, "imprint does not match"),
        ({"hash_algorithm": "sha384"}, "another hash algorithm"),
        ({"intermediates": []}, "not trusted at genTime"),
        ({"trust_anchors": [make_pki().chain.root]}, "not trusted at genTime"),
    ],
)
def test_mismatches_are_refused(pki: Pki, overrides: dict[str, object], reason: str) -> None:
    reply = pki.tsa().respond(query(), pki.tsa_key)
    with pytest.raises(TokenRejected, match=reason):
        check(pki, reply, **overrides)


def test_a_reply_without_nonce_is_refused(pki: Pki) -> None:
    reply = pki.tsa().respond(query(nonce=None), pki.tsa_key)
    with pytest.raises(TokenRejected, match="does not echo the nonce"):
        check(pki, reply)


def test_a_tampered_signature_or_tstinfo_is_refused(pki: Pki) -> None:
    reply = pki.tsa().respond(query(), pki.tsa_key)
    at = reply.index(DIGEST)
    inside = reply[:at] + bytes([reply[at] ^ 1]) + reply[at + 1 :]  # TSTInfo's imprint
    with pytest.raises(TokenRejected, match="message-digest does not match"):
        check(pki, inside, digest=DIGEST[:0] + bytes([DIGEST[0] ^ 1]) + DIGEST[1:])
    signature_end = reply[:-3] + bytes([reply[-3] ^ 1]) + reply[-2:]
    with pytest.raises(TokenRejected):
        check(pki, signature_end)


def resign(reply: bytes, key: ec.EllipticCurvePrivateKey, mutate: Callable[[Any], None]) -> bytes:
    """``reply`` with its signed attributes changed by ``mutate`` and signed again by ``key``:
    what a TSA that sends wrong attributes would send."""
    response = TimeStampResp.load(reply)
    token = response["time_stamp_token"]
    signer_info = token["content"]["signer_infos"][0]
    mutate(signer_info["signed_attrs"])
    attrs = signer_info["signed_attrs"].dump(force=True)
    signer_info["signature"] = key.sign(b"\x31" + attrs[1:], ec.ECDSA(hashes.SHA256()))
    return bytes(
        TimeStampResp({"status": response["status"], "time_stamp_token": token}).dump(force=True)
    )


def _attribute(attrs: Any, name: str) -> Any:
    return next(a for a in attrs if a["type"].native == name)


def test_signed_attributes_are_checked(pki: Pki) -> None:
    reply = pki.tsa().respond(query(), pki.tsa_key)
    check(pki, resign(reply, pki.tsa_key, lambda attrs: None))  # the helper itself is sound

    def wrong_ess_hash(attrs: Any) -> None:
        ess = _attribute(attrs, "signing_certificate_v2")["values"][0]["certs"][0]
        ess["cert_hash"] = bytes(32)

    def wrong_ess_serial(attrs: Any) -> None:
        ess = _attribute(attrs, "signing_certificate_v2")["values"][0]["certs"][0]
        ess["issuer_serial"]["serial_number"] = pki.tsa_certificate.serial_number + 1

    def no_signing_certificate(attrs: Any) -> None:
        del attrs[[a["type"].native for a in attrs].index("signing_certificate_v2")]

    def wrong_digest(attrs: Any) -> None:
        _attribute(attrs, "message_digest")["values"][0] = bytes(32)

    def wrong_content_type(attrs: Any) -> None:
        _attribute(attrs, "content_type")["values"][0] = "data"

    cases = [
        (wrong_ess_hash, "ESSCertID does not identify"),
        (wrong_ess_serial, "ESSCertID names another"),
        (no_signing_certificate, "exactly one signing-certificate"),
        (wrong_digest, "message-digest does not match"),
        (wrong_content_type, "content-type is not id-ct-TSTInfo"),
    ]
    for mutate, reason in cases:
        with pytest.raises(TokenRejected, match=reason):
            check(pki, resign(reply, pki.tsa_key, mutate))
    with pytest.raises(TokenRejected, match="signature is not valid"):
        check(pki, resign(reply, make_pki().tsa_key, lambda attrs: None))


def test_a_certificate_outside_its_validity_at_gen_time_is_refused(pki: Pki) -> None:
    later = make_pki(pki.clock.now)  # another PKI whose TSA is valid from now - 1 day
    reply = later.tsa().respond(query(), later.tsa_key)
    check(later, reply)
    early = later.tsa(clock=lambda: later.clock.now - timedelta(days=2))
    rejected = early.respond(query(), later.tsa_key)  # the TSA itself declines: no time
    with pytest.raises(TokenRejected, match="rejection"):
        check(later, rejected)


@pytest.mark.parametrize("reply", [b"", b"\x30\x00", b"garbage", b"\x30\x03\x02\x01\x00"])
def test_malformed_replies_are_refused(pki: Pki, reply: bytes) -> None:
    with pytest.raises(TokenRejected):
        check(pki, reply)


def test_a_rejection_names_the_tsa_reason(pki: Pki) -> None:
    reply = pki.tsa().respond(b"not a request", pki.tsa_key)
    with pytest.raises(TokenRejected, match=r"rejection.*bad_data_format"):
        check(pki, reply)
