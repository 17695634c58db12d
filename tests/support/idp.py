"""Start the development OpenID Provider (deploy/dev-idp, npm ``oidc-provider``) for tests.

    with start_idp(tmp_path) as idp:
        token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
        token = await idp.user_token("alice", "demo-alice", "demo-web")

The private JWKS is generated here (ES256), so tests can also sign deliberately bad tokens
with the issuer's real key (``idp.private_jwks``). Clients and users default to those of
``deploy/dev-idp/demo.json``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
from joserfc import jwt
from joserfc.jwk import ECKey, Key, KeySet

from idp_adapter import IssuerRegistry, IssuerSettings
from tests.support.leaks import record, register_log
from tests.support.ports import free_port

IDP_DIR = Path(__file__).resolve().parents[2] / "deploy" / "dev-idp"
DEMO = json.loads((IDP_DIR / "demo.json").read_text())
DEMO_CLIENTS: list[dict[str, Any]] = DEMO["clients"]
DEMO_USERS: list[dict[str, Any]] = DEMO["users"]
DEMO_SECRETS: dict[str, str] = {c["client_id"]: c.get("client_secret", "") for c in DEMO_CLIENTS}
DEMO_PASSWORDS: dict[str, str] = {u["username"]: u["password"] for u in DEMO_USERS}
RESOURCE = DEMO["resource"]
MakeRegistry = Callable[..., IssuerRegistry]
_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')


def ensure_node_modules() -> None:
    """``npm ci`` (the lock file, registry packages only) when node_modules is missing."""
    if (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is required to run the development IdP")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=IDP_DIR, check=True
    )


def new_signing_key(kid: str | None = None) -> ECKey:
    """A fresh ES256 (P-256) private JWK with a ``kid``."""
    kid = kid or f"test-{secrets.token_hex(6)}"
    return ECKey.generate_key("P-256", {"kid": kid, "alg": "ES256", "use": "sig"}, private=True)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: Mapping[str, Any], claims: Mapping[str, Any], signature: bytes = b"") -> str:
    """A JWS compact serialization assembled by hand (for ``alg: none`` and forgeries)."""
    h = _b64url(json.dumps(header).encode())
    p = _b64url(json.dumps(claims).encode())
    return record(f"{h}.{p}.{_b64url(signature)}")


def sign_jwt(key: Key, claims: Mapping[str, Any], header: Mapping[str, Any] | None = None) -> str:
    """Sign ``claims`` with ``key`` (joserfc), ES256 and the key's kid unless overridden."""
    full = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid, **(header or {})}
    return record(jwt.encode(full, dict(claims), key))


