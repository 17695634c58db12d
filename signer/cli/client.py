"""A small synchronous client for the signer's HTTP API (used by the CLI).

Uses only the standard library so that `qes sign` works from any batch host; every failure is a
:class:`ClientError` whose message is one line fit for a terminal.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol


class ClientError(Exception):
    """One-line reason for the CLI."""


class ProofMaker(Protocol):
    """Signs DPoP proofs (RFC 9449 §4.2); :class:`signer.cli.dpop.DpopKey`."""

    def proof(
        self, method: str, url: str, *, access_token: str | None = None, nonce: str | None = None
    ) -> str: ...


@dataclass(frozen=True)
class ApiClient:
    """``dpop``: send the token as ``Authorization: DPoP`` with a fresh proof per request
    (RFC 9449 §7.1), retrying once with the server's nonce when it asks (§9)."""

    base_url: str
    token: str
    timeout: float = 60.0
    dpop: ProofMaker | None = None

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        url = self.base_url.rstrip("/") + path
        if not url.startswith(("http://", "https://")):
            raise ClientError(f"not an http(s) URL: {self.base_url}")
        data = json.dumps(body).encode() if body is not None else None
        try:
            return self._send(method, url, data, headers or {}, None)
        except urllib.error.HTTPError as exc:
            nonce = exc.headers.get("DPoP-Nonce") if self.dpop is not None else None
            if exc.code != 401 or not nonce:
                raise ClientError(_problem_line(exc)) from exc
        try:
            return self._send(method, url, data, headers or {}, nonce)
        except urllib.error.HTTPError as exc:
            raise ClientError(_problem_line(exc)) from exc

    def _send(
        self, method: str, url: str, data: bytes | None, headers: dict[str, str], nonce: str | None
    ) -> Any:
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        if self.dpop is None:
            req.add_header("Authorization", f"Bearer {self.token}")
        else:
            req.add_header("Authorization", f"DPoP {self.token}")
            proof = self.dpop.proof(method, url, access_token=self.token, nonce=nonce)
            req.add_header("DPoP", proof)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for name, value in headers.items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return json.loads(resp.read())
        except urllib.error.HTTPError:
            raise
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach {self.base_url}: {exc.reason}") from exc
        except (TimeoutError, ConnectionError) as exc:
            raise ClientError(f"cannot reach {self.base_url}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ClientError(f"{url} did not answer with JSON") from exc

    def get(self, path: str, **query: str | int | None) -> Any:
        params = {k: str(v) for k, v in query.items() if v is not None}
        suffix = "?" + urllib.parse.urlencode(params) if params else ""
        return self.call("GET", path + suffix)


def _problem_line(exc: urllib.error.HTTPError) -> str:
    try:
        problem = json.loads(exc.read())
        text = problem.get("title", exc.reason)
        if problem.get("detail"):
            text += f" ({problem['detail']})"
        if problem.get("request_id"):
            text += f" [request {problem['request_id']}]"
    except (ValueError, AttributeError):
        text = str(exc.reason)
    return f"HTTP {exc.code}: {text}"
