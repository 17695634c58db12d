"""Connection hygiene of `qes serve` (issue 17, item 4), on 127.0.0.1 only, bounded in time.

A real `qes serve` child with short timeouts and a small connection cap; raw sockets play the
hostile clients (a byte every 2 s, bodies that never finish, a 10^12-byte announcement, many
idle connections) while a probe checks that the service answers within a second during and
after, without a restart.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from tests.support.service import SignerProcess

HEADER_TIMEOUT = 2.5
BODY_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 4.0  # over HEADER_TIMEOUT: aiohttp applies it from the connection's start too
MAX_CONNECTIONS = 30


@pytest.fixture(scope="module")
def signer(serve: Callable[..., AbstractContextManager[SignerProcess]]) -> Iterator[SignerProcess]:
    with serve(
        "hygiene-signer",
        QES__SERVER__WORKERS="1",
        QES__SERVER__HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        QES__SERVER__BODY_TIMEOUT=str(BODY_TIMEOUT),
        QES__SERVER__KEEPALIVE_TIMEOUT=str(KEEPALIVE_TIMEOUT),
        QES__SERVER__MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    ) as process:
        yield process


def _connect(signer: SignerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", signer.port), timeout=10)


def _read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (status, lower-cased headers, body); (0, {}, b"") if closed."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, {}, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True if the server closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def _probe(signer: SignerProcess) -> tuple[int, float]:
    """GET /healthz on a fresh connection: (status, seconds)."""
    t0 = time.perf_counter()
    with _connect(signer) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, _, _ = _read_response(sock, 5)
    return status, time.perf_counter() - t0


def test_slow_header_client_is_cut_while_others_are_served(signer: SignerProcess) -> None:
    """A byte every 2 s: the connection is closed at the header deadline, never answered; a
    probe every half second meanwhile answers 200 in under a second."""
    slow = _connect(signer)
    request = b"GET /healthz HTTP/1.1\r\nHost: slow\r\n\r\n"
    t0 = time.monotonic()
    sent = 0
    closed = False
    probes: list[tuple[int, float]] = []
    while time.monotonic() - t0 < HEADER_TIMEOUT + 4 and not closed:
        if sent < len(request) and time.monotonic() - t0 >= 2 * sent:
            try:
                slow.sendall(request[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 1
        probes.append(_probe(signer))
        slow.settimeout(0.5)
        try:
            closed = slow.recv(1) == b""
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    elapsed = time.monotonic() - t0
    slow.close()
    assert closed, "the slow client was not cut off"
    assert HEADER_TIMEOUT - 0.5 <= elapsed <= HEADER_TIMEOUT + 3, elapsed
    assert probes and all(status == 200 and took < 1.0 for status, took in probes), probes
    assert _probe(signer)[0] == 200


def test_body_that_does_not_arrive_gets_408(signer: SignerProcess, batch_token: str) -> None:
    """Headers at once, 10 of 200 announced octets, then nothing: 408 problem+json at the body
    deadline, and the connection is closed after it."""
    with _connect(signer) as sock:
        sock.sendall(
            b"POST /api/v1/signatures HTTP/1.1\r\nHost: t\r\n"
            + f"Authorization: Bearer {batch_token}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            + b'{"hash_al'
        )
        t0 = time.monotonic()
        status, headers, body = _read_response(sock, BODY_TIMEOUT + 5)
        took = time.monotonic() - t0
        assert status == 408, (status, body)
        assert headers["content-type"].startswith("application/problem+json")
        assert json.loads(body)["type"] == "/problems/body-timeout"
        assert BODY_TIMEOUT - 0.5 <= took <= BODY_TIMEOUT + 2, took
        assert _closed_within(sock, 3)
    assert _probe(signer)[0] == 200


def test_announced_huge_body_is_refused_before_reading(signer: SignerProcess) -> None:
    """Content-Length 10^12 and no body sent: 413 problem+json at once, connection closed."""
    with _connect(signer) as sock:
        t0 = time.monotonic()
        sock.sendall(
            b"POST /api/v1/signatures HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
        )
        status, _, body = _read_response(sock, 5)
        assert status == 413, (status, body)
        assert json.loads(body)["type"] == "/problems/body-too-large"
        assert time.monotonic() - t0 < 1.0
        assert _closed_within(sock, 3)


def test_idle_keepalive_connection_is_closed(signer: SignerProcess) -> None:
    with _connect(signer) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(sock, 5)[0] == 200
        t0 = time.monotonic()
        assert _closed_within(sock, KEEPALIVE_TIMEOUT + 3)
        assert time.monotonic() - t0 >= KEEPALIVE_TIMEOUT - 0.5


def test_connection_flood_is_refused_fast_and_the_service_recovers(
    signer: SignerProcess,
) -> None:
    """Four times the cap of idle connections: past the cap each gets a fixed 503 with
    Retry-After at once; the probe is answered within a second throughout (200 or that 503);
    once the idle ones hit the header deadline, the probe gets 200 again, no restart."""
    flood: list[socket.socket] = []
    refusals: list[tuple[int, dict[str, str], bytes]] = []
    try:
        for _ in range(4 * MAX_CONNECTIONS):
            sock = _connect(signer)
            flood.append(sock)
        time.sleep(0.3)
        for sock in flood[MAX_CONNECTIONS:]:
            refusals.append(_read_response(sock, 2))
        during = [_probe(signer) for _ in range(3)]
        assert len(refusals) == 3 * MAX_CONNECTIONS
        for status, headers, body in refusals:
            assert status == 503, (status, body)
            assert headers["retry-after"] == "1"
            assert json.loads(body)["type"] == "/problems/too-many-connections"
        assert all(status in (200, 503) and took < 1.0 for status, took in during), during
        time.sleep(HEADER_TIMEOUT + 1)
        assert all(_closed_within(sock, 1) for sock in flood[:MAX_CONNECTIONS])
        after = [_probe(signer) for _ in range(3)]
        assert all(status == 200 and took < 1.0 for status, took in after), after
    finally:
        for sock in flood:
            sock.close()
    assert signer.proc is not None and signer.proc.poll() is None
