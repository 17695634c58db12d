"""Signed checkpoints of the issued-certificate log: C2SP tlog-checkpoint inside a C2SP signed-note.

Formats, as specified at https://c2sp.org/signed-note (C2SP/C2SP ``signed-note.md``) and
https://c2sp.org/tlog-checkpoint (C2SP/C2SP ``tlog-checkpoint.md``)::

    <origin>\\n                       checkpoint body = the note text
    <tree size, decimal>\\n
    <base64 root hash>\\n
    [<extension line>\\n ...]
    \\n                               the last blank line separates text and signatures
    — <key name> <base64(4-byte key ID || signature)>\\n     (U+2014, space; one or more)

Verifier keys (the ``vkey`` strings of Go's ``golang.org/x/mod/sumdb/note``)::

    <key name>+<8 hex digits of the key ID>+<base64(signature type || public key)>

Signature types. signed-note assigns 0x01 to Ed25519 and 0x02 to "ECDSA signatures as
implemented by github.com/transparency-dev/witness" (curve P-256, P-384 or P-521, SHOULD be
P-256). Type 0x02 is not spelled out in C2SP; it is defined by its implementation,
transparency-dev/formats ``note/note_verifier.go`` ``NewECDSAVerifier`` (used by the witness
network to check Sigstore Rekor checkpoints) and Sigstore Rekor ``pkg/util/signed_note.go``:

==========  ===============================================  ==================================
type        key ID = first 4 bytes (big-endian) of            signature bytes
==========  ===============================================  ==================================
0x01        SHA-256(name || 0x0A || 0x01 || 32-byte key)      Ed25519 over the note text (64 B)
0x02        SHA-256(DER SubjectPublicKeyInfo)  (no name!)     DER ECDSA-Sig-Value over
                                                              SHA-256(note text), any curve
==========  ===============================================  ==================================

The public key in a type-0x02 vkey is the DER SubjectPublicKeyInfo. The log key lives in the
HSM as P-256 today, so the log signs with type 0x02, which Go's transparency-dev/formats
verifier, Sigstore's Rekor clients and this module check; an Ed25519 log key (type 0x01, what
Go's sumdb ``note`` package and most witnesses check) is supported the same way. Verification
follows signed-note "Signatures": signatures from unknown (name, key ID) pairs are ignored, a
failing signature from a known key rejects the whole note, and a note with no verified
signature is rejected. Like Go's ``note.Open``, at most 100 signatures are read (C2SP requires
accepting at least 16).

Pure: no I/O. Private keys are only asked for ``sign()`` and ``public_key()``, so the HSM's
``ec.EllipticCurvePrivateKey`` subclass works like an in-memory key. Base64 is RFC 4648 §4
with padding, decoded strictly (canonical encodings only); it is implemented here because
``ca/`` imports only cryptography-level libraries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ca.errors import CaError
from ca.merkle import HASH_SIZE, MAX_TREE_SIZE, TreeHead

__all__ = [
    "MAX_SIGNATURES",
    "SIGNATURE_TYPE_ECDSA",
    "SIGNATURE_TYPE_ED25519",
    "Checkpoint",
    "CheckpointError",
    "InvalidNoteSignature",
    "NoteError",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "SignedNote",
    "UnverifiedNote",
    "open_checkpoint",
    "open_note",
    "sign_checkpoint",
    "sign_note",
]

#: signed-note signature type of Ed25519 (RFC 8032) over the note text.
SIGNATURE_TYPE_ED25519 = 0x01
#: signed-note signature type of ECDSA over SHA-256 of the note text (transparency-dev/witness).
SIGNATURE_TYPE_ECDSA = 0x02
#: Most signature lines read from one note (Go ``note.Open``; C2SP requires at least 16).
MAX_SIGNATURES = 100

_DASH = "\u2014 "
_ECDSA_CURVES = frozenset({ec.SECP256R1.name, ec.SECP384R1.name, ec.SECP521R1.name})
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class NoteError(CaError):
    """A signed note, signature line, key name or verifier key is malformed."""


class InvalidNoteSignature(NoteError):
    """A signature from a trusted key does not verify: the whole note is rejected."""


class UnverifiedNote(NoteError):
    """No signature of the note comes from a trusted key (signed-note "Signatures")."""


class CheckpointError(CaError):
    """A checkpoint body is malformed or names another log (tlog-checkpoint "Note text")."""


# -- RFC 4648 §4 base64, strict ------------------------------------------------------------------

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_VALUE = {char: value for value, char in enumerate(_ALPHABET)}
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def _b64encode(data: bytes) -> str:
    pad = -len(data) % 3
    number = int.from_bytes(data + b"\0" * pad, "big")
    count = (len(data) + pad) // 3 * 4
    chars = [_ALPHABET[(number >> (6 * (count - 1 - i))) & 63] for i in range(count)]
    return "".join(chars[: count - pad]) + "=" * pad


def _b64decode(text: str, what: str) -> bytes:
    if not _BASE64.fullmatch(text):
        raise NoteError(f"{what}: not padded standard base64")
    pad = len(text) - len(text.rstrip("="))
    number = 0
    for char in text[: len(text) - pad] + "A" * pad:
        number = number << 6 | _VALUE[char]
    raw = number.to_bytes(len(text) // 4 * 3, "big")
    if pad and any(raw[-pad:]):
        raise NoteError(f"{what}: non-canonical base64")
    return raw[: len(raw) - pad]


# -- keys ----------------------------------------------------------------------------------------


def _check_name(name: object, what: str) -> str:
    """Key names: non-empty, no Unicode space, no plus (signed-note "Format")."""
    if not isinstance(name, str) or not name:
        raise NoteError(f"{what}: must be a non-empty string")
    if "+" in name or any(char.isspace() for char in name) or _CONTROL.search(name):
        raise NoteError(f"{what}: must not contain spaces, '+' or control characters")
    return name


def _sha256(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def _key_material(public_key: object) -> tuple[int, bytes]:
    """The signature type and the public key bytes that go into the key ID and the vkey."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return SIGNATURE_TYPE_ED25519, raw
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in _ECDSA_CURVES:
            raise NoteError(f"key: curve {public_key.curve.name} is not P-256, P-384 or P-521")
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return SIGNATURE_TYPE_ECDSA, der
    raise NoteError("key: must be an Ed25519 or NIST-curve EC key")


