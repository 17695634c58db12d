"""The one place where configured issuers are looked up and bearer tokens verified."""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from ._jwks import JwksCache
from ._mapping import build_principal, claims_match, ungranted_roles
from ._verify import (
    Unverified,
    check_access_token,
    check_claims,
    check_header,
    check_id_token_type,
    numeric_date,
    parse,
    verify,
)
from .binding import NonceSource, Presented, certificate_thumbprint, check_proof
from .errors import ConfigError, IdentityNotAllowed, IdpError, InvalidProof, InvalidToken
from .principal import Principal
from .replay import ReplayGuard
from .settings import ALWAYS, IssuerSettings

__all__ = ["IgnoredRoles", "IssuerRegistry"]

#: Verified bearer tokens kept (LRU) so that a reused token skips its signature check.
VERIFIED_TOKEN_CACHE = 4096

#: Told of role/group values a verified token claimed from an issuer not trusted to grant them:
#: ``(issuer name, subject, values)``. The signer logs it; the values are not counted.
IgnoredRoles = Callable[[str, str, frozenset[str]], None]


@dataclass(frozen=True)
class _Verified:
    """A verified token: its issuer entry, claims, ``exp``, and the key's RFC 7638 thumbprint."""

    settings: IssuerSettings
    claims: Mapping[str, Any]
    expires_at: datetime
    thumbprint: str


@dataclass(frozen=True)
class _Cached:
    principal: Principal
    deadline: float
    issuer: str
    thumbprint: str


