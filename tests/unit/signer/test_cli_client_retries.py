"""`qes`'s API client repeats what is safe to repeat, as a batch job behind a balancer needs:
a request with an Idempotency-Key (or a GET) after a 502/503/504, a connection lost mid-request
or a key still in progress; never a request without a key. Against a real HTTP server on
127.0.0.1 that answers from a script."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from signer.cli.client import ApiClient, ClientError

IN_PROGRESS = {"type": "/problems/idempotency-key-in-progress", "title": "still processed"}


class Script(ThreadingHTTPServer):
    """Answers requests in order from ``answers``: (status, headers, body) or "drop"."""

    answers: list[Any]
    keys: list[str | None]


class _Handler(BaseHTTPRequestHandler):
    server: Script

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.keys.append(self.headers.get("Idempotency-Key"))
        answer = self.server.answers.pop(0)
        if answer == "drop":  # a replica dying mid-request
            self.close_connection = True
            return
        status, headers, body = answer
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Script]:
    httpd = Script(("127.0.0.1", 0), _Handler)
    httpd.answers, httpd.keys = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


class FakeTime:
    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _client(server: Script, clock: FakeTime, retry_seconds: float = 180.0) -> ApiClient:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return ApiClient(url, "t", timeout=5, retry_seconds=retry_seconds, sleep=clock.sleep,
                     clock=lambda: clock.now)  # fmt: skip


def test_a_keyed_request_rides_out_a_dying_replica(server: Script) -> None:
    server.answers = [
        (502, {}, {"title": "Bad Gateway"}),
        "drop",
        (409, {"Retry-After": "3"}, IN_PROGRESS),
        (201, {}, {"signed": True}),
    ]
    clock = FakeTime()
    result = _client(server, clock).call("POST", "/x", {}, headers={"Idempotency-Key": "k1"})
    assert result == {"signed": True}
    assert server.keys == ["k1"] * 4  # the same key each time: one signing operation
    assert clock.slept == [1.0, 2.0, 3.0]  # backoff, and the server's Retry-After


def test_a_request_without_a_key_is_never_repeated(server: Script) -> None:
    server.answers = [(503, {"Retry-After": "1"}, {"title": "Unavailable"})]
    clock = FakeTime()
    with pytest.raises(ClientError, match="HTTP 503: Unavailable"):
        _client(server, clock).call("POST", "/x", {})
    assert len(server.keys) == 1 and clock.slept == []


def test_other_conflicts_are_not_retried(server: Script) -> None:
    server.answers = [(409, {}, {"type": "/problems/other", "title": "Conflict"})]
    with pytest.raises(ClientError, match="HTTP 409: Conflict"):
        _client(server, FakeTime()).call("POST", "/x", {}, headers={"Idempotency-Key": "k"})
    assert len(server.keys) == 1


def test_retries_end_at_their_budget_with_the_last_answer(server: Script) -> None:
    server.answers = [(503, {}, {"title": "Unavailable"})] * 10
    clock = FakeTime()
    with pytest.raises(ClientError, match="HTTP 503: Unavailable"):
        _client(server, clock, retry_seconds=10).call("GET", "/x")
    assert clock.slept == [1.0, 2.0, 4.0]  # the next wait (8 s) would pass the 10 s budget
    assert len(server.keys) == 4
