"""The relying-party registry: who may send people to sign, and where they may be sent back.

Client secrets are 256-bit random values shown once; only their SHA-256 is stored. A slow
password KDF buys nothing for a secret with 256 bits of entropy (RFC 6749 §2.3.1 leaves the
method to the server; NIST SP 800-63B §5.1.1.2 asks for key stretching only for memorised
secrets), and the check stays constant-time (``hmac.compare_digest``). Redirect URIs are
compared as whole strings, never by prefix (RFC 6749 §3.1.2.3, RFC 9700 §4.1.3).

Scopes (issue 17 item 10) say what a client may request, least privilege per client (RFC 9700
§2.3 "privilege restriction"): ``api:web-signing`` (``/api/v1/signing-requests``), ``api:csc``
(the CSC v2 OAuth2 credential flow, CSC API v2 §8.4), ``format:raw|cades|pades`` and
``profile:qes|qualified|advanced`` (the certificate level a request names, ``ca.profiles.Level``);
``KIND:*`` allows every value of a kind and ``*`` everything. Given scopes must name the APIs;
formats and profiles not named are all allowed, and a client limited to some profiles must name
one in each request (the issuer's default is only known at login). A request outside its
client's scopes is refused (:class:`OutOfScope`, 403 ``client-out-of-scope``; OAuth2's
``unauthorized_client`` in the CSC flow) and logged as a refusal. Clients registered before
scopes existed have ``*``.

Rotation keeps the previous secret valid for a grace period (``[clients]
secret_grace_seconds``, or ``qes client rotate --grace``) so the RP's replicas can switch one
by one; a second rotation within the grace period drops the oldest secret. The last use of each
secret is recorded (to the minute) and shown by ``qes client list``: an operator sees when the
old one stopped being used.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from ca.profiles import Level
from signer.errors import RequestError, SignerError
from signer.signing.pipeline import FORMATS
from signer.storage.policy import LoggedAction, Target
from signer.storage.signing_requests import RpClient, RpClientStore
from signer.translog.admin import AdminLog

SECRET_BYTES = 32
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# Compared against when the client id is unknown, so both paths cost one hash comparison.
_NO_SECRET = hashlib.sha256(b"no such client").digest()


class InvalidClient(RequestError):
    """RP authentication failed (RFC 6749 §5.2 ``invalid_client``)."""

    slug = "invalid-client"
    title = "Unknown relying party or wrong client secret"
    status = 401
    challenge = 'Basic realm="qes-signer", charset="UTF-8"'


class OutOfScope(RequestError):
    """The client authenticated, but its scopes do not allow what it asked for."""

    slug = "client-out-of-scope"
    title = "This client's scopes do not allow this request"
    status = 403


class RegistryError(SignerError):
    """A registry command cannot be carried out; the message says why."""

    slug = "registry-error"
    title = "Relying-party registry error"


API_SCOPES = ("web-signing", "csc")
SCOPE_VALUES: dict[str, frozenset[str]] = {
    "api": frozenset(API_SCOPES),
    "format": frozenset(FORMATS),
    "profile": frozenset(level.value for level in Level),
}
#: Default grace period of a rotated secret (``[clients] secret_grace_seconds``).
DEFAULT_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class Scopes:
    """A client's scopes by kind; ``None``: every value of that kind."""

    apis: frozenset[str] | None = None
    formats: frozenset[str] | None = None
    profiles: frozenset[str] | None = None

    @classmethod
    def parse(cls, tokens: Sequence[str]) -> Scopes:
        """``*``, ``KIND:VALUE`` or ``KIND:*`` tokens (``KIND:A,B`` for several values); a bad
        one is a :class:`RegistryError` naming it."""
        words = [w for t in tokens for w in _words(t)]
        if not words or "*" in words:
            return cls()
        chosen: dict[str, set[str] | None] = {}
        for word in words:
            kind, _, value = word.partition(":")
            allowed = SCOPE_VALUES.get(kind)
            if allowed is None or (value != "*" and value not in allowed):
                raise RegistryError(f"scope {word[:60]!r}: use *, or {_scope_help()}")
            if value == "*" or chosen.get(kind, set()) is None:
                chosen[kind] = None
            else:
                chosen.setdefault(kind, set()).add(value)  # type: ignore[union-attr]
        if "api" not in chosen:
            raise RegistryError("scopes must name the APIs: api:web-signing, api:csc or api:*")
        return cls(*(_frozen(chosen.get(k)) for k in ("api", "format", "profile")))

    def tokens(self) -> tuple[str, ...]:
        """The stored (and shown) form: every kind spelled out, ``*`` for everything."""
        kinds = (("api", self.apis), ("format", self.formats), ("profile", self.profiles))
        if all(values is None for _, values in kinds):
            return ("*",)
        return tuple(
            f"{kind}:{value}"
            for kind, values in kinds
            for value in (["*"] if values is None else sorted(values))
        )

    def refusal(self, api: str, fmt: str | None = None, profile: str | None = None) -> str | None:
        """Why a request for ``api`` in ``fmt`` with ``profile`` is out of scope, or None."""
        if self.apis is not None and api not in self.apis:
            return f"api {api} not in scope"
        if fmt is not None and self.formats is not None and fmt not in self.formats:
            return f"format {fmt} not in scope"
        if self.profiles is not None and profile not in self.profiles:
            return f"profile {profile or '(issuer default)'} not in scope"
        return None

    def check(self, api: str, fmt: str | None = None, profile: str | None = None) -> None:
        reason = self.refusal(api, fmt, profile)
        if reason is not None:
            raise OutOfScope(reason)


