"""JWS parsing, signature and registered-claim checks for JWT bearer tokens.

RFC 7515 §5.2 (compact JWS validation), RFC 7519 §7.2 (JWT validation) and §4.1 (registered
claims), RFC 9068 §4 (JWT access tokens), OIDC Core §3.1.3.7 (ID token checks).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from joserfc.errors import JoseError
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry

from .errors import InvalidToken

__all__ = ["Unverified", "check_claims", "check_header", "numeric_date", "parse", "verify"]

MAX_TOKEN_LENGTH: Final = 16 * 1024
#: RFC 7515 §4.1.9 / RFC 9068 §2.1: ``typ`` values we accept (case-insensitive).
_TYPES: Final = frozenset({"jwt", "application/jwt", "at+jwt", "application/at+jwt"})
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Unverified:
    """A parsed but not yet verified compact JWS whose payload is a JSON object."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


def _b64(segment: str) -> bytes:
    if not _B64URL.fullmatch(segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """RFC 7515 §5.2 / RFC 7519 §4: duplicate member names are rejected, not guessed at."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member name")
    return out


def _json_object(segment: str) -> dict[str, Any]:
    value = json.loads(_b64(segment), object_pairs_hook=_no_duplicates)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def parse(token: str) -> Unverified:
    """Split and decode a compact JWS (three segments; JWE and JSON serialization refused)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("malformed", "not a string or too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed", "not a compact JWS")
    try:
        header = _json_object(parts[0])
        claims = _json_object(parts[1])
        signature = _b64(parts[2])
    except (ValueError, UnicodeError, binascii.Error, RecursionError) as exc:
        raise InvalidToken("malformed", type(exc).__name__) from exc
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return Unverified(header, claims, signing_input, signature)


def check_header(header: Mapping[str, Any]) -> tuple[str, str | None]:
    """Return ``(alg, kid)``. ``none`` and HMAC are refused before any key is looked up
    (RFC 8725 §3.1-3.2); ``crit``/``b64`` extensions are not understood (RFC 7515 §4.1.11)."""
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidToken("malformed", "alg missing")
    if alg.lower() == "none" or alg.upper().startswith("HS"):
        raise InvalidToken("alg_not_allowed", alg)
    if "crit" in header or "b64" in header or "enc" in header:
        raise InvalidToken("malformed", "unsupported header extension")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYPES):
        raise InvalidToken("malformed", "unexpected typ")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("malformed", "kid is not a string")
    return alg, kid


def verify(token: Unverified, alg: str, key: Key) -> None:
    """Check the signature (RFC 7515 §5.2 step 8) with a key already matched to ``alg``."""
    model = JWSRegistry.algorithms.get(alg)
    if model is None:
        raise InvalidToken("alg_not_allowed", alg)
    try:
        model.check_key(key)
        valid = model.verify(token.signing_input, token.signature, key)
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidToken("bad_signature", type(exc).__name__) from exc
    if not valid:
        raise InvalidToken("bad_signature")


def numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    """An RFC 7519 §2 NumericDate claim, or None when absent and optional."""
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidToken("missing_claim", name)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken("malformed", f"{name} is not a NumericDate")
    return float(value)


def check_claims(
    claims: Mapping[str, Any], *, issuer: str, audience: str, now: datetime, leeway: timedelta
) -> datetime:
    """RFC 7519 §4.1 / RFC 9068 §4 checks; return ``exp`` as an aware datetime.

    ``iss`` exact; ``aud`` (string or array) contains ``audience``; ``sub``, ``exp`` and
    ``iat`` present; ``now < exp + leeway``; ``nbf <= now + leeway``; ``iat <= now + leeway``.
    """
    if claims.get("iss") != issuer:
        raise InvalidToken("unknown_issuer")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("missing_claim", "sub")
    aud = claims.get("aud")
    if aud is None:
        raise InvalidToken("missing_claim", "aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or audience not in audiences:
        raise InvalidToken("bad_audience")
    t, skew = now.timestamp(), leeway.total_seconds()
    exp = numeric_date(claims, "exp", required=True)
    iat = numeric_date(claims, "iat", required=True)
    nbf = numeric_date(claims, "nbf", required=False)
    assert exp is not None and iat is not None
    if t >= exp + skew:
        raise InvalidToken("expired")
    if nbf is not None and nbf > t + skew:
        raise InvalidToken("not_yet_valid")
    if iat > t + skew:
        raise InvalidToken("issued_in_future")
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidToken("malformed", "exp out of range") from exc
