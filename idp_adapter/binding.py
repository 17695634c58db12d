"""Sender-constrained access tokens: DPoP proofs (RFC 9449) and certificate binding (RFC 8705).

Pure checks with an injected clock; the one-time use of a proof's ``jti`` is
:meth:`idp_adapter.registry.IssuerRegistry.check_sender`'s (it holds the replay guard).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import import_key

from ._verify import normalize_typ, parse, verify
from .errors import InvalidProof, InvalidToken

__all__ = [
    "DPOP_TYP",
    "NonceSource",
    "Presented",
    "Proof",
    "access_token_hash",
    "certificate_thumbprint",
    "check_proof",
    "random_nonce_secret",
]

DPOP_TYP: Final = "dpop+jwt"
#: A proof's ``jti`` is client text kept in the replay store: bounded (RFC 9449 §4.2 asks for
#: at least 96 bits of randomness, i.e. 16+ base64url characters).
_MAX_JTI: Final = 256
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Presented:
    """How a request presented its access token: the ``Authorization`` scheme, the ``DPoP``
    header values, the method and URL the client addressed, and the TLS client certificate."""

    scheme: Literal["bearer", "dpop"]
    token: str
    proofs: tuple[str, ...] = ()
    method: str = "GET"
    url: str = ""
    client_certificate: bytes | None = None


@dataclass(frozen=True)
class Proof:
    """A DPoP proof that passed every stateless check of RFC 9449 §4.3."""

    jkt: str
    jti: str
    iat: float
    nonce: str | None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url of the SHA-256 of the access token's ASCII."""
    return _b64url(hashlib.sha256(token.encode("ascii")).digest())


def certificate_thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1 ``x5t#S256``: base64url of the SHA-256 of the DER certificate."""
    return _b64url(hashlib.sha256(der).digest())


def _normalized(url: str) -> tuple[str, str, int | None, str]:
    """RFC 9449 §4.3 step 9: compare without query and fragment, after RFC 3986 §6.2.2-6.2.3
    normalization (case of scheme and host, default port, empty path)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ("", "", None, "")
    scheme = parts.scheme.lower()
    return (scheme, (parts.hostname or ""), port or _DEFAULT_PORTS.get(scheme), parts.path or "/")


def check_proof(
    proof: str,
    *,
    algorithms: tuple[str, ...],
    method: str,
    url: str,
    access_token: str,
    now: datetime,
    max_age: timedelta,
    leeway: timedelta,
) -> Proof:
    """RFC 9449 §4.3 steps 2-11 for a proof sent with an access token (§7.1): a compact JWS
    with ``typ: dpop+jwt``, an allowed asymmetric ``alg``, a public ``jwk`` that verifies it,
    ``htm``/``htu`` of this request, ``iat`` within ``max_age`` (± ``leeway``), a ``jti``, and
    ``ath`` of the access token. The nonce, if any, is returned for the caller to check.

    :raises InvalidProof: with a stable reason.
    """
    try:
        unverified = parse(proof)
    except InvalidToken as exc:
        raise InvalidProof("malformed", str(exc)) from exc
    header, claims = unverified.header, unverified.claims
    typ = header.get("typ")
    if not isinstance(typ, str) or normalize_typ(typ) != DPOP_TYP:
        raise InvalidProof("bad_type")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise InvalidProof("alg_not_allowed", str(alg))
    if "crit" in header or "b64" in header:
        raise InvalidProof("malformed", "unsupported header extension")
    key = _public_key(header.get("jwk"))
    try:
        verify(unverified, alg, key)
    except InvalidToken as exc:
        raise InvalidProof("bad_signature") from exc
    _check_claims(claims, method=method, url=url, access_token=access_token)
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise InvalidProof("malformed", "iat is not a NumericDate")
    t, skew = now.timestamp(), leeway.total_seconds()
    if not t - max_age.total_seconds() - skew <= iat <= t + skew:
        raise InvalidProof("stale", "iat outside the accepted window")
    nonce = claims.get("nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise InvalidProof("malformed", "nonce is not a string")
    return Proof(key.thumbprint(), claims["jti"], float(iat), nonce)


def _public_key(jwk: object) -> Any:
    """The proof's ``jwk`` header: a public asymmetric key (RFC 9449 §4.3 step 7)."""
    if not isinstance(jwk, Mapping) or jwk.get("kty") not in ("EC", "RSA", "OKP"):
        raise InvalidProof("bad_key", "jwk is not a public asymmetric key")
    if any(name in jwk for name in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise InvalidProof("bad_key", "jwk holds private key material")
    try:
        key = import_key(dict(jwk))
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidProof("bad_key", type(exc).__name__) from exc
    if key.is_private:
        raise InvalidProof("bad_key", "jwk is private")
    return key


def _check_claims(claims: Mapping[str, Any], *, method: str, url: str, access_token: str) -> None:
    if claims.get("htm") != method:
        raise InvalidProof("wrong_method")
    htu = claims.get("htu")
    if not isinstance(htu, str) or _normalized(htu) != _normalized(url):
        raise InvalidProof("wrong_url")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
        raise InvalidProof("malformed", "jti missing or too long")
    ath = claims.get("ath")
    expected = access_token_hash(access_token)
    if not isinstance(ath, str) or not hmac.compare_digest(ath.encode(), expected.encode()):
        raise InvalidProof("bad_ath")


class NonceSource:
    """Server-provided DPoP nonces (RFC 9449 §9) without shared state: a nonce is a time slot
    and its HMAC under a secret all replicas share, valid in its slot and the next one."""

    def __init__(
        self,
        secret: bytes,
        clock: Callable[[], datetime],
        lifetime: timedelta = timedelta(minutes=5),
    ) -> None:
        self._key = hmac.new(secret, b"qes-signer dpop nonce", hashlib.sha256).digest()
        self._clock = clock
        self._slot = max(1, int(lifetime.total_seconds()))

    def _for(self, slot: int) -> str:
        mac = hmac.new(self._key, slot.to_bytes(8, "big"), hashlib.sha256).digest()[:16]
        return _b64url(json.dumps(slot).encode()) + "." + _b64url(mac)

    def _slot_now(self) -> int:
        return int(self._clock().timestamp()) // self._slot

    def issue(self) -> str:
        return self._for(self._slot_now())

    def valid(self, nonce: str | None) -> bool:
        if nonce is None:
            return False
        now = self._slot_now()
        return any(hmac.compare_digest(nonce, self._for(slot)) for slot in (now, now - 1))


def random_nonce_secret() -> bytes:
    """For a single process (tests): replicas must share the secret."""
    return secrets.token_bytes(32)
