"""A small synchronous client for the signer's HTTP API (used by the CLI).

Uses only the standard library so that `qes sign` works from any batch host; every failure is a
:class:`ClientError` whose message is one line fit for a terminal.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class ClientError(Exception):
    """One-line reason for the CLI."""


class _Retryable(ClientError):
    """An answer after which a request that is safe to repeat is sent again."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: A balancer's answers while a replica dies (RFC 9110 §15.6.3-5), the service's while its HSM
#: or database recovers (503 with Retry-After), and the answer while a dead replica's claim on
#: an Idempotency-Key lapses (409 ``idempotency-key-in-progress``).
RETRY_STATUSES = frozenset({502, 503, 504})
IN_PROGRESS = "/problems/idempotency-key-in-progress"
#: Seconds between tries, the last one repeated; a Retry-After up to RETRY_AFTER_MAX wins.
RETRY_BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0)
RETRY_AFTER_MAX = 30.0


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
    #: How long a request that is safe to repeat (a GET, or one with an ``Idempotency-Key``,
    #: which replays its first answer) is retried after a 502/503/504, a connection lost
    #: mid-request or a key still in progress: long enough for a dead replica's claim to lapse
    #: (``server.idempotency_abandon_seconds``, 120 s by default).
    retry_seconds: float = 180.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        url = self.base_url.rstrip("/") + path
        if not url.startswith(("http://", "https://")):
            raise ClientError(f"not an http(s) URL: {self.base_url}")
        data = json.dumps(body).encode() if body is not None else None
        headers = headers or {}
        repeatable = method == "GET" or "Idempotency-Key" in headers
        deadline = self.clock() + (self.retry_seconds if repeatable else 0.0)
        for attempt in itertools.count():
            try:
                return self._call_once(method, url, data, headers)
            except _Retryable as exc:
                wait = exc.retry_after or RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)]
                if self.clock() + wait > deadline:
                    raise ClientError(str(exc)) from exc
                self.sleep(wait)
        raise AssertionError("unreachable")

    def _call_once(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> Any:
        """One request, and its repetition with the server's DPoP nonce when it asks."""
        try:
            return self._send(method, url, data, headers, None)
        except urllib.error.HTTPError as exc:
            nonce = exc.headers.get("DPoP-Nonce") if self.dpop is not None else None
            if exc.code != 401 or not nonce:
                raise _refusal(exc) from exc
        try:
            return self._send(method, url, data, headers, nonce)
        except urllib.error.HTTPError as exc:
            raise _refusal(exc) from exc

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
        except urllib.error.URLError as exc:  # no connection at all: a wrong URL, or down
            raise ClientError(f"cannot reach {self.base_url}: {exc.reason}") from exc
        except (TimeoutError, ConnectionError) as exc:  # lost mid-request: RemoteDisconnected
            raise _Retryable(f"cannot reach {self.base_url}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ClientError(f"{url} did not answer with JSON") from exc

    def get(self, path: str, **query: str | int | None) -> Any:
        params = {k: str(v) for k, v in query.items() if v is not None}
        suffix = "?" + urllib.parse.urlencode(params) if params else ""
        return self.call("GET", path + suffix)


def _refusal(exc: urllib.error.HTTPError) -> ClientError:
    """The answer as one line; retryable if RETRY_STATUSES or a key still in progress."""
    try:
        problem = json.loads(exc.read())
        text = problem.get("title", exc.reason)
        if problem.get("detail"):
            text += f" ({problem['detail']})"
        if problem.get("request_id"):
            text += f" [request {problem['request_id']}]"
    except (ValueError, AttributeError):
        problem, text = {}, str(exc.reason)
    line = f"HTTP {exc.code}: {text}"
    in_progress = exc.code == 409 and problem.get("type") == IN_PROGRESS
    if exc.code not in RETRY_STATUSES and not in_progress:
        return ClientError(line)
    return _Retryable(line, _retry_after(exc.headers.get("Retry-After")))


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (RFC 9110 §10.2.3; the HTTP-date form is not used here)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return None if seconds is None or seconds < 0 else min(seconds, RETRY_AFTER_MAX)
