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

__all__ = [
    "ABSENT_TYP",
    "Unverified",
    "check_access_token",
    "check_claims",
    "check_header",
    "check_id_token_type",
    "normalize_typ",
    "numeric_date",
    "parse",
    "verify",
]

MAX_TOKEN_LENGTH: Final = 16 * 1024
#: How a configured list of accepted ``typ`` values names "no ``typ`` header".
ABSENT_TYP: Final = "absent"
#: OIDC Core §2 / §3.1.3.7: claims only an ID token carries; never in an access token.
_ID_TOKEN_CLAIMS: Final = ("nonce", "at_hash", "c_hash", "s_hash")
#: ``typ`` values an ID token may carry (OIDC Core does not require one).
_ID_TOKEN_TYPES: Final = frozenset({ABSENT_TYP, "jwt"})
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
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("malformed", "kid is not a string")
    return alg, kid


def normalize_typ(value: str) -> str:
    """RFC 7515 §4.1.9: ``typ`` is a media type, compared case-insensitively, and the
    ``application/`` prefix may be left out; ``at+jwt`` and ``application/at+JWT`` are one."""
    lowered = value.strip().lower()
    return lowered.removeprefix("application/")


def _typ(header: Mapping[str, Any]) -> str:
    typ = header.get("typ", None)
    if typ is None:
        return ABSENT_TYP
    if not isinstance(typ, str) or not typ.strip():
        raise InvalidToken("malformed", "typ is not a media type")
    return normalize_typ(typ)


def check_access_token(
    header: Mapping[str, Any], claims: Mapping[str, Any], accepted: frozenset[str]
) -> None:
    """RFC 9068 §4: a resource server accepts only tokens typed as access tokens.

    ``accepted`` holds normalized ``typ`` values (default ``at+jwt``; an issuer of
    workload-identity tokens may be configured for ``jwt`` or :data:`ABSENT_TYP`). A token with
    an ID-token claim (``nonce``, ``at_hash``, ``c_hash``, ``s_hash``; OIDC Core §2, §3.3.2.11)
    is an ID token whatever its ``typ`` says, and is refused: RFC 9068 §5 / RFC 8725 §3.11.
    """
    typ = _typ(header)
    if typ not in accepted:
        raise InvalidToken("not_access_token", f"typ {typ!r}")
    for name in _ID_TOKEN_CLAIMS:
        if name in claims:
            raise InvalidToken("not_access_token", f"carries {name}")


def check_id_token_type(header: Mapping[str, Any]) -> None:
    """OIDC Core §2: an ID token has no ``typ`` or ``JWT``; an ``at+jwt`` (RFC 9068 §2.1) or
    any other typed JWT is not an ID token (RFC 8725 §3.11, explicit typing)."""
    if _typ(header) not in _ID_TOKEN_TYPES:
        raise InvalidToken("malformed", "typ is not that of an ID token")


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
