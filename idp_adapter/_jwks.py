"""Discovery and the per-issuer JWKS cache.

OIDC Discovery 1.0 §4 (``{issuer}/.well-known/openid-configuration``; §4.3 the returned
``issuer`` must equal the configured one exactly), RFC 7517 §5 (JWK Set), RFC 9111 §5.2.2.1
(``Cache-Control: max-age``), OIDC Core §10.1.1 (rotation: refetch on an unknown ``kid``).

The JWKS is parsed once per fetch into an index of ready-to-use joserfc keys, so verifying a
token costs a dict look-up, not a parse. Fetches are single-flight (concurrent misses share one
request); unknown-``kid`` refetches, and retries after a failed fetch, are rate-limited per
issuer. No lock is held while a
token is verified: the index is an immutable value swapped in whole.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import aiohttp
from joserfc.errors import JoseError
from joserfc.jwk import Key, import_key

from .errors import IdpUnavailable
from .settings import IssuerSettings, check_url

__all__ = ["IndexedKey", "JwksCache", "KeyIndex", "algorithms_for"]

DEFAULT_MAX_AGE: Final = timedelta(seconds=300)
MIN_MAX_AGE: Final = timedelta(seconds=30)
MAX_MAX_AGE: Final = timedelta(hours=24)
_MAX_BODY: Final = 256 * 1024
_TIMEOUT: Final = aiohttp.ClientTimeout(total=10)
_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-maxage|max-age)\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*no-(?:store|cache)\b", re.IGNORECASE)

_EC_ALG: Final = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_RSA_ALGS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_OKP_ALGS: Final = {
    "Ed25519": frozenset({"EdDSA", "Ed25519"}),
    "Ed448": frozenset({"EdDSA", "Ed448"}),
}


def algorithms_for(jwk: Mapping[str, Any]) -> frozenset[str]:
    """The JWS ``alg`` values (RFC 7518 §3, RFC 8037 §3.1, RFC 9864) a public JWK can verify.

    ``kty``/``crv`` decide; a JWK ``alg`` (RFC 7517 §4.4) narrows further. Symmetric (``oct``)
    and unknown keys verify nothing, so HMAC with a public key can never be selected.
    """
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "EC" and isinstance(crv, str) and crv in _EC_ALG:
        algs = frozenset({_EC_ALG[crv]})
    elif kty == "RSA":
        algs = _RSA_ALGS
    elif kty == "OKP" and isinstance(crv, str) and crv in _OKP_ALGS:
        algs = _OKP_ALGS[crv]
    else:
        return frozenset()
    declared = jwk.get("alg")
    return algs & {declared} if declared is not None else algs


@dataclass(frozen=True)
class IndexedKey:
    """A usable public key of a JWK Set: the ``alg`` values it may verify, the joserfc key,
    and its RFC 7638 thumbprint (what a cached verification remembers it was made with)."""

    algorithms: frozenset[str]
    key: Key
    thumbprint: str


@dataclass(frozen=True)
class KeyIndex:
    """An immutable, parsed JWK Set: ``kid`` -> keys, plus the thumbprints of all of them."""

    by_kid: Mapping[str, tuple[IndexedKey, ...]]
    anonymous: tuple[IndexedKey, ...]
    expires_at: datetime
    thumbprints: frozenset[str] = frozenset()

    def find(self, kid: str | None, alg: str) -> IndexedKey | None:
        """The key for ``kid`` that can verify ``alg``; without ``kid`` only an unambiguous one."""
        if kid is None:
            everything = (*self.anonymous, *(k for ks in self.by_kid.values() for k in ks))
            fits = [k for k in everything if alg in k.algorithms]
            return fits[0] if len(fits) == 1 else None
        return next((k for k in self.by_kid.get(kid, ()) if alg in k.algorithms), None)

    @classmethod
    def parse(cls, document: Any, expires_at: datetime) -> KeyIndex:
        """Index the signature keys of a JWK Set; skip keys we cannot or must not use."""
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise IdpUnavailable("JWKS is not a JWK Set")
        by_kid: dict[str, list[IndexedKey]] = {}
        anonymous: list[IndexedKey] = []
        for raw in document["keys"]:
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig" or "d" in raw:
                continue
            algs = algorithms_for(raw)
            kid = raw.get("kid")
            if not algs or not isinstance(kid, str | None):
                continue
            try:
                key = import_key(raw)
                entry = IndexedKey(algs, key, key.thumbprint())
            except (JoseError, ValueError, TypeError):
                continue
            (anonymous if kid is None else by_kid.setdefault(kid, [])).append(entry)
        frozen = {kid: tuple(keys) for kid, keys in by_kid.items()}
        prints = frozenset(k.thumbprint for k in (*anonymous, *_flat(frozen)))
        return cls(frozen, tuple(anonymous), expires_at, prints)


def _flat(by_kid: Mapping[str, tuple[IndexedKey, ...]]) -> list[IndexedKey]:
    return [entry for entries in by_kid.values() for entry in entries]


def max_age(cache_control: str | None) -> timedelta:
    """Freshness from ``Cache-Control`` (RFC 9111 §5.2.2.1), clamped to 30 s .. 24 h."""
    if cache_control is None:
        return DEFAULT_MAX_AGE
    if _NO_CACHE.search(cache_control):
        return MIN_MAX_AGE
    match = _MAX_AGE.search(cache_control)
    if match is None:
        return DEFAULT_MAX_AGE
    seconds = timedelta(seconds=min(int(match.group(1)), 10**7))
    return max(MIN_MAX_AGE, min(MAX_MAX_AGE, seconds))


class JwksCache:
    """The keys of one issuer, fetched lazily, cached, refreshed single-flight."""

    def __init__(
        self,
        settings: IssuerSettings,
        http: aiohttp.ClientSession,
        clock: Callable[[], datetime],
        min_refetch: timedelta,
    ) -> None:
        self._settings = settings
        self._http = http
        self._clock = clock
        self._min_refetch = min_refetch
        self._jwks_uri = settings.jwks_uri
        self._index: KeyIndex | None = None
        self._inflight: asyncio.Future[KeyIndex] | None = None
        self._last_fetch: datetime | None = None
        self._failed_at: datetime | None = None
        #: completed JWKS fetches (observability and tests)
        self.fetches = 0

    def publishes(self, thumbprint: str) -> bool:
        """Whether the key set as last fetched is still fresh and still holds this key.

        A verification cached with a key ends the moment a fetch shows the issuer no longer
        publishes it (rotation, OIDC Core §10.1.1), and whenever the set is stale."""
        index = self._index
        return (
            index is not None
            and self._clock() < index.expires_at
            and thumbprint in index.thumbprints
        )

    async def key(self, kid: str | None, alg: str) -> IndexedKey | None:
        """The verification key for ``kid``/``alg``, or None when the JWKS has none.

        A fresh index is used as is; a stale or missing one is refetched. An unknown ``kid``
        triggers one refetch, unless another happened within ``min_refetch`` (rate limit).

        :raises IdpUnavailable: the JWKS (or discovery) could not be fetched.
        """
        index = self._index
        if index is None or self._clock() >= index.expires_at:
            index = await self._refresh()
        key = index.find(kid, alg)
        if key is None and self._may_refetch():
            key = (await self._refresh()).find(kid, alg)
        return key

    def _may_refetch(self) -> bool:
        if self._inflight is not None or self._last_fetch is None:
            return True
        return self._clock() - self._last_fetch >= self._min_refetch

    async def _refresh(self) -> KeyIndex:
        if self._inflight is None:
            now = self._clock()
            if self._failed_at is not None and now - self._failed_at < self._min_refetch:
                # back off: a down IdP is not asked again for every token
                raise IdpUnavailable(f"JWKS of {self._settings.name}: recent fetch failed")
            self._last_fetch = now
            future = asyncio.ensure_future(self._fetch())
            future.add_done_callback(self._done)
            self._inflight = future
        return await asyncio.shield(self._inflight)

    def _done(self, future: asyncio.Future[KeyIndex]) -> None:
        self._inflight = None
        if future.cancelled():
            return
        if future.exception() is None:
            self._index, self._failed_at = future.result(), None
        else:
            self._failed_at = self._clock()

    async def _fetch(self) -> KeyIndex:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        document, cache_control = await self._get_json(self._jwks_uri)
        index = KeyIndex.parse(document, self._clock() + max_age(cache_control))
        self.fetches += 1
        return index

    async def _discover(self) -> str:
        """OIDC Discovery 1.0 §4: the ``jwks_uri`` of an issuer whose ``issuer`` matches."""
        url = self._settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document, _ = await self._get_json(url)
        if not isinstance(document, dict) or document.get("issuer") != self._settings.issuer:
            raise IdpUnavailable(f"discovery for {self._settings.name}: issuer mismatch")
        jwks_uri = document.get("jwks_uri")
        try:
            if not isinstance(jwks_uri, str):
                raise ValueError("jwks_uri missing")
            check_url(jwks_uri, "jwks_uri")
        except ValueError as exc:
            raise IdpUnavailable(f"discovery for {self._settings.name}: {exc}") from exc
        return jwks_uri

    async def _get_json(self, url: str) -> tuple[Any, str | None]:
        try:
            async with self._http.get(url, timeout=_TIMEOUT, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise IdpUnavailable(f"GET {url}: HTTP {resp.status}")
                body = await resp.content.read(_MAX_BODY + 1)
                if len(body) > _MAX_BODY:
                    raise IdpUnavailable(f"GET {url}: response too large")
                return _loads(body, url), resp.headers.get("Cache-Control")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IdpUnavailable(f"GET {url}: {type(exc).__name__}") from exc


def _loads(body: bytes, url: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise IdpUnavailable(f"GET {url}: not JSON") from exc