def _words(token: str) -> list[str]:
    """``format:cades,pades`` -> ``format:cades``, ``format:pades``; ``*`` stays ``*``."""
    kind, sep, values = token.strip().partition(":")
    if not sep:
        return [kind] if kind else []
    return [f"{kind}:{v.strip()}" for v in values.split(",")]


def _frozen(values: set[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def _scope_help() -> str:
    return "; ".join(f"{k}:{'|'.join(sorted(v))}" for k, v in SCOPE_VALUES.items())


def scopes_of(client: RpClient) -> Scopes:
    """A stored client's scopes (stored tokens were checked when they were set)."""
    return Scopes.parse(client.scopes)


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def check_redirect_uri(uri: str) -> str:
    """An absolute https URI without fragment (RFC 6749 §3.1.2); http only on loopback."""
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri or not parts.hostname or any(c.isspace() for c in uri):
        raise RegistryError(f"redirect URI {uri!r}: absolute, no fragment, no spaces")
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return uri
    raise RegistryError(f"redirect URI {uri!r}: https only (http on 127.0.0.1/localhost)")


@dataclass(frozen=True)
class Registered:
    client: RpClient
    secret: str  # shown once, never stored


@dataclass(frozen=True, eq=False)
class RpRegistry:
    """Add, list, rotate, revoke, scope and authenticate relying parties.

    With ``audit`` every add, rotate, scope change and revoke is an admin act in the
    transparency log (``client-add`` ... ``client-revoke``, issue 15 item 5), written in the
    transaction of the change; the secret never enters it."""

    store: RpClientStore
    clock: Callable[[], datetime]
    random: Callable[[int], str] = secrets.token_urlsafe
    _: KW_ONLY
    grace: timedelta = DEFAULT_GRACE
    audit: AdminLog | None = None

    def _logged(
        self, action: str, client_id: str, at: datetime, detail: str | None = None
    ) -> LoggedAction | None:
        if self.audit is None:
            return None
        target = Target("client", client_id=client_id)
        return self.audit.act(f"client-{action}", target, detail=detail, at=at)

    async def add(
        self, name: str, redirect_uris: Sequence[str], scopes: Sequence[str] = ("*",)
    ) -> Registered:
        name = name.strip()
        if not 0 < len(name) <= 100 or not name.isprintable():
            raise RegistryError("NAME: 1..100 printable characters (shown to signers)")
        if not redirect_uris:
            raise RegistryError("at least one --redirect-uri is required")
        uris = tuple(dict.fromkeys(check_redirect_uri(u) for u in redirect_uris))
        tokens = Scopes.parse(scopes).tokens()
        client = RpClient(f"rp-{secrets.token_hex(8)}", name, uris, self.clock(), scopes=tokens)
        secret = self.random(SECRET_BYTES)
        logged = self._logged("add", client.client_id, client.created_at, " ".join(tokens))
        await self.store.add(client, secret_hash(secret), logged)
        return Registered(client, secret)

    async def all(self) -> list[RpClient]:
        return await self.store.all()

    async def rotate(self, client_id: str, grace: timedelta | None = None) -> str:
        """A new secret; the old one works for ``grace`` more (default: the configured one)."""
        grace = self.grace if grace is None else grace
        if grace < timedelta(0):
            raise RegistryError("--grace must not be negative")
        secret = self.random(SECRET_BYTES)
        now = self.clock()
        logged = self._logged("rotate", client_id, now, f"grace={int(grace.total_seconds())}")
        if not await self.store.rotate(client_id, secret_hash(secret), now, now + grace, logged):
            raise RegistryError(f"no active relying party {client_id!r}")
        return secret

    async def set_scopes(self, client_id: str, scopes: Sequence[str]) -> tuple[str, ...]:
        tokens = Scopes.parse(scopes).tokens()
        logged = self._logged("scope", client_id, self.clock(), " ".join(tokens))
        if not await self.store.set_scopes(client_id, tokens, logged):
            raise RegistryError(f"no active relying party {client_id!r}")
        return tokens

    async def revoke(self, client_id: str) -> None:
        now = self.clock()
        if not await self.store.revoke(client_id, now, self._logged("revoke", client_id, now)):
            raise RegistryError(f"no active relying party {client_id!r}")

    async def authenticate(self, client_id: str, secret: str) -> RpClient:
        """The active client whose current secret, or previous one within its grace period,
        this is (constant-time comparisons of hashes, both always made); the use is recorded."""
        now = self.clock()
        found = await self.store.secrets(client_id, now)
        given = secret_hash(secret)
        old = found.previous if found is not None else None
        current = hmac.compare_digest(given, found.current if found else _NO_SECRET)
        previous = hmac.compare_digest(given, old or _NO_SECRET) and old is not None
        if found is None or not (current or previous) or found.client.revoked_at is not None:
            raise InvalidClient(f"client {client_id[:40]!r} refused")
        await self.store.used(client_id, previous=not current, now=now)
        return found.client