def _key_id(name: str, signature_type: int, key: bytes) -> int:
    if signature_type == SIGNATURE_TYPE_ECDSA:
        digest = _sha256(key)
    else:
        digest = _sha256(name.encode() + b"\n" + bytes([signature_type]) + key)
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted note key: its name and public key, with derived type and key ID.

    ``key_id`` follows signed-note's recommendation for Ed25519 and transparency-dev's
    definition for ECDSA (see the module docstring).
    """

    name: str
    public_key: PublicKey = field(repr=False)
    signature_type: int = field(init=False)
    key_id: int = field(init=False)
    _key_bytes: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "NoteVerifier.name")
        signature_type, key = _key_material(self.public_key)
        object.__setattr__(self, "signature_type", signature_type)
        object.__setattr__(self, "_key_bytes", key)
        object.__setattr__(self, "key_id", _key_id(self.name, signature_type, key))

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex key ID>+<base64(type || key)>``; the key ID must match the key."""
        if not isinstance(vkey, str):
            raise NoteError("vkey: must be a string")
        name, _, rest = vkey.partition("+")
        key_id_hex, _, key64 = rest.partition("+")
        if not _HEX8.fullmatch(key_id_hex):
            raise NoteError("vkey: key ID must be 8 hexadecimal digits")
        blob = _b64decode(key64, "vkey key")
        if len(blob) < 2:
            raise NoteError("vkey: key is too short")
        signature_type, key = blob[0], blob[1:]
        public_key: PublicKey
        try:
            if signature_type == SIGNATURE_TYPE_ED25519 and len(key) == 32:
                public_key = ed25519.Ed25519PublicKey.from_public_bytes(key)
            elif signature_type == SIGNATURE_TYPE_ECDSA:
                loaded = serialization.load_der_public_key(key)
                if not isinstance(loaded, ec.EllipticCurvePublicKey):
                    raise NoteError("vkey: type 0x02 needs an EC SubjectPublicKeyInfo")
                public_key = loaded
            else:
                raise NoteError(f"vkey: unsupported signature type 0x{signature_type:02x}")
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise NoteError("vkey: public key does not parse") from exc
        verifier = cls(_check_name(name, "vkey name"), public_key)
        if verifier._key_bytes != key:
            raise NoteError("vkey: public key is not in canonical DER")
        if verifier.key_id != int(key_id_hex, 16):
            raise NoteError("vkey: key ID does not match the key")
        return verifier

    def vkey(self) -> str:
        """This key as a verifier-key string, for configuration and publication."""
        blob = bytes([self.signature_type]) + self._key_bytes
        return f"{self.name}+{self.key_id:08x}+{_b64encode(blob)}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (without the key ID) is valid over the note ``text``."""
        try:
            if isinstance(self.public_key, ed25519.Ed25519PublicKey):
                self.public_key.verify(signature, text)
            else:
                self.public_key.verify(signature, text, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSigner:
    """A note key that signs: a name and an Ed25519 or EC private key (in memory or HSM)."""

    name: str
    private_key: PrivateKey = field(repr=False, compare=False)
    verifier: NoteVerifier = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise NoteError("NoteSigner.private_key: must be an Ed25519 or EC private key")
        object.__setattr__(self, "verifier", NoteVerifier(self.name, self.private_key.public_key()))

    def sign(self, text: bytes) -> NoteSignature:
        """Sign the note text: Ed25519 over it, or ECDSA over its SHA-256 (DER signature)."""
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            signature = self.private_key.sign(text)
        else:
            signature = self.private_key.sign(text, ec.ECDSA(hashes.SHA256()))
        return NoteSignature(self.name, self.verifier.key_id, signature)


# -- notes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: ``— <name> <base64(key ID || signature)>`` (signed-note "Format")."""

    name: str
    key_id: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_name(self.name, "NoteSignature.name")
        if not isinstance(self.key_id, int) or not 0 <= self.key_id < 2**32:
            raise NoteError("NoteSignature.key_id: must be a 32-bit unsigned integer")
        if not isinstance(self.signature, bytes) or not self.signature:
            raise NoteError("NoteSignature.signature: must be non-empty bytes")

    def line(self) -> str:
        """The signature line, newline included."""
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_DASH}{self.name} {_b64encode(blob)}\n"

    @classmethod
    def parse_line(cls, line: str) -> NoteSignature:
        """Parse one signature line without its newline."""
        if not line.startswith(_DASH):
            raise NoteError("signature line: must start with an em dash and a space")
        parts = line[len(_DASH) :].split(" ")
        if len(parts) != 2:
            raise NoteError("signature line: must be '— <key name> <base64>'")
        name, blob64 = parts
        blob = _b64decode(blob64, "signature")
        if len(blob) < 5:
            raise NoteError("signature line: shorter than a key ID and one signature byte")
        return cls(
            _check_name(name, "signature key name"), int.from_bytes(blob[:4], "big"), blob[4:]
        )


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise NoteError(f"{what}: must be a string")
    if not text.endswith("\n"):
        raise NoteError(f"{what}: must end with a newline")
    if _CONTROL.search(text):
        raise NoteError(f"{what}: must not contain control characters other than newline")
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise NoteError(f"{what}: must be valid Unicode") from exc
    return text


