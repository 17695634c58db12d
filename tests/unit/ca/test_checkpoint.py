"""C2SP signed-note and tlog-checkpoint: real notes from Go sumdb and Sigstore Rekor, round trips.

Known answers (all re-verified here, none produced by this project):
- Go ``golang.org/x/mod/sumdb/note`` package documentation (golang/mod, sumdb/note/note.go):
  the PeterNeumann signer key, text and signed note. Ed25519 is deterministic, so our
  signature must equal Go's byte for byte.
- C2SP signed-note.md, section "Example" (C2SP/C2SP commit
  d4c16da5e7687a016619074e78dad84b2c7238cc): the ``example.com/foo`` verifier key and note.
- Go checksum database checkpoints signed by ``sum.golang.org`` (Ed25519), with the published
  verifier key: transparency-dev/witness cmd/witness README (tree 15081221, carrying two
  witness signatures from unknown keys) and a ``go`` module-cache lookup (tree 63096908).
- Sigstore Rekor checkpoints (ECDSA P-256, signature type 0x02) with Rekor's production public
  key: sigstore/sigstore-js packages/verify/src/__tests__/tlog/checkpoint.test.ts (tree 21428036,
  with a "Timestamp:" extension line) and a real Rekor bundle (tree 97323998, no extension).
- C2SP tlog-checkpoint.md example body (``example.com/behind-the-sofa``): text format only.

Independent verifier: ``tlog-scales`` (florolf/tlog-scales) checks our Ed25519 checkpoints.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from tlog_scales.signing import Vkey as ScalesVkey
from tlog_scales.tlog import Checkpoint as ScalesCheckpoint

from ca.checkpoint import (
    MAX_SIGNATURES,
    SIGNATURE_TYPE_ECDSA,
    SIGNATURE_TYPE_ED25519,
    Checkpoint,
    CheckpointError,
    InvalidNoteSignature,
    NoteError,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    SignedNote,
    UnverifiedNote,
    open_checkpoint,
    open_note,
    sign_checkpoint,
    sign_note,
)
from ca.errors import CaError
from ca.merkle import EMPTY_ROOT, TreeHead, leaf_hash

DASH = "\u2014"

# golang/mod sumdb/note/note.go package documentation.
GO_SKEY_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n" + DASH + " PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

# C2SP signed-note.md "Example".
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n" + DASH + " example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)

# sum.golang.org: the verifier key built into the go command, and two real checkpoints.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_ORIGIN = "go.sum database tree"
SUMDB_WITNESSED = (
    "go.sum database tree\n15081221\nBoMMe1wd25Tco0mYGROkyqxHZWx+hcSCtMV315Lu6Lg=\n\n"
    f"{DASH} sum.golang.org Az3grilD7vQqTrv66jRgKM84Y80KTprrSt4bKmiOPxgmS5ZVBTeCl6dUvjYnN13R"
    "+C8j0jGY1WnUADGMkok3U0m2Zgo=\n"
    f"{DASH} test.example.com qTGhC3917mAr6hGh+T55tNjxaej/D/GQivJZRIj7XGdAcQOTqfMWIPgp/v/904LEduN"
    "/h2sSRtHUJXUL4b9Gm7Bz4Qc=\n"
    f"{DASH} test.example.com /Pa7Y/dUvWMAAAAAQVwkQVi81ArPV7BIaQYrMIxyzY0m8a4BdeeBhSKd3PviPK4/3Sd"
    "+NKSc5N7PDTCfAkUSVniN+R2oKIggA4iiDQ==\n"
)
SUMDB_LOOKUP = (
    "go.sum database tree\n63096908\n8lHrQPRYe4KT4WQ9/Qk8/taKnD6IRHbFgfN7vQE2Y54=\n\n"
    f"{DASH} sum.golang.org Az3gri/oVBN1jAhNZ/iS+W31psFAWRT20/GyrhpU6taFwulQGetBkH5S7wpGXdS935ji"
    "IGiUUAXBVHzT/P6fYhqAmAk=\n"
)

# Sigstore Rekor production key (DER SPKI, base64) and real checkpoints.
REKOR_SPKI = base64.b64decode(
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2G2Y+2tabdTV5BcGiBIx0a9fAFwrkBbmLSGtks4L3qX6yYY0zufBnhC8"
    "Ur/iy55GhWP/9A/bY2LhC30M9+RYtw=="
)
REKOR_NAME = "rekor.sigstore.dev"
REKOR_ORIGIN = "rekor.sigstore.dev - 2605736670972794746"
# Rekor's log ID is SHA-256 of that SPKI; type 0x02 key IDs are its first four bytes.
REKOR_LOG_ID = "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
REKOR_WITH_TIMESTAMP = (
    "rekor.sigstore.dev - 2605736670972794746\n21428036\n"
    "rxnoKyFZlJ7/R6bMh/d3lcqwKqAy5CL1LcNBJP17kgQ=\n"
    "Timestamp: 1688058656037355364\n\n"
    f"{DASH} rekor.sigstore.dev wNI9ajBFAiEAuDk7uu5Ae8Own/MjhSZNuVzbLuYH2jBMxbSA0WaNDNACIDV4r"
    "eKpYiOpkwtvazCClnpUuduF2o/th2xR3gRZAUU4\n"
)
REKOR_PLAIN = (
    "rekor.sigstore.dev - 2605736670972794746\n97323998\n"
    "La0A7Z2xT6hGMjh2tOlyI64RHw84pUHU3fVHj7TSVy0=\n\n"
    f"{DASH} rekor.sigstore.dev wNI9ajBEAiBIowx1POsWydf7F2tZj7huPfFBNngo87WIw2PyWTu5SgIgTx"
    "uNk/AFSdY2DjdM+2NodtymfDr0QydRAh8UO9ab8WU=\n"
)

# C2SP tlog-checkpoint.md example (the note text part).
SPEC_CHECKPOINT_TEXT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

ORIGIN = "qes.example.com/log"


def rekor_verifier() -> NoteVerifier:
    key = serialization.load_der_public_key(REKOR_SPKI)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return NoteVerifier(REKOR_NAME, key)


@pytest.fixture(params=["p256", "p384", "ed25519"])
def signer(request: pytest.FixtureRequest) -> NoteSigner:
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if request.param == "p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif request.param == "p384":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return NoteSigner(ORIGIN, key)


def checkpoint(size: int = 5) -> Checkpoint:
    return Checkpoint(ORIGIN, size, leaf_hash(b"root of %d" % size))


# -- Known answers -------------------------------------------------------------------------------


def test_go_note_signature_is_reproduced_byte_for_byte() -> None:
    signer = NoteSigner("PeterNeumann", ed25519.Ed25519PrivateKey.from_private_bytes(GO_SKEY_SEED))
    assert signer.verifier.vkey() == GO_VKEY
    assert sign_note(GO_TEXT, [signer]).to_text() == GO_NOTE
    opened = open_note(GO_NOTE.encode(), [NoteVerifier.from_vkey(GO_VKEY)])
    assert opened.text == GO_TEXT


def test_c2sp_signed_note_example_verifies() -> None:
    verifier = NoteVerifier.from_vkey(SPEC_VKEY)
    assert (verifier.name, verifier.key_id) == ("example.com/foo", 0x530D903A)
    assert verifier.vkey() == SPEC_VKEY
    assert open_note(SPEC_NOTE, [verifier]).text == "This is an example message.\n"


@pytest.mark.parametrize(
    ("note", "size"),
    [(SUMDB_WITNESSED, 15081221), (SUMDB_LOOKUP, 63096908)],
    ids=["witnessed", "lookup"],
)
def test_go_sumdb_checkpoints_verify(note: str, size: int) -> None:
    verifier = NoteVerifier.from_vkey(SUMDB_VKEY)
    assert verifier.signature_type == SIGNATURE_TYPE_ED25519
    parsed = open_checkpoint(note, verifier, SUMDB_ORIGIN)
    assert parsed.size == size
    assert parsed.extensions == ()
    # Our own formatter writes exactly the body that sum.golang.org signed.
    assert parsed.text() == note[: note.index("\n\n") + 1]


@pytest.mark.parametrize(
    ("note", "size", "extensions"),
    [
        (REKOR_WITH_TIMESTAMP, 21428036, ("Timestamp: 1688058656037355364",)),
        (REKOR_PLAIN, 97323998, ()),
    ],
    ids=["timestamp", "plain"],
)
def test_sigstore_rekor_ecdsa_checkpoints_verify(
    note: str, size: int, extensions: tuple[str, ...]
) -> None:
    verifier = rekor_verifier()
    assert verifier.signature_type == SIGNATURE_TYPE_ECDSA
    assert f"{verifier.key_id:08x}" == REKOR_LOG_ID[:8]
    parsed = open_checkpoint(note, NoteVerifier.from_vkey(verifier.vkey()), REKOR_ORIGIN)
    assert (parsed.size, parsed.extensions) == (size, extensions)
    assert parsed.text() == note[: note.index("\n\n") + 1]


def test_rekor_vkey_matches_transparency_dev_format() -> None:
    # transparency-dev/formats note/note_verifier.go documents Rekor's key as
    # "rekor.sigstore.dev+<hash>+AjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNht...": 0x02 || SPKI.
    vkey = rekor_verifier().vkey()
    name, key_id, blob = vkey.split("+", 2)
    assert (name, key_id) == (REKOR_NAME, REKOR_LOG_ID[:8])
    assert base64.b64decode(blob) == b"\x02" + REKOR_SPKI
    assert blob.startswith("AjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNht")


def test_c2sp_checkpoint_text_format() -> None:
    root = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    parsed = Checkpoint.parse(SPEC_CHECKPOINT_TEXT)
    assert parsed == Checkpoint("example.com/behind-the-sofa", 20852163, root)
    assert parsed.text() == SPEC_CHECKPOINT_TEXT


# -- Real notes altered --------------------------------------------------------------------------


def test_altered_real_notes_are_rejected() -> None:
    sumdb = NoteVerifier.from_vkey(SUMDB_VKEY)
    altered_size = SUMDB_LOOKUP.replace("63096908", "63096909")
    with pytest.raises(InvalidNoteSignature):
        open_checkpoint(altered_size, sumdb, SUMDB_ORIGIN)
    renamed = SUMDB_LOOKUP.replace(f"{DASH} sum.golang.org ", f"{DASH} sum.golang.org.evil ")
    with pytest.raises(UnverifiedNote):
        open_checkpoint(renamed, sumdb, SUMDB_ORIGIN)
    with pytest.raises(CheckpointError, match="origin"):
        open_checkpoint(SUMDB_LOOKUP, sumdb, "sum.golang.org")
    # sigstore-js's negative cases: a wrong key hint (x instead of w) and a truncated signature.
    rekor = rekor_verifier()
    wrong_hint = REKOR_WITH_TIMESTAMP.replace(" wNI9aj", " xNI9aj")
    with pytest.raises(UnverifiedNote):
        open_checkpoint(wrong_hint, rekor, REKOR_ORIGIN)
    truncated = (
        REKOR_PLAIN.split("\n\n")[0] + f"\n\n{DASH} rekor.sigstore.dev wNI9ajBFAiEAuDk7uu5Ae8Own\n"
    )
    with pytest.raises(NoteError):
        open_checkpoint(truncated, rekor, REKOR_ORIGIN)
    # A real Ed25519 key does not verify an ECDSA log's note, and vice versa.
    with pytest.raises(UnverifiedNote):
        open_checkpoint(REKOR_PLAIN, sumdb, REKOR_ORIGIN)


# -- Round trips ---------------------------------------------------------------------------------


def test_checkpoint_round_trip(signer: NoteSigner) -> None:
    cp = Checkpoint(ORIGIN, 42, leaf_hash(b"root"), ("extension one",))
    note = sign_checkpoint(cp, signer)
    assert note.startswith(cp.text() + "\n" + DASH + " " + ORIGIN + " ")
    verifier = NoteVerifier.from_vkey(signer.verifier.vkey())
    assert verifier == signer.verifier
    assert open_checkpoint(note, verifier, ORIGIN) == cp
    assert open_checkpoint(note.encode(), verifier, ORIGIN).tree_head == TreeHead(42, cp.root_hash)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_ecdsa_signature_is_der_over_sha256_of_the_text(curve: ec.EllipticCurve) -> None:
    """Type 0x02 as transparency-dev verifies it: ecdsa.VerifyASN1(key, SHA-256(text), sig)."""
    signer = NoteSigner(ORIGIN, ec.generate_private_key(curve))
    assert signer.verifier.signature_type == SIGNATURE_TYPE_ECDSA
    note = SignedNote.parse(sign_checkpoint(checkpoint(), signer))
    (signature,) = note.signatures
    public = signer.private_key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    assert signature.key_id == int.from_bytes(digest.finalize()[:4], "big")
    public.verify(signature.signature, note.text.encode(), ec.ECDSA(hashes.SHA256()))


def test_ed25519_checkpoint_verifies_with_tlog_scales() -> None:
    signer = NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    note = sign_checkpoint(checkpoint(7), signer)
    theirs = ScalesCheckpoint.from_text(note)
    assert (theirs.origin, theirs.size, theirs.root_hash) == (ORIGIN, 7, checkpoint(7).root_hash)
    theirs.verify(ScalesVkey.from_string(signer.verifier.vkey()))
    tampered = ScalesCheckpoint.from_text(note.replace("\n7\n", "\n8\n"))
    with pytest.raises(InvalidSignature):
        tampered.verify(ScalesVkey.from_string(signer.verifier.vkey()))


def test_empty_log_checkpoint(signer: NoteSigner) -> None:
    cp = Checkpoint.from_tree_head(ORIGIN, TreeHead(0, EMPTY_ROOT))
    opened = open_checkpoint(sign_checkpoint(cp, signer), signer.verifier, ORIGIN)
    assert opened.tree_head == TreeHead(0, EMPTY_ROOT)


# -- Rejections ----------------------------------------------------------------------------------


def test_wrong_signature_is_rejected(signer: NoteSigner) -> None:
    note = SignedNote.parse(sign_checkpoint(checkpoint(), signer))
    (good,) = note.signatures
    broken = bytearray(good.signature)
    broken[len(broken) // 2] ^= 0x01
    forged = SignedNote(note.text, (NoteSignature(good.name, good.key_id, bytes(broken)),))
    with pytest.raises(InvalidNoteSignature):
        open_checkpoint(forged.to_text(), signer.verifier, ORIGIN)


def test_wrong_key_name_is_ignored_so_the_note_is_unverified(signer: NoteSigner) -> None:
    note = sign_checkpoint(checkpoint(), signer)
    renamed = note.replace(f"{DASH} {ORIGIN} ", f"{DASH} other.example.com/log ")
    with pytest.raises(UnverifiedNote):
        open_checkpoint(renamed, signer.verifier, ORIGIN)


def test_altered_body_is_rejected(signer: NoteSigner) -> None:
    note = sign_checkpoint(checkpoint(5), signer)
    for old, new in (("\n5\n", "\n6\n"), (ORIGIN + "\n", ORIGIN + "2\n")):
        with pytest.raises(InvalidNoteSignature):
            open_note(note.replace(old, new, 1), [signer.verifier])


def test_another_key_with_the_same_name_does_not_verify(signer: NoteSigner) -> None:
    impostor = NoteSigner(ORIGIN, ec.generate_private_key(ec.SECP256R1()))
    note = sign_checkpoint(checkpoint(), impostor)
    with pytest.raises(UnverifiedNote):
        open_checkpoint(note, signer.verifier, ORIGIN)


def test_unknown_signatures_are_ignored_and_duplicates_counted_once(signer: NoteSigner) -> None:
    witness = NoteSigner("witness.example.com", ed25519.Ed25519PrivateKey.generate())
    signed = sign_note(checkpoint().text(), [witness, signer, signer])
    assert len(signed.signatures) == 3
    assert signed.verify([signer.verifier]) == (signer.verifier,)
    assert signed.verify([signer.verifier, witness.verifier]) == (witness.verifier, signer.verifier)
    # A bad signature from the known witness rejects the note even though the log's is fine.
    bad = NoteSignature(witness.name, witness.verifier.key_id, b"\x00" * 64)
    with pytest.raises(InvalidNoteSignature):
        SignedNote(signed.text, (bad, *signed.signatures[1:])).verify(
            [signer.verifier, witness.verifier]
        )


@pytest.mark.parametrize(
    "note",
    [
        "no blank line\n" + DASH + " a QUJDREVGRw==\n",
        "text\n\n" + DASH + " a QUJDREVGRw==",  # no final newline
        "text\n\n",  # no signature
        "text\n\n- a QUJDREVGRw==\n",  # hyphen, not an em dash
        "text\n\n" + DASH + " a QUJDREVGRw== extra\n",
        "text\n\n" + DASH + " a+b QUJDREVGRw==\n",  # plus in the key name
        "text\n\n" + DASH + " a QUJD\n",  # shorter than key ID + 1 byte
        "text\n\n" + DASH + " a QUJDREVGRx==\n",  # non-canonical base64
        "text\n\n" + DASH + " a QUJDREVGRw\n",  # unpadded
        "te\rxt\n\n" + DASH + " a QUJDREVGRw==\n",  # control character
    ],
)
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(NoteError):
        SignedNote.parse(note)


def test_signature_count_is_bounded() -> None:
    line = f"{DASH} a QUJDREVGRw==\n"
    assert len(SignedNote.parse("t\n\n" + line * MAX_SIGNATURES).signatures) == MAX_SIGNATURES
    with pytest.raises(NoteError):
        SignedNote.parse("t\n\n" + line * (MAX_SIGNATURES + 1))


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(NoteError, match="UTF-8"):
        SignedNote.parse(b"\xff\n\n" + f"{DASH} a QUJDREVGRw==\n".encode())


@pytest.mark.parametrize(
    "text",
    [
        "only\ntwo\n",
        "origin\n05\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # leading zero
        "origin\n-5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n",  # 31 bytes
        "origin\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\nextension\n",  # empty line
        "origin\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # no final newline
        "\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # empty origin
        "origin\n9223372036854775808\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # 2**63
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(text)


def test_checkpoint_values_are_validated() -> None:
    root = leaf_hash(b"r")
    for call in (
        lambda: Checkpoint("", 1, root),
        lambda: Checkpoint("a\nb", 1, root),
        lambda: Checkpoint(ORIGIN, -1, root),
        lambda: Checkpoint(ORIGIN, 1, root[:31]),
        lambda: Checkpoint(ORIGIN, 1, root, ("",)),
    ):
        with pytest.raises(CheckpointError):
            call()


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key ID
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # 7 hex digits
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space
        "PeterNeumann+c74f20a3+AxpcB2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # type 0x03
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # short key
        "PeterNeumann+c74f20a3",
    ],
)
def test_malformed_vkeys_are_refused(vkey: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier.from_vkey(vkey)


def test_keys_outside_the_ecdsa_curves_are_refused() -> None:
    with pytest.raises(NoteError, match="curve"):
        NoteSigner(ORIGIN, ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(NoteError):
        NoteVerifier("bad name", ed25519.Ed25519PrivateKey.generate().public_key())


def test_repeated_verifiers_are_harmless_and_non_verifiers_refused() -> None:
    first = NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    signed = sign_note("text\n", [first])
    twin = NoteVerifier.from_vkey(first.verifier.vkey())
    assert signed.verify([first.verifier, twin]) == (first.verifier,)
    with pytest.raises(NoteError):
        signed.verify([first.verifier.vkey()])  # type: ignore[list-item]


def test_error_hierarchy() -> None:
    assert issubclass(NoteError, CaError)
    assert issubclass(CheckpointError, CaError)
    assert issubclass(InvalidNoteSignature, NoteError)
    assert issubclass(UnverifiedNote, NoteError)


# -- HSM-shaped key --------------------------------------------------------------------------------


class SignOnlyKey(ec.EllipticCurvePrivateKey):
    """Stands in for signer.keys.key.HsmEcPrivateKey: only sign() and public_key() work.

    Reason for a test double: the real key needs SoftHSM (integration tests); this proves
    ca.checkpoint asks nothing else of the key.
    """

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.calls: list[str] = []

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        self.calls.append("sign")
        assert isinstance(signature_algorithm, ec.ECDSA)
        assert isinstance(signature_algorithm.algorithm, hashes.SHA256)
        return self._key.sign(data, signature_algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        self.calls.append("public_key")
        return self._key.public_key()

    def _no(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ca.checkpoint must only call sign() and public_key()")

    exchange = private_numbers = private_bytes = __copy__ = __deepcopy__ = _no

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._no()

    @property
    def key_size(self) -> int:
        return self._no()


def test_hsm_shaped_key_signs_checkpoints() -> None:
    key = SignOnlyKey()
    signer = NoteSigner(ORIGIN, key)
    note = sign_checkpoint(checkpoint(3), signer)
    assert open_checkpoint(note, signer.verifier, ORIGIN) == checkpoint(3)
    assert set(key.calls) == {"sign", "public_key"}