@dataclass
class RunningIdp:
    """A started dev IdP process; use as a context manager or call :meth:`stop`."""

    issuer: str
    port: int
    resource: str
    private_jwks: KeySet
    process: subprocess.Popen[bytes]
    log_path: Path
    clients: Sequence[Mapping[str, Any]] = field(default_factory=list)

    def __enter__(self) -> RunningIdp:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def signing_key(self) -> ECKey:
        key = self.private_jwks.keys[0]
        assert isinstance(key, ECKey)
        return key

    def claims(self, now: float | None = None, **overrides: Any) -> dict[str, Any]:
        """Access-token claims as this IdP would issue them (RFC 9068 §2.2), overridable;
        an override of None drops the claim."""
        now = time.time() if now is None else now
        claims = {
            "iss": self.issuer,
            "sub": "demo-batch",
            "aud": self.resource,
            "iat": int(now),
            "exp": int(now) + 600,
            "jti": secrets.token_urlsafe(16),
            "client_id": "demo-batch",
            "org_name": "Demo Manufacturing GmbH",
            "organizationIdentifier": "NTRDE-HRB12345",
            "country": "DE",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, header: Mapping[str, Any] | None = None, **overrides: Any) -> str:
        """A token signed with the IdP's real private key (for deliberately bad claims)."""
        return sign_jwt(self.signing_key, self.claims(**overrides), header)

    def jwks_fetches(self) -> int:
        """How often the IdP served its JWKS (dev-only counter, independent of our cache)."""
        with urllib.request.urlopen(f"{self.issuer}/_dev/stats", timeout=5) as resp:  # noqa: S310
            return int(json.load(resp)["jwks_fetches"])

    async def _discovery(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"{self.issuer}/.well-known/openid-configuration") as resp:
            resp.raise_for_status()
            result: dict[str, Any] = await resp.json()
            return result

    async def client_token(
        self, client_id: str, secret: str, *, resource: str | None = None, scope: str = "sign"
    ) -> str:
        """RFC 6749 §4.4 client-credentials grant over HTTP; returns the JWT access token."""
        form = {"grant_type": "client_credentials", "scope": scope}
        form["resource"] = resource or self.resource
        auth = {"Authorization": aiohttp.encode_basic_auth(client_id, secret)}
        async with aiohttp.ClientSession() as http:
            endpoint = (await self._discovery(http))["token_endpoint"]
            async with http.post(endpoint, data=form, headers=auth) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"token endpoint: {resp.status} {body}")
                return record(str(body["access_token"]))

    async def user_token(self, username: str, password: str, client_id: str, **kw: Any) -> str:
        """The access token of :meth:`user_login`."""
        return str((await self.user_login(username, password, client_id, **kw))["access_token"])

    async def user_login(
        self,
        username: str,
        password: str,
        client_id: str,
        *,
        client_secret: str | None = None,
        redirect_uri: str | None = None,
        scope: str = "openid profile email sign",
        resource: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Drive authorization code + PKCE (RFC 6749 §4.1, RFC 7636) as a browser would:
        GET authorize, post the login form, follow redirects to the redirect URI, then
        exchange the code. Returns the token response (access_token, id_token, ...)."""
        client = next(c for c in self.clients if c["client_id"] == client_id)
        secret = client_secret if client_secret is not None else client.get("client_secret")
        redirect_uri = redirect_uri or client["redirect_uris"][0]
        verifier = secrets.token_urlsafe(48)
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        params = {
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
            "resource": resource or self.resource,
            **(extra or {}),
        }
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            meta = await self._discovery(http)
            url = f"{meta['authorization_endpoint']}?{urlencode(params)}"
            page = await self._follow(http, "GET", url, None, redirect_uri)
            action = _FORM_ACTION.search(page)
            if action is None:
                raise RuntimeError(f"no login form: {page[:300]}")
            form = {"username": username, "password": password}
            callback = await self._follow(http, "POST", urljoin(url, action[1]), form, redirect_uri)
            query = parse_qs(urlsplit(callback).query)
            if query.get("state") != [state] or "code" not in query:
                raise RuntimeError(f"bad authorization response: {callback}")
            token_form = {
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            }
            auth = {"Authorization": aiohttp.encode_basic_auth(client_id, secret)} if secret else {}
            if not secret:
                token_form["client_id"] = client_id
            async with http.post(meta["token_endpoint"], data=token_form, headers=auth) as resp:
                body: dict[str, Any] = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"token endpoint: {resp.status} {body}")
                for name in ("access_token", "id_token", "refresh_token"):
                    if isinstance(body.get(name), str):
                        record(body[name])
                body["nonce"] = nonce
                return body

    @staticmethod
    async def _follow(
        http: aiohttp.ClientSession,
        method: str,
        url: str,
        form: Mapping[str, str] | None,
        redirect_uri: str,
    ) -> str:
        """Follow redirects by hand; return the redirect URI reached, or the HTML page."""
        for _ in range(10):
            async with http.request(method, url, data=form, allow_redirects=False) as resp:
                if resp.status in (301, 302, 303, 307, 308):
                    url = urljoin(url, resp.headers["Location"])
                    if url.startswith(redirect_uri):
                        return url
                    method, form = "GET", None
                    continue
                text = await resp.text()
                if resp.status != 200:
                    raise RuntimeError(f"{method} {url}: {resp.status} {text[:300]}")
                return text
        raise RuntimeError("too many redirects")


def with_redirect_uri(
    clients: Sequence[Mapping[str, Any]], client_id: str, uri: str
) -> list[dict[str, Any]]:
    """``clients`` with one more registered redirect URI for ``client_id`` (a test's port)."""
    out = [dict(c) for c in clients]
    for c in out:
        if c["client_id"] == client_id:
            c["redirect_uris"] = [*c["redirect_uris"], uri]
    return out


def _wait_ready(process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "listening" in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"dev IdP exited: {log.read_text(errors='replace')}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"dev IdP not ready after {timeout}s: {log.read_text(errors='replace')}")


def start_idp(
    workdir: Path,
    *,
    port: int | None = None,
    clients: Sequence[Mapping[str, Any]] = DEMO_CLIENTS,
    users: Sequence[Mapping[str, Any]] = DEMO_USERS,
    access_token_ttl: int = 600,
    jwks_max_age: int = 300,
    private_jwks: KeySet | None = None,
) -> RunningIdp:
    """Write a config (with a JWKS generated here) into ``workdir`` and start the IdP."""
    ensure_node_modules()
    port = port or free_port()
    issuer = f"http://127.0.0.1:{port}"
    jwks = private_jwks or KeySet([new_signing_key()])
    config = {
        "issuer": issuer,
        "port": port,
        "resource": RESOURCE,
        "access_token_ttl": access_token_ttl,
        "jwks_max_age": jwks_max_age,
        "jwks": jwks.as_dict(private=True),
        "clients": list(clients),
        "users": list(users),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"dev-idp-{port}.private.json"
    config_path.write_text(json.dumps(config))
    log_path = register_log(workdir / f"dev-idp-{port}.log")
    node = shutil.which("node") or "node"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [node, "server.mjs", str(config_path)], cwd=IDP_DIR, stdout=log, stderr=log
        )
    _wait_ready(process, log_path, timeout=30)
    return RunningIdp(issuer, port, RESOURCE, jwks, process, log_path, list(clients))


class FakeClock:
    """Real time plus an offset the test can advance (no sleeping for expiry or caches)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


class MemoryReplayGuard:
    """Single-process ReplayGuard for tests (the signer's is in PostgreSQL)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], datetime] = {}

    async def first_use(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        if (issuer, jti) in self.seen:
            return False
        self.seen[(issuer, jti)] = expires_at
        return True


def legal_settings(idp: RunningIdp, **overrides: Any) -> IssuerSettings:
    values: dict[str, Any] = {
        "name": "dev",
        "issuer": idp.issuer,
        "audience": idp.resource,
        "subject_type": "legal",
        "subject": {
            "common_name": "{org_name}",
            "organization_name": "{org_name}",
            "organization_identifier": "{organizationIdentifier}",
            "country": "{country}",
        },
        "profiles": ("qualified", "advanced"),
        "default_profile": "qualified",
    }
    values.update(overrides)
    return IssuerSettings(**values)


def natural_settings(idp: RunningIdp, **overrides: Any) -> IssuerSettings:
    values: dict[str, Any] = {
        "name": "dev-users",
        "issuer": idp.issuer,
        "audience": idp.resource,
        "subject_type": "natural",
        "subject": {
            "common_name": "{name}",
            "given_name": "{given_name}",
            "surname": "{family_name}",
            "country": "{country}",
            "serial_number": "{pno}",
        },
        "profiles": ("qes", "advanced"),
        "default_profile": "qes",
        "required_claims": {"email_verified": True},
    }
    values.update(overrides)
    return IssuerSettings(**values)
