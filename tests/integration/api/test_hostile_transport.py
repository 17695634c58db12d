"""Hostile input at the HTTP edge (issue 17, items 1 and 3), against the app on the runner
`qes serve` uses: every refusal is problem+json (CSC: its own error body) with a stable type,
never a 5xx, and never echoes the offending input; a client that leaves is one 499 log line.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.service import EVERY_SURFACE, SignerProcess, api_headers, raw_exchange

PROBLEM = "application/problem+json"
DEEP_ARRAY = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000
DIGITS = "9" * 5000
#: (id, JSON text, problem types it may get, what must not come back)
BODIES = [
    ("deep-array", DEEP_ARRAY, {"/problems/json-too-deep"}, "[[[["),
    ("deep-object", DEEP_OBJECT, {"/problems/json-too-deep"}, '{"a":{"a"'),
    ("nul", '{"hash_algorithm": "sha256", "hashes": [], "profile": "q\\u0000es"}',
     {"/problems/unacceptable-text"}, "\\u0000"),
    ("lone-surrogate", '{"hash_algorithm": "sha256", "hashes": [], "profile": "\\ud800"}',
     {"/problems/unacceptable-text"}, "\\ud800"),
    ("nan", '{"hash_algorithm": "sha256", "hashes": [NaN]}', {"/problems/malformed-json"}, "NaN"),
    ("5000-digits", DIGITS, {"/problems/malformed-json"}, DIGITS[:100]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "types", "echo"), [b[1:] for b in BODIES], ids=[b[0] for b in BODIES]
)
async def test_hostile_json_gets_a_stable_400_problem(
    client: TestClient[Any, Any], batch_token: str, text: str, types: set[str], echo: str
) -> None:
    resp = await client.post(
        "/api/v1/signatures",
        data=text.encode(),
        headers=api_headers(batch_token, **{"Content-Type": "application/json"}),
    )
    answer = await resp.text()
    assert resp.status == 400, answer
    assert resp.content_type == PROBLEM
    assert json.loads(answer)["type"] in types
    assert echo not in answer


@pytest.mark.parametrize(
    ("text", "echo"), [(b[1], b[3]) for b in BODIES], ids=[b[0] for b in BODIES]
)
async def test_hostile_json_gets_a_csc_invalid_request(
    client: TestClient[Any, Any], batch_token: str, text: str, echo: str
) -> None:
    """The CSC API answers with its own error body (CSC v2.0.0.2 §11.1), from the same parser."""
    resp = await client.post(
        "/csc/v2/credentials/info",
        data=text.replace('"profile"', '"credentialID"').encode(),
        headers=api_headers(batch_token, **{"Content-Type": "application/json"}),
    )
    answer = await resp.text()
    assert resp.status == 400, answer
    assert resp.content_type == "application/json"
    assert json.loads(answer)["error"] == "invalid_request"
    assert echo not in answer


@pytest.mark.parametrize(
    ("url", "status", "kind"),
    [
        ("/api/v1/certificates?subject=a%00b", 400, "unacceptable-text"),
        ("/api/v1/certificates/ab%00cd", 400, "unacceptable-text"),
        ("/api/v1/certificates?since=9999-12-31T23:59:59-14:00", 422, "invalid-request"),
        ("/api/v1/certificates?limit=%C2%B2", 422, "invalid-request"),
        ("/api/v1/log/entries?limit=%C2%B2", 400, "invalid-log-query"),
        ("/api/v1/log/entries/%C2%B2", 400, "invalid-log-query"),
    ],
)
async def test_hostile_query_and_path_get_a_stable_problem(
    client: TestClient[Any, Any], auditor_token: str, url: str, status: int, kind: str
) -> None:
    resp = await client.get(url, headers=api_headers(auditor_token))
    answer = await resp.text()
    assert resp.status == status, answer
    assert resp.content_type == PROBLEM
    assert json.loads(answer)["type"] == f"/problems/{kind}"
    assert "\x00" not in answer and "9999-12-31" not in answer and "²" not in answer


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/v1/signatures", {"POST"}),
        ("DELETE", "/csc/v2/info", {"GET", "HEAD", "POST"}),
        ("PATCH", "/api/v1/certificates", {"GET", "HEAD"}),
        ("GET", "/tsa", {"POST"}),
        ("OPTIONS", "/csc/v1/signatures/signHash", {"POST"}),
    ],
)
async def test_an_undescribed_method_gets_405_with_allow(
    client: TestClient[Any, Any], method: str, path: str, allowed: set[str]
) -> None:
    resp = await client.request(method, path)
    assert resp.status == 405
    assert resp.content_type == PROBLEM
    assert (await resp.json())["type"] == "/problems/method-not-allowed"
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == allowed


SECRET = "zz-this-must-not-come-back-zz"
#: Requests aiohttp's parser refuses before any middleware (RFC 9112 §2.2, §3, §5).
S = SECRET.encode()
UNPARSABLE = [
    ("nul-in-header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + S + b"\x00\r\n"),
    ("header-line-too-long", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + S * 400 + b"\r\n"),
    ("authorization-100k",
     b"GET /api/v1/certificates HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + S * 3500),
    ("bad-request-line", b"GET /" + S + b"\x01 HTTP/1.1\r\nHost: x\r\n"),
    ("not-http", S + b" " + S + b"\r\n"),
    ("request-line-too-long", b"GET /?" + S * 800 + b" HTTP/1.1\r\nHost: x\r\n"),
    ("bad-content-length", b"POST /tsa HTTP/1.1\r\nHost: x\r\nContent-Length: -" + S + b"\r\n"),
]  # fmt: skip


@pytest.mark.parametrize("raw", [u[1] for u in UNPARSABLE], ids=[u[0] for u in UNPARSABLE])
async def test_an_unparsable_request_gets_a_quiet_400_problem(
    client: TestClient[Any, Any], raw: bytes, capsys: Any
) -> None:
    capsys.readouterr()
    status, head, body = await raw_exchange(client.port, raw + b"\r\n")
    assert status == 400, body
    assert f"content-type: {PROBLEM}" in head
    assert json.loads(body)["type"] == "/problems/malformed-request"
    assert SECRET[:12].encode() not in body and SECRET[:12] not in head
    out, err = capsys.readouterr()
    assert "http_request_unparsable" in out + err
    assert SECRET[:12] not in out + err and "Traceback" not in out + err


@pytest.mark.parametrize("path", ["/api/v1/signatures", "/csc/v2/credentials/info"])
async def test_a_client_that_leaves_mid_body_is_one_499_line(
    client: TestClient[Any, Any], batch_token: str, path: str, capsys: Any
) -> None:
    capsys.readouterr()
    _, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {batch_token}\r\nContent-Length: 100000\r\n\r\n"
        '{"hash_algorithm": "sha256", "hashes": ['.encode()
    )
    await writer.drain()
    await asyncio.sleep(2)  # the handler is reading the body
    writer.close()
    out = ""
    for _ in range(50):
        await asyncio.sleep(0.1)
        out += "".join(capsys.readouterr())
        if "client_disconnected" in out:
            break
    await asyncio.sleep(0.3)
    out += "".join(capsys.readouterr())
    assert out.count("client_disconnected") == 1, out
    assert re.search(r"status\W+499", out), out
    assert not re.search(r"status\W+500", out), out
    assert "unhandled_error" not in out and "Traceback" not in out
    assert (await client.get("/healthz")).status == 200


@pytest.fixture(scope="module")
def signer(serve: Callable[..., AbstractContextManager[SignerProcess]]) -> Iterator[SignerProcess]:
    with serve("hostile-signer", QES__SERVER__WORKERS="1", **EVERY_SURFACE) as process:
        yield process


@pytest.mark.parametrize("path", ["/api/v1/signatures", "/csc/v2/credentials/info"])
async def test_qes_serve_logs_a_client_that_leaves_mid_body_once_as_499(
    signer: SignerProcess, batch_token: str, path: str
) -> None:
    """`qes serve` does not cancel handlers (aiohttp's default): the body read fails, and the
    log has one client_disconnected line with status 499, no error and no traceback."""
    before = signer.log.read_text()
    _, writer = await asyncio.open_connection("127.0.0.1", signer.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {batch_token}\r\nContent-Length: 100000\r\n\r\n{{".encode()
    )
    await writer.drain()
    await asyncio.sleep(1)
    writer.close()
    lines: list[dict[str, Any]] = []
    for _ in range(50):
        await asyncio.sleep(0.1)
        lines = [json.loads(x) for x in signer.log.read_text()[len(before) :].splitlines()]
        if any(line["event"] == "client_disconnected" for line in lines):
            break
    await asyncio.sleep(0.3)
    lines = [json.loads(x) for x in signer.log.read_text()[len(before) :].splitlines()]
    gone = [line for line in lines if line["event"] == "client_disconnected"]
    assert [line["status"] for line in gone] == [499], lines
    assert all(line["level"] not in ("error", "critical") for line in lines), lines
    assert all("exception" not in line for line in lines), lines


@pytest.mark.parametrize(
    ("path", "status", "media_type"),
    [
        ("/audit/static/audit.css", 200, "text/css"),
        ("/sign/static/sign.css", 200, "text/css"),
        ("/sign/static/base/audit.css", 200, "text/css"),
        ("/approvals/static/audit.css", 200, "text/css"),
        ("/audit/static/nothing.css", 404, PROBLEM),
        ("/audit/static/..%2f..%2fapp.py", 404, PROBLEM),
        ("/sign/static/%2e%2e", 404, PROBLEM),
    ],
)
async def test_static_files_are_served_and_unknown_names_are_a_404_problem(
    signer: SignerProcess, path: str, status: int, media_type: str
) -> None:
    status_got, head, body = await raw_exchange(
        signer.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert status_got == status, body[:200]
    assert f"content-type: {media_type}" in head
    if status == 404:
        assert json.loads(body)["type"] == "/problems/not-found"


@pytest.mark.parametrize("algorithm", [[], {}, 1, None])
async def test_a_hash_algorithm_of_another_type_is_a_422_not_a_500(
    client: TestClient[Any, Any], batch_token: str, algorithm: Any
) -> None:
    """Issue 17: ``"hash_algorithm": []`` was a TypeError (unhashable) and a 500."""
    body = {"hash_algorithm": algorithm, "hashes": ["AAAA"]}
    resp = await client.post("/api/v1/signatures", json=body, headers=api_headers(batch_token))
    assert resp.status == 422, await resp.text()
    assert resp.content_type == PROBLEM
    assert (await resp.json())["type"] == "/problems/unsupported-hash-algorithm"


@pytest.mark.parametrize(
    "path",
    ["/audit/logout", "/approvals/logout", "/approvals/x/decide", "/sign/x/consent",
     "/csc/v2/oauth2/consent/x"],
)  # fmt: skip
@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "multipart/form-data; boundary=b", "application/json"]
)
async def test_a_form_page_given_another_body_refuses_it_without_a_500(
    signer: SignerProcess, path: str, content_type: str
) -> None:
    """The service's forms post application/x-www-form-urlencoded; a multipart body without
    its boundary (RFC 7578 §4.1) once broke aiohttp's form parser with a 500 (found by an
    outside schemathesis run, bench/fuzz.py). Any other body is an empty form."""
    body = b'{"csrf": "x"}' if content_type == "application/json" else b"--b--\r\n"
    status, _head, answer = await raw_exchange(
        signer.port,
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}"
        f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    assert status is not None and status < 500, (status, answer[:300])  # 303 (no session), 4xx
    log = signer.log.read_text()
    assert "unhandled_error" not in log and "Traceback" not in log
