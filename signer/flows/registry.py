"""The relying-party registry: who may send people to sign, and where they may be sent back.

Client secrets are 256-bit random values shown once; only their SHA-256 is stored. A slow
password KDF buys nothing for a secret with 256 bits of entropy (RFC 6749 §2.3.1 leaves the
method to the server; NIST SP 800-63B §5.1.1.2 asks for key stretching only for memorised
secrets), and the check stays constant-time (``hmac.compare_digest``). Redirect URIs are
compared as whole strings, never by prefix (RFC 6749 §3.1.2.3, RFC 9700 §4.1.3).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from signer.errors import RequestError, SignerError
from signer.storage.signing_requests import RpClient, RpClientStore

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


class RegistryError(SignerError):
    """A registry command cannot be carried out; the message says why."""

    slug = "registry-error"
    title = "Relying-party registry error"


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


class RpRegistry:
    """Add, list, rotate, revoke and authenticate relying parties."""

    def __init__(
        self,
        store: RpClientStore,
        clock: Callable[[], datetime],
        random: Callable[[int], str] = secrets.token_urlsafe,
    ) -> None:
        self._store = store
        self._clock = clock
        self._random = random

    async def add(self, name: str, redirect_uris: Sequence[str]) -> Registered:
        name = name.strip()
        if not 0 < len(name) <= 100 or not name.isprintable():
            raise RegistryError("NAME: 1..100 printable characters (shown to signers)")
        if not redirect_uris:
            raise RegistryError("at least one --redirect-uri is required")
        uris = tuple(dict.fromkeys(check_redirect_uri(u) for u in redirect_uris))
        client = RpClient(f"rp-{secrets.token_hex(8)}", name, uris, self._clock())
        secret = self._random(SECRET_BYTES)
        await self._store.add(client, secret_hash(secret))
        return Registered(client, secret)

    async def all(self) -> list[RpClient]:
        return await self._store.all()

    async def rotate(self, client_id: str) -> str:
        secret = self._random(SECRET_BYTES)
        if not await self._store.rotate(client_id, secret_hash(secret), self._clock()):
            raise RegistryError(f"no active relying party {client_id!r}")
        return secret

    async def revoke(self, client_id: str) -> None:
        if not await self._store.revoke(client_id, self._clock()):
            raise RegistryError(f"no active relying party {client_id!r}")

    async def authenticate(self, client_id: str, secret: str) -> RpClient:
        """The active client whose secret this is (constant-time comparison of hashes)."""
        found = await self._store.get(client_id)
        stored = found[1] if found is not None else _NO_SECRET
        ok = hmac.compare_digest(secret_hash(secret), stored)
        if found is None or not ok or found[0].revoked_at is not None:
            raise InvalidClient(f"client {client_id[:40]!r} refused")
        return found[0]