@dataclass(frozen=True)
class SignedNote:
    """A note text and its signatures, not necessarily verified (see :meth:`verify`)."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _check_text(self.text, "SignedNote.text")
        object.__setattr__(self, "signatures", tuple(self.signatures))
        if not self.signatures:
            raise NoteError("SignedNote.signatures: a note needs at least one signature")
        if len(self.signatures) > MAX_SIGNATURES:
            raise NoteError(f"SignedNote.signatures: more than {MAX_SIGNATURES}")
        for signature in self.signatures:
            if not isinstance(signature, NoteSignature):
                raise NoteError("SignedNote.signatures: must be NoteSignature values")

    def to_text(self) -> str:
        """The note: text, a blank line, one line per signature."""
        return self.text + "\n" + "".join(signature.line() for signature in self.signatures)

    @classmethod
    def parse(cls, note: str | bytes) -> SignedNote:
        """Split a note at its last blank line and parse the signature lines (no verification)."""
        if isinstance(note, bytes):
            try:
                note = note.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise NoteError("note: not valid UTF-8") from exc
        if not isinstance(note, str):
            raise NoteError("note: must be str or bytes")
        if _CONTROL.search(note):
            raise NoteError("note: must not contain control characters other than newline")
        split = note.rfind("\n\n")
        if split < 0:
            raise NoteError("note: no blank line before the signatures")
        text, block = note[: split + 1], note[split + 2 :]
        if not block.endswith("\n"):
            raise NoteError("note: signature block must end with a newline")
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise NoteError(f"note: more than {MAX_SIGNATURES} signatures")
        return cls(text, tuple(NoteSignature.parse_line(line) for line in lines))

    def verify(self, verifiers: Iterable[NoteVerifier]) -> tuple[NoteVerifier, ...]:
        """The trusted keys that signed this note, under signed-note "Signatures" rules.

        Signatures from unknown (name, key ID) pairs are ignored; a known key's signature that
        fails raises :class:`InvalidNoteSignature`; no verified signature raises
        :class:`UnverifiedNote`.
        """
        known: dict[tuple[str, int], NoteVerifier] = {}
        for trusted in verifiers:
            if not isinstance(trusted, NoteVerifier):
                raise NoteError("verifiers: must be NoteVerifier values")
            if known.setdefault((trusted.name, trusted.key_id), trusted) != trusted:
                raise NoteError(f"verifiers: two keys named {trusted.name} share a key ID")
        text = self.text.encode()
        verified: list[NoteVerifier] = []
        for signature in self.signatures:
            verifier = known.get((signature.name, signature.key_id))
            if verifier is None or verifier in verified:
                continue
            if not verifier.verify(text, signature.signature):
                raise InvalidNoteSignature(f"signature by {signature.name} does not verify")
            verified.append(verifier)
        if not verified:
            raise UnverifiedNote("no signature from a trusted key")
        return tuple(verified)


def sign_note(text: str, signers: Sequence[NoteSigner]) -> SignedNote:
    """Sign ``text`` (ending in a newline, no other control characters) with every signer."""
    _check_text(text, "text")
    if not signers:
        raise NoteError("signers: at least one is needed")
    data = text.encode()
    return SignedNote(text, tuple(signer.sign(data) for signer in signers))


def open_note(note: str | bytes, verifiers: Iterable[NoteVerifier]) -> SignedNote:
    """Parse ``note`` and check it is signed by at least one of ``verifiers``; return it."""
    parsed = SignedNote.parse(note)
    parsed.verify(verifiers)
    return parsed


# -- checkpoints ---------------------------------------------------------------------------------


def _check_line(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise CheckpointError(f"{what}: must be a non-empty string")
    if "\n" in value or _CONTROL.search(value):
        raise CheckpointError(f"{what}: must be one line without control characters")
    return value


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head as a tlog-checkpoint note text (C2SP tlog-checkpoint "Note text").

    ``origin`` identifies the log (SHOULD be a schema-less URL and match the key name); the
    root hash is ``MTH`` of the first ``size`` entries (RFC 9162 §2.1.1); extension lines are
    opaque and NOT RECOMMENDED.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "Checkpoint.origin")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise CheckpointError("Checkpoint.size: must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError("Checkpoint.size: must be in [0, 2**63 - 1]")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"Checkpoint.root_hash: must be {HASH_SIZE} bytes")
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for line in self.extensions:
            _check_line(line, "Checkpoint.extensions")

    @classmethod
    def from_tree_head(cls, origin: str, head: TreeHead) -> Checkpoint:
        return cls(origin, head.size, head.root)

    @property
    def tree_head(self) -> TreeHead:
        """The tree head for Merkle proofs (:mod:`ca.merkle`)."""
        return TreeHead(self.size, self.root_hash)

    def text(self) -> str:
        """The note text: origin, size, base64 root hash, extensions, each ending in newline."""
        lines = (self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions)
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a note text (already verified) into a checkpoint."""
        if not isinstance(text, str) or not text.endswith("\n"):
            raise CheckpointError("checkpoint: must be text ending in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint: needs origin, size and root hash lines")
        if any(not line for line in lines):
            raise CheckpointError("checkpoint: lines must not be empty")
        origin, size, root64, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise CheckpointError("checkpoint: size must be decimal without leading zeroes")
        try:
            root = _b64decode(root64, "checkpoint root hash")
        except NoteError as exc:
            raise CheckpointError(str(exc)) from exc
        return cls(origin, int(size), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The checkpoint as a signed note, signed by the log key ``signer``."""
    if not isinstance(checkpoint, Checkpoint):
        raise CheckpointError("checkpoint: must be a Checkpoint")
    return sign_note(checkpoint.text(), (signer,)).to_text()


def open_checkpoint(note: str | bytes, verifier: NoteVerifier, origin: str) -> Checkpoint:
    """Verify ``note`` with the log key and return its checkpoint, which must name ``origin``.

    Other signatures (witness cosignatures, rotated keys) are ignored. Raises
    :class:`NoteError` (or a subclass) for a note the log key did not sign and
    :class:`CheckpointError` for a body that is not a checkpoint of ``origin``.
    """
    checkpoint = Checkpoint.parse(open_note(note, (verifier,)).text)
    if checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint: origin {checkpoint.origin!r} is not {origin!r}")
    return checkpoint
