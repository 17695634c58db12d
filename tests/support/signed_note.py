"""An independent C2SP signed-note verifier for tests, written from the spec text, not from
``ca.checkpoint``: the text ends at the last blank line; each signature line is
"— <key name> <base64(4-byte key ID || signature)>"; for type 0x02 (transparency-dev ECDSA) the
key ID is SHA-256(DER SubjectPublicKeyInfo)[:4] and the signature is DER ECDSA over SHA-256
of the text."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def verify_note_independently(note: str, public_key: ec.EllipticCurvePublicKey, name: str) -> str:
    """The note's text, once exactly one signature by (``name``, key) verifies over it."""
    text, _, sigs = note.rpartition("\n\n")
    text += "\n"
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_id = hashlib.sha256(spki).digest()[:4]
    verified = 0
    for line in sigs.rstrip("\n").split("\n"):
        assert line.startswith("\u2014 ")
        signer, blob64 = line[2:].split(" ")
        blob = base64.b64decode(blob64, validate=True)
        if signer == name and blob[:4] == key_id:
            public_key.verify(blob[4:], text.encode(), ec.ECDSA(hashes.SHA256()))
            verified += 1
    assert verified == 1
    return text
