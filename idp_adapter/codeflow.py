"""The OpenID Connect authorization code flow with PKCE, as a confidential relying party.

The caller keeps the flow state (``state``, ``nonce``, PKCE verifier) wherever every replica can
read it; this module only builds the authorization request and redeems the code. The ID token
it returns is *not* verified here: pass it to :meth:`IssuerRegistry.verify_id_token`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from .errors import IdpError, IdpUnavailable
from .settings import check_url

__all__ = ["CodeExchangeFailed", "CodeFlowClient", "CodeFlowRequest", "s256_challenge"]


class CodeExchangeFailed(IdpError):
    """The token endpoint refused the code (RFC 6749 §5.2), e.g. ``invalid_grant``."""


def s256_challenge(verifier: str) -> str:
    """RFC 7636 §4.2: ``BASE64URL(SHA256(ASCII(code_verifier)))`` without padding."""
    if not 43 <= len(verifier) <= 128:
        raise ValueError("a PKCE code_verifier has 43..128 characters (RFC 7636 §4.1)")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class CodeFlowRequest:
    """One login's secrets, made by the caller from a CSPRNG and kept server-side."""

    state: str
    nonce: str
    verifier: str


@dataclass(frozen=True)
class _Endpoints:
    authorization: str
    token: str


class CodeFlowClient:
    """A confidential client (``client_secret_basic``, RFC 6749 §2.3.1) of one OpenID Provider.

    The endpoints come from the provider's discovery document (OIDC Discovery §4), fetched on
    first use; its ``issuer`` must equal the configured one exactly (§4.3).
    """

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        http: aiohttp.ClientSession,
        *,
        scope: str = "openid",
    ) -> None:
        check_url(issuer, "issuer")
        if "openid" not in scope.split():
            raise ValueError("scope must contain openid (OIDC Core §3.1.2.1)")
        self.issuer = issuer
        self.client_id = client_id
        self._secret = client_secret
        self.redirect_uri = redirect_uri
        self._scope = scope
        self._http = http
        self._endpoints: _Endpoints | None = None

    async def authorization_url(
        self, req: CodeFlowRequest, extra: Mapping[str, str] | None = None
    ) -> str:
        """RFC 6749 §4.1.1 + RFC 7636 §4.3 + OIDC Core §3.1.2.1: ``response_type=code``,
        ``state``, ``nonce`` and an S256 ``code_challenge``; ``extra`` adds optional request
        parameters (``acr_values``, ``max_age``, ``prompt``, ``login_hint``) but can never
        replace one of those."""
        endpoints = await self._discover()
        params = {
            **(extra or {}),
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self._scope,
            "state": req.state,
            "nonce": req.nonce,
            "code_challenge": s256_challenge(req.verifier),
            "code_challenge_method": "S256",
        }
        return f"{endpoints.authorization}?{urlencode(params)}"

    async def redeem(self, code: str, verifier: str) -> str:
        """RFC 6749 §4.1.3 with the RFC 7636 §4.5 ``code_verifier``; returns the ``id_token``
        (OIDC Core §3.1.3.3), still to be verified by the caller."""
        endpoints = await self._discover()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
        }
        # RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding.
        auth = aiohttp.encode_basic_auth(
            quote(self.client_id, safe=""), quote(self._secret, safe="")
        )
        body = await self._post(endpoints.token, form, auth)
        token = body.get("id_token")
        if not isinstance(token, str):
            raise CodeExchangeFailed("the token response has no id_token")
        return token

    async def _post(self, url: str, form: Mapping[str, str], auth: str) -> Mapping[str, Any]:
        headers = {"Authorization": auth}
        try:
            async with self._http.post(url, data=dict(form), headers=headers) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IdpUnavailable(f"token endpoint: {type(exc).__name__}") from exc
        if status >= 500:
            raise IdpUnavailable(f"token endpoint answered {status}")
        if not isinstance(body, dict):
            raise CodeExchangeFailed("the token response is not a JSON object")
        if status != 200:
            raise CodeExchangeFailed(f"token endpoint: {status} {body.get('error')!r}")
        return body

    async def _discover(self) -> _Endpoints:
        if self._endpoints is not None:
            return self._endpoints
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            async with self._http.get(url) as resp:
                resp.raise_for_status()
                meta = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IdpUnavailable(f"discovery: {type(exc).__name__}") from exc
        if not isinstance(meta, dict) or meta.get("issuer") != self.issuer:
            raise IdpUnavailable("discovery: issuer differs from the configured one")
        try:
            authorization, token = meta["authorization_endpoint"], meta["token_endpoint"]
            check_url(authorization, "authorization_endpoint")
            check_url(token, "token_endpoint")
        except (KeyError, TypeError, ValueError) as exc:
            raise IdpUnavailable(f"discovery: {exc}") from exc
        self._endpoints = _Endpoints(authorization, token)
        return self._endpoints
