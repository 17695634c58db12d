"""Minimal DER for the envelopes of CMS and RFC 3161 structures (ITU-T X.690 §8.1, §10, §11).

Time-stamp tokens and CMS signatures wrap large values that already exist as DER: certificates,
a time-stamp token, signed attributes that were just signed. asn1crypto re-parses and
re-encodes such values when they are placed into a structure (re-tagging copies them, and a
loaded value whose header ends in 0x80 is re-encoded in full), which can cost ten times the
signature. So the small values are encoded by asn1crypto from Python data, and these functions
wrap DER parts without parsing them. Lengths are definite and minimal (X.690 §10.1) and the
elements of a SET OF are sorted (X.690 §11.6); independent parsers (OpenSSL, pyHanko,
rfc3161-client) check the result in the tests.
"""

from __future__ import annotations

__all__ = ["explicit", "implicit", "sequence", "set_of", "tlv"]

_SEQUENCE = 0x30
_SET = 0x31
_CONTEXT_CONSTRUCTED = 0xA0


def tlv(tag: int, *parts: bytes) -> bytes:
    """One DER element with a single-octet ``tag`` and the concatenated ``parts`` as content."""
    if not 0 <= tag <= 0xFF or tag & 0x1F == 0x1F:
        raise ValueError("tag: only single-octet tags (numbers below 31)")
    content = b"".join(parts)
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def sequence(*parts: bytes) -> bytes:
    """SEQUENCE { parts... } in the given order."""
    return tlv(_SEQUENCE, *parts)


def set_of(*parts: bytes) -> bytes:
    """SET OF { parts... }, elements sorted as DER requires (X.690 §11.6)."""
    return tlv(_SET, *sorted(parts))


def explicit(number: int, element: bytes) -> bytes:
    """``[number] EXPLICIT``: the whole element wrapped in a constructed context tag."""
    return tlv(_context(number), element)


def implicit(number: int, element: bytes) -> bytes:
    """``[number] IMPLICIT`` of a constructed element (SET OF, SEQUENCE): its tag replaced."""
    if not element or not element[0] & 0x20:
        raise ValueError("element: must be a constructed DER element")
    return bytes((_context(number),)) + element[1:]


def _context(number: int) -> int:
    if not 0 <= number < 31:
        raise ValueError("number: context tags below 31 only")
    return _CONTEXT_CONSTRUCTED | number
