"""DPoP proofs for `qes sign` (RFC 9449 §4), and a DPoP-bound token from the IdP (§5).

The key is read from ``--dpop-key FILE`` (a PEM private key, EC P-256 or P-384) or made for the
run; it never leaves this machine, and only its public JWK rides in each proof.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import ECKey

from signer.cli.client import ClientError

_ALGS = {"P-256": "ES256", "P-384": "ES384"}


@dataclass(frozen=True)
class DpopKey:
    """A private EC key that signs DPoP proofs."""

    key: ECKey

    @classmethod
    def generate(cls) -> DpopKey:
        return cls(ECKey.generate_key("P-256", private=True))

    @classmethod
    def load(cls, path: str) -> DpopKey:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise ClientError(f"cannot read DPoP key {path}: {exc.strerror}") from exc
        try:
            key = ECKey.import_key(pem)
        except (ValueError, TypeError) as exc:
            raise ClientError(f"{path}: not an EC private key in PEM") from exc
        if not key.is_private or key.as_dict().get("crv") not in _ALGS:
            raise ClientError(f"{path}: need an EC P-256 or P-384 private key")
        return cls(key)

    @property
    def thumbprint(self) -> str:
        """RFC 7638 SHA-256 thumbprint: the ``cnf.jkt`` of tokens bound to this key."""
        return self.key.thumbprint()

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        issued_at: float | None = None,
    ) -> str:
        """A proof for one request (RFC 9449 §4.2): ``htu`` without query and fragment,
        ``ath`` when an access token goes with it, the server's ``nonce`` when it asked."""
        parts = urllib.parse.urlsplit(url)
        claims: dict[str, object] = {
            "jti": secrets.token_urlsafe(24),
            "htm": method,
            "htu": urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
            "iat": int(time.time() if issued_at is None else issued_at),
        }
        if access_token is not None:
            digest = hashlib.sha256(access_token.encode("ascii")).digest()
            claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if nonce is not None:
            claims["nonce"] = nonce
        public = self.key.as_dict(private=False)
        alg = _ALGS[str(public["crv"])]
        header = {"typ": "dpop+jwt", "alg": alg, "jwk": public}
        return jwt.encode(header, claims, self.key, algorithms=[alg])


class _NonceWanted(Exception):
    def __init__(self, nonce: str) -> None:
        self.nonce = nonce


def fetch_token(
    token_url: str, client_id: str, secret: str, key: DpopKey, resource: str | None = None
) -> str:
    """A DPoP-bound access token by the client credentials grant (RFC 6749 §4.4, RFC 9449
    §5), retried once with the IdP's nonce when it asks for one (§8)."""
    form = {"grant_type": "client_credentials", "scope": "sign"}
    if resource:
        form["resource"] = resource  # RFC 8707
    data = urllib.parse.urlencode(form).encode()
    basic = base64.b64encode(
        f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(secret)}".encode()
    ).decode()

    def ask(nonce: str | None) -> str:
        req = urllib.request.Request(token_url, data=data, method="POST")  # noqa: S310
        req.add_header("Authorization", f"Basic {basic}")
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        req.add_header("DPoP", key.proof("POST", token_url, nonce=nonce))
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            wanted = exc.headers.get("DPoP-Nonce")
            if wanted and nonce is None:
                raise _NonceWanted(wanted) from exc
            raise ClientError(f"token endpoint {token_url}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise ClientError(f"cannot reach the token endpoint {token_url}: {exc}") from exc
        if str(answer.get("token_type", "")).lower() != "dpop" or not answer.get("access_token"):
            raise ClientError("the token endpoint did not issue a DPoP-bound token")
        return str(answer["access_token"])

    try:
        return ask(None)
    except _NonceWanted as wanted:
        return ask(wanted.nonce)