class IssuerRegistry:
    """Verifies JWT bearer tokens (RFC 9068 access tokens, workload-identity JWTs) from the
    configured issuers. One instance per process and event loop; no I/O in ``__init__``.

    ``clock`` returns timezone-aware datetimes. ``replay`` is needed by
    :meth:`start_operation` for issuers with ``require_jti`` (on by default) and for DPoP
    proofs. ``jwks_min_refetch`` rate-limits unknown-``kid`` refetches per issuer.
    ``on_ignored_roles`` is told of role claims from issuers not trusted to grant them.
    """

    def __init__(
        self,
        issuers: Sequence[IssuerSettings],
        http: aiohttp.ClientSession,
        clock: Callable[[], datetime],
        replay: ReplayGuard | None = None,
        *,
        jwks_min_refetch: timedelta = timedelta(seconds=10),
        on_ignored_roles: IgnoredRoles | None = None,
    ) -> None:
        by_issuer: dict[str, list[IssuerSettings]] = {}
        for s in issuers:
            by_issuer.setdefault(s.issuer, []).append(s)
        for group in by_issuer.values():
            if len({s.jwks_uri for s in group}) != 1:
                raise ConfigError(f"issuers.{group[1].name}: jwks_uri differs for one issuer")
            if any(not s.match_claims for s in group[:-1]):
                raise ConfigError(
                    f"issuers: {group[0].issuer} has several entries; all but the last "
                    "need match_claims"
                )
        if len({s.name for s in issuers}) != len(issuers):
            raise ConfigError("issuers: the same name is used twice")
        if replay is None and any(s.require_jti == ALWAYS for s in issuers):
            raise ConfigError("issuers: require_jti needs a ReplayGuard")
        self._clock = clock
        self._replay = replay
        self._on_ignored_roles = on_ignored_roles
        self._verified_tokens: OrderedDict[bytes, _Cached] = OrderedDict()
        self._entries = {iss: tuple(group) for iss, group in by_issuer.items()}
        self._by_name = {s.name: s for s in issuers}
        self._jwks = {
            iss: JwksCache(group[0], http, clock, jwks_min_refetch)
            for iss, group in by_issuer.items()
        }

    @property
    def issuers(self) -> tuple[IssuerSettings, ...]:
        """The configured issuers, in configuration order."""
        return tuple(s for group in self._entries.values() for s in group)

    def jwks_fetches(self, issuer_name: str) -> int:
        """How many JWKS documents were fetched for an issuer (observability)."""
        for settings in self.issuers:
            if settings.name == issuer_name:
                return self._jwks[settings.issuer].fetches
        raise KeyError(issuer_name)

    async def verify_bearer(self, token: str) -> Principal:
        """Verify a JWT bearer token and map it to a :class:`Principal`.

        RFC 9068 §4 / RFC 7519 §7.2: parse; refuse ``none``/HMAC; pick the issuer by the
        (unverified) ``iss``; ``alg`` on the issuer's allow-list; key by ``kid`` from the
        issuer's JWKS (RFC 7517); signature; ``iss``/``aud``/``exp``/``nbf``/``iat``/``sub``;
        ``typ`` one of the issuer's ``token_types`` (``at+jwt``) and no ID-token claim;
        subject mapping and ``required_claims``. Verifying never consumes the ``jti``: a
        token may poll, list and watch freely; :meth:`start_operation` spends it.

        :raises InvalidToken: with a stable ``reason``.
        :raises IdentityNotAllowed: valid token, identity not acceptable.
        :raises IdpUnavailable: discovery/JWKS unreachable or invalid.
        """
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._still_valid(digest)
        if cached is not None:
            return cached
        unverified = parse(token)
        found = await self._verified(unverified, audience=None)
        check_access_token(unverified.header, found.claims, found.settings.token_types)
        principal = self._principal(found)
        self._remember(digest, principal, found)
        return principal

    async def start_operation(self, principal: Principal, idempotency_key: str | None) -> None:
        """RFC 7519 §4.1.7 one-time use, per signing operation rather than per request: a
        token's ``jti`` starts one signing operation. With an ``Idempotency-Key`` the key is
        the operation (the caller's idempotency record, bound to issuer, subject and key, makes
        it single-use and replays its answer), so the ``jti`` is not spent. Issuers with
        ``require_jti`` off are not checked; a token without ``jti`` passes unless the issuer
        says ``require_jti = "always"``.

        :raises InvalidToken: ``replayed`` (or ``missing_claim`` under ``"always"``).
        """
        settings = self._by_name.get(principal.issuer_name)
        if settings is None or settings.require_jti is False or idempotency_key is not None:
            return
        if not principal.token_id:
            if settings.require_jti == ALWAYS:
                raise InvalidToken("missing_claim", "jti")
            return
        await self._consume(settings.issuer, principal)

    def _principal(self, found: _Verified) -> Principal:
        principal = build_principal(found.settings, found.claims, found.expires_at)
        ignored = ungranted_roles(found.settings, found.claims)
        if ignored and self._on_ignored_roles is not None:
            self._on_ignored_roles(found.settings.name, principal.subject, ignored)
        return principal

    async def check_sender(
        self, principal: Principal, presented: Presented, nonces: NonceSource | None = None
    ) -> None:
        """Sender-constrained tokens: a token bound to a DPoP key (``cnf.jkt``, RFC 9449 §7.1)
        or to a client certificate (``cnf.x5t#S256``, RFC 8705 §3), or any token of an issuer
        configured with ``sender_constraint``, is honoured only with its proof; plain bearer
        use is refused. A DPoP proof's ``jti`` is accepted once within its ``iat`` window
        (RFC 9449 §11.1); with ``dpop_nonce`` the proof must carry a current server nonce.

        :raises InvalidToken: ``sender_constrained`` or ``binding_mismatch``.
        :raises InvalidProof: the proof failed a check (``nonce``: send the one attached).
        """
        settings = self._by_name[principal.issuer_name]
        if principal.x5t_s256 is not None or settings.sender_constraint == "mtls":
            _check_certificate(principal, presented.client_certificate)
        dpop_bound = principal.jkt is not None or settings.sender_constraint == "dpop"
        if presented.scheme == "bearer":
            if dpop_bound:
                raise InvalidToken("sender_constrained", "DPoP-bound token used as a bearer")
            return
        if principal.jkt is None:
            raise InvalidToken("binding_mismatch", "DPoP scheme with a token not bound to a key")
        if len(presented.proofs) != 1:
            raise InvalidProof("missing" if not presented.proofs else "malformed", "one DPoP")
        now = self._clock()
        proof = check_proof(
            presented.proofs[0],
            algorithms=settings.dpop_algorithms,
            method=presented.method,
            url=presented.url,
            access_token=presented.token,
            now=now,
            max_age=settings.dpop_max_age,
            leeway=settings.leeway,
        )
        if not hmac.compare_digest(proof.jkt.encode(), principal.jkt.encode()):
            raise InvalidToken("binding_mismatch", "proof key is not the token's cnf.jkt")
        if settings.dpop_nonce and nonces is not None and not nonces.valid(proof.nonce):
            raise InvalidProof("nonce", nonce=nonces.issue())
        await self._spend_proof(proof.jkt, proof.jti, now, settings)

    async def _spend_proof(
        self, jkt: str, jti: str, now: datetime, settings: IssuerSettings
    ) -> None:
        """RFC 9449 §11.1: a proof ``jti`` once per key within the ``iat`` window."""
        if self._replay is None:
            raise ConfigError("issuers: DPoP needs a ReplayGuard")
        keep = now + settings.dpop_max_age + 2 * settings.leeway
        digest = hashlib.sha256(jti.encode()).hexdigest()
        try:
            first = await self._replay.first_use(f"dpop:{jkt}", digest, keep)
        except Exception as exc:
            raise IdpError("replay guard failed") from exc
        if not first:
            raise InvalidProof("replayed")

    def claimed_issuer(self, token: str) -> str | None:
        """The ``iss`` a token claims, *unverified*, when it names a configured issuer (else
        None): for recording a refused request, never as evidence of who sent it. Anything
        else the token claims is attacker-chosen text and is not returned."""
        try:
            iss = parse(token).claims.get("iss")
        except InvalidToken:
            return None
        return iss if isinstance(iss, str) and iss in self._entries else None

    def _still_valid(self, digest: bytes) -> Principal | None:
        """A token verified before is accepted again without re-checking its signature until
        ``exp`` (+ leeway): batch jobs present one token for thousands of requests. Time only
        moves forward, so its ``nbf``/``iat`` checks still hold; a token's ``jti`` is
        spent by :meth:`start_operation`, not here. The entry counts only while the issuer's
        key set, as last fetched, is fresh and still publishes the key that verified it: a
        JWKS fetch that drops the key (rotation) ends every verification made with it at
        once, and a stale key set sends the token through full verification, which fetches
        the set again."""
        hit = self._verified_tokens.get(digest)
        if hit is None:
            return None
        if self._clock().timestamp() >= hit.deadline or not self._jwks[hit.issuer].publishes(
            hit.thumbprint
        ):
            del self._verified_tokens[digest]
            return None
        self._verified_tokens.move_to_end(digest)
        return hit.principal

    def _remember(self, digest: bytes, principal: Principal, found: _Verified) -> None:
        deadline = principal.expires_at.timestamp() + found.settings.leeway.total_seconds()
        self._verified_tokens[digest] = _Cached(
            principal, deadline, found.settings.issuer, found.thumbprint
        )
        if len(self._verified_tokens) > VERIFIED_TOKEN_CACHE:
            self._verified_tokens.popitem(last=False)

    async def verify_id_token(
        self, token: str, *, client_id: str, nonce: str, max_age: timedelta | None = None
    ) -> Principal:
        """Verify an ID token from the authorization code flow (OIDC Core §3.1.3.7).

        Same signature and time checks as :meth:`verify_bearer`, but ``aud`` must contain
        ``client_id`` (and ``azp``, when present or when there are several audiences, must
        equal it), ``nonce`` must equal the one sent (§3.1.2.1), and with ``max_age`` the
        ``auth_time`` must be recent enough (§3.1.2.1). ``acr`` is left to the caller's policy.
        ``require_jti`` does not apply: the nonce binds the token to one login.

        :raises InvalidToken: also ``bad_nonce`` and ``stale_auth``.
        """
        unverified = parse(token)
        check_id_token_type(unverified.header)
        found = await self._verified(unverified, audience=client_id)
        settings, claims = found.settings, found.claims
        aud, azp = claims["aud"], claims.get("azp")
        if (isinstance(aud, list) and len(aud) > 1 and azp is None) or (
            azp is not None and azp != client_id
        ):
            raise InvalidToken("bad_audience", "azp")
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise InvalidToken("bad_nonce")
        if max_age is not None:
            auth_time = numeric_date(claims, "auth_time", required=True)
            assert auth_time is not None
            limit = (max_age + settings.leeway).total_seconds()
            if self._clock().timestamp() - auth_time > limit:
                raise InvalidToken("stale_auth")
        return self._principal(found)

    async def _verified(self, unverified: Unverified, *, audience: str | None) -> _Verified:
        """Pick the issuer, check alg, key, signature and registered claims."""
        alg, kid = check_header(unverified.header)
        iss = unverified.claims.get("iss")
        entries = self._entries.get(iss) if isinstance(iss, str) else None
        if entries is None:
            raise InvalidToken("unknown_issuer")
        settings = self._select(entries, unverified.claims)
        if alg not in settings.algorithms:
            raise InvalidToken("alg_not_allowed", alg)
        key = await self._jwks[settings.issuer].key(kid, alg)
        if key is None:
            raise InvalidToken("unknown_kid")
        verify(unverified, alg, key.key)
        expires_at = check_claims(
            unverified.claims,
            issuer=settings.issuer,
            audience=audience or settings.audience,
            now=self._clock(),
            leeway=settings.leeway,
        )
        return _Verified(settings, unverified.claims, expires_at, key.thumbprint)

    @staticmethod
    def _select(entries: tuple[IssuerSettings, ...], claims: Mapping[str, Any]) -> IssuerSettings:
        """The first entry whose ``match_claims`` hold; the signature is checked afterwards
        with that entry's settings, so a forged claim cannot pick an entry and pass."""
        for settings in entries:
            if claims_match(settings.match_claims, claims) is None:
                return settings
        raise IdentityNotAllowed("no configured identity type matches this token")

    async def _consume(self, issuer: str, principal: Principal) -> None:
        """RFC 7519 §4.1.7: a ``jti`` starts one operation per issuer."""
        assert principal.token_id is not None
        if self._replay is None:
            raise ConfigError("issuers: require_jti needs a ReplayGuard")
        try:
            first = await self._replay.first_use(issuer, principal.token_id, principal.expires_at)
        except IdpError:
            raise
        except Exception as exc:
            raise IdpError("replay guard failed") from exc
        if not first:
            raise InvalidToken("replayed")


def _check_certificate(principal: Principal, der: bytes | None) -> None:
    """RFC 8705 §3: ``cnf.x5t#S256`` equals the SHA-256 of the TLS client certificate."""
    if der is None or principal.x5t_s256 is None:
        raise InvalidToken("sender_constrained", "certificate-bound token without its certificate")
    if not hmac.compare_digest(certificate_thumbprint(der).encode(), principal.x5t_s256.encode()):
        raise InvalidToken("binding_mismatch", "client certificate is not the token's")
