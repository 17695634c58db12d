"""`qes audit watch` against the running service: the entries API, one line per matching entry
(refusals matched through their keyed commitments), webhook deliveries whose HMAC-SHA256
signature a receiver written here checks with the standard library, retries, a webhook that
keeps failing stopping the watcher with the entry to resume from, and resuming with --from."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from ca.checkpoint import Checkpoint, SignedNote
from signer.translog.anchor import CheckpointAnchor
from tests.support.service import api_headers, free_port, run_qes, sign_random

SECRET = b"webhook secret for the watch test"


@dataclass
class Receiver:
    """A webhook endpoint: answers ``statuses`` in turn (then 204), keeps verified bodies."""

    statuses: list[int] = field(default_factory=list)
    attempts: int = 0
    delivered: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        got = request.headers.get("X-Qes-Signature-256", "")
        assert hmac.compare_digest(want, got), "webhook signature does not verify"
        if self.statuses:
            return web.Response(status=self.statuses.pop(0))
        item = json.loads(body)
        assert request.headers["X-Qes-Log-Index"] == str(item["index"])
        self.delivered.append(item)
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


async def _integrate(client: TestClient, auditor_token: str) -> int:
    resp = await client.post("/api/v1/log/checkpoints", headers=api_headers(auditor_token))
    assert resp.status in (200, 201)
    page = await client.get("/api/v1/log/entries?limit=1", headers=api_headers(auditor_token))
    return int((await page.json())["tree_size"])


async def _watch(client: TestClient, token_file: Path, *args: str) -> tuple[int, str, str]:
    """`qes audit watch` in a child process (the service runs on this event loop)."""
    base = str(client.make_url("")).rstrip("/")
    return await run_qes(
        *("audit", "watch", "--url", base, "--token-file", str(token_file)),
        *("--interval", "0.1", "--once", "-q", *args),
    )


def _indexes(stdout: str) -> list[int]:
    return [int(line.split()[0]) for line in stdout.splitlines()]


async def test_watch_prints_filters_and_delivers_signed_webhooks(
    client: TestClient,
    batch_token: str,
    alice_token: str,
    auditor_token: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    start = await _integrate(client, auditor_token)
    # one token, several signing operations: each its own Idempotency-Key (sign_random's)
    first = await sign_random(client, batch_token)
    refused = await sign_random(client, batch_token, profile="no-such-profile")
    other = await sign_random(client, alice_token)  # another client (demo-web): filtered out
    second = await sign_random(client, batch_token)
    assert (first[0], refused[0], other[0], second[0]) == (201, 403, 201, 201)
    i1, i2 = first[1]["log"]["index"], second[1]["log"]["index"]
    assert other[1]["log"]["index"] == i1 + 2 and i2 == i1 + 3
    await _integrate(client, auditor_token)
    tokens = tmp_path / "auditor.token"
    tokens.write_text(auditor_token)
    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET)

    receiver.statuses = [500, 502]  # two failed attempts for the first entry, then accepted
    code, out, err = await _watch(
        client,
        tokens,
        *("--from", str(start), "--client", "demo-batch"),
        *("--webhook", receiver.url, "--webhook-secret-file", str(secret)),
        *("--webhook-backoff", "0.05"),
    )
    assert code == 0, err
    assert _indexes(out) == [i1, i1 + 1, i2]
    lines = out.splitlines()
    assert "issuance/completed" in lines[0] and f"serial={first[1]['serial']}" in lines[0]
    assert "refusal/refused" in lines[1] and "reason=" in lines[1]
    assert "client=demo-batch" in lines[1]  # the refusal's client_id commitment matched
    assert f"serial={second[1]['serial']}" in lines[2]
    assert receiver.attempts == 5
    assert [d["index"] for d in receiver.delivered] == [i1, i1 + 1, i2]
    assert receiver.delivered[0]["serial"] == first[1]["serial"]
    assert receiver.delivered[0]["subject"] == "demo-batch"
    assert receiver.delivered[1]["outcome"] == "refused" and receiver.delivered[1]["serial"] is None

    # By identity: the refusal matches through the token_subject commitment; alice is out.
    code, out, err = await _watch(client, tokens, "--from", str(start), "--identity", "demo-batch")
    assert code == 0, err
    assert _indexes(out) == [i1, i1 + 1, i2]
    assert "subject=demo-batch" in out.splitlines()[1]
    code, out, err = await _watch(client, tokens, "--from", str(start), "--identity", "alice")
    assert code == 0, err
    assert _indexes(out) == [i1 + 2]
    code, out, _ = await _watch(client, tokens, "--from", str(start), "--identity", "nobody")
    assert code == 0 and out == ""

    # Resume after the last printed index: only what came later.
    third = await sign_random(client, batch_token)
    await _integrate(client, auditor_token)
    code, out, err = await _watch(client, tokens, "--from", str(i2 + 1), "--client", "demo-batch")
    assert code == 0, err
    assert _indexes(out) == [third[1]["log"]["index"]]


async def test_a_webhook_that_keeps_failing_stops_the_watch_naming_the_entry(
    client: TestClient, batch_token: str, auditor_token: str, receiver: Receiver, tmp_path: Path
) -> None:
    status, signed = await sign_random(client, batch_token)
    assert status == 201
    index = signed["log"]["index"]
    await _integrate(client, auditor_token)
    tokens = tmp_path / "auditor.token"
    tokens.write_text(auditor_token)
    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET)
    receiver.statuses = [503] * 10
    code, out, err = await _watch(
        client,
        tokens,
        *("--from", str(index), "--client", "demo-batch"),
        *("--webhook", receiver.url, "--webhook-secret-file", str(secret)),
        *("--webhook-attempts", "3", "--webhook-backoff", "0.05"),
    )
    assert code == 1
    assert out == ""  # nothing is reported as seen before it was delivered
    assert receiver.attempts == 3 and receiver.delivered == []
    assert len(err.strip().splitlines()) == 1
    assert f"entry {index}" in err and f"--from {index}" in err and "HTTP 503" in err

    code, _, err = await _watch(client, tokens, "--webhook", receiver.url)
    assert code == 1 and "--webhook-secret-file" in err


async def test_entries_api_problems(
    client: TestClient, batch_token: str, auditor_token: str
) -> None:
    anonymous = await client.get("/api/v1/log/entries")
    assert anonymous.status == 401
    assert anonymous.content_type == "application/problem+json"
    batch = await client.get("/api/v1/log/entries", headers=api_headers(batch_token))
    assert batch.status == 403
    for query in ("limit=0", "limit=1001", "from=-1", "from=x", "colour=red"):
        resp = await client.get(f"/api/v1/log/entries?{query}", headers=api_headers(auditor_token))
        assert resp.status == 400, query
        assert (await resp.json())["type"] == "/problems/invalid-log-query"
    spec = await (await client.get("/openapi.json")).json()
    assert "/api/v1/log/entries" in spec["paths"]


def _anchor_note(note: str, size: int, root: bytes) -> str:
    """The real note's signature lines under another checkpoint text: a forged anchor (the
    watcher parses the anchor; the service, not the watcher, holds the log key)."""
    real = Checkpoint.parse(SignedNote.parse(note).text)
    signatures = note.split("\n\n", 1)[1]
    return Checkpoint(real.origin, size, root).text() + "\n" + signatures


def _write_anchor(
    path: Path, note: str, *, size: int | None = None, root: bytes | None = None
) -> None:
    real = Checkpoint.parse(SignedNote.parse(note).text)
    size = real.size if size is None else size
    root = real.root_hash if root is None else root
    body = {"origin": real.origin, "size": size, "root": root.hex(), "note": note}
    path.write_text(json.dumps(body), encoding="utf-8")


async def test_watch_shows_the_anchor_and_whether_the_log_extends_it(
    client: TestClient, batch_token: str, auditor_token: str, tmp_path: Path
) -> None:
    """Issue 14, item 4: the newest published checkpoint kept outside the database is in the
    watch output, with whether the log's newest checkpoint extends it (an RFC 9162 consistency
    proof from the service, checked by the watcher); exit 1 when it does not."""
    tokens = tmp_path / "auditor.token"
    tokens.write_text(auditor_token)
    anchor = tmp_path / "anchor" / "checkpoint.json"
    await _integrate(client, auditor_token)
    published = await client.post("/api/v1/log/checkpoints", headers=api_headers(auditor_token))
    anchored_note = await published.text()
    anchored = Checkpoint.parse(SignedNote.parse(anchored_note).text)
    # As the service anchors (signer.translog.anchor); the store is not used to write.
    CheckpointAnchor(anchor, None).advance(  # type: ignore[arg-type]
        anchored.origin, anchored.size, anchored.root_hash, anchored_note
    )
    for _ in range(3):
        assert (await sign_random(client, batch_token))[0] == 201
    newest = await _integrate(client, auditor_token)
    assert newest > anchored.size

    async def watch_anchor() -> tuple[int, list[str]]:
        code, out, err = await _watch(client, tokens, "--from", str(10**9), "--anchor", str(anchor))
        assert code in (0, 1), err
        return code, out.splitlines()

    code, lines = await watch_anchor()
    assert code == 0
    assert lines == [
        f"anchor  path={anchor}  size={anchored.size}  root={anchored.root_hash.hex()}"
        f"  extends=yes (checkpoint size {newest})"
    ]

    # The same size with another root (a fork), properly noted: the proof fails.
    other = hashlib.sha256(b"another log").digest()
    _write_anchor(anchor, _anchor_note(anchored_note, anchored.size, other), root=other)
    code, lines = await watch_anchor()
    assert code == 1
    [line] = lines
    assert f"size={anchored.size}  root={other.hex()}  extends=NO (no valid consistency" in line

    # An anchor past the log's newest checkpoint (the database restored from an old backup).
    ahead = newest + 5
    _write_anchor(anchor, _anchor_note(anchored_note, ahead, other), size=ahead, root=other)
    code, lines = await watch_anchor()
    assert code == 1
    [line] = lines
    assert f"size={ahead}" in line and "extends=NO (the log's newest checkpoint is older" in line

    # A damaged anchor file: its fields and its note disagree.
    _write_anchor(anchor, anchored_note, root=other)
    code, lines = await watch_anchor()
    assert code == 1 and "names another size or root than its note" in lines[0]

    anchor.unlink()
    code, lines = await watch_anchor()
    assert code == 0 and lines == [f"anchor  path={anchor}  none yet"]
