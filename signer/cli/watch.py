"""`qes audit watch`: follow the transparency log, print matching entries, post them to a webhook.

The watcher polls ``GET /api/v1/log/entries?from=N`` (auditor token, re-read from its file at
every poll so an external refresher can rotate it), prints one line per matching entry and, with
a webhook, POSTs each entry as JSON before printing it. Delivery is at least once and in index
order: an entry is printed only after the webhook accepted it (2xx), a failing delivery is
retried with exponential backoff, and when it keeps failing the watcher stops with a one-line
reason naming the entry, so nothing is dropped silently; ``--from`` that index resumes.

Webhook requests carry ``X-Qes-Signature-256: sha256=<hex>``, the HMAC-SHA-256 (RFC 2104) of the
exact body bytes under the shared secret, and ``X-Qes-Log-Index``; a receiver recomputes the
HMAC over the raw body, compares in constant time, and deduplicates by index.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ca.checkpoint import Checkpoint, SignedNote
from ca.errors import CaError
from ca.merkle import ConsistencyProof, TreeHead, verify_consistency
from signer.cli.client import ApiClient, ClientError
from signer.errors import ConfigError
from signer.flows.webhooks import MAX_BACKOFF, SIGNATURE_HEADER, signature
from signer.translog.anchor import Anchored, read_anchor

INDEX_HEADER = "X-Qes-Log-Index"
MAX_POLL_FAILURES = 10


class WatchStopped(Exception):
    """The watcher cannot go on; the message is one line and names where to resume."""


def entry_line(item: dict[str, Any]) -> str:
    """One line per entry: index, time, kind/outcome, then the known identifiers."""
    parts = [
        str(item["index"]),
        item["time"] or "-",
        f"{item['kind']}/{item['outcome']}",
        f"serial={item.get('serial') or '-'}",
        f"subject={item.get('subject') or '-'}",
        f"client={item.get('client_id') or '-'}",
        f"profile={item.get('profile') or '-'}",
    ]
    if item.get("reason"):
        parts.append(f"reason={item['reason']}")
    if item.get("claimed_issuer"):  # a refusal before authentication: never who asked
        parts.append(f"claimed_issuer={item['claimed_issuer']}(unverified)")
    if item.get("suppressed"):  # an aggregate of rate-limited refusals (signer.policy.refusals)
        parts.append(f"suppressed={item['suppressed']}")
    if item.get("purged"):
        parts.append("purged")
    return "  ".join(parts)


@dataclass(frozen=True)
class Webhook:
    """A receiver URL, the HMAC secret, and the retry policy of one delivery."""

    url: str
    secret: bytes = field(repr=False)
    attempts: int = 6
    backoff: float = 1.0
    timeout: float = 10.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ClientError(f"--webhook {self.url}: not an http(s) URL")
        if len(self.secret) < 16:
            raise ClientError("--webhook-secret-file: the secret must be at least 16 bytes")
        if self.attempts < 1 or self.backoff < 0:
            raise ClientError("--webhook-attempts must be >= 1 and --webhook-backoff >= 0")

    def _post(self, body: bytes, index: int) -> str | None:
        """One attempt: None when accepted (2xx), else why not."""
        req = urllib.request.Request(self.url, data=body, method="POST")  # noqa: S310
        req.add_header("Content-Type", "application/json")
        req.add_header(SIGNATURE_HEADER, signature(self.secret, body))
        req.add_header(INDEX_HEADER, str(index))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return str(getattr(exc, "reason", exc))

    def deliver(self, item: dict[str, Any]) -> None:
        """POST ``item``; retry with doubling backoff; raise :class:`WatchStopped` at the end."""
        body = json.dumps(item, sort_keys=True, separators=(",", ":")).encode()
        delay = self.backoff
        why = "not attempted"
        for attempt in range(self.attempts):
            if attempt:
                self.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            why = self._post(body, item["index"]) or ""
            if not why:
                return
        raise WatchStopped(
            f"webhook {self.url} failed for entry {item['index']} after {self.attempts}"
            f" attempts ({why}); resume with --from {item['index']}"
        )


@dataclass(frozen=True)
class Watch:
    """What to follow: filters, the first index, polling and stop rules."""

    client: Callable[[], ApiClient]
    start: int = 0
    subject: str | None = None
    issuer: str | None = None
    client_id: str | None = None
    interval: float = 5.0
    batch: int = 500
    once: bool = False
    sleep: Callable[[float], None] = time.sleep

    def _page(self, start: int) -> dict[str, Any]:
        page: dict[str, Any] = self.client().get(
            "/api/v1/log/entries",
            **{"from": start},
            limit=self.batch,
            subject=self.subject,
            issuer=self.issuer,
            client_id=self.client_id,
        )
        return page

    def pages(self) -> Iterator[tuple[list[dict[str, Any]], int, int]]:
        """Yield ``(matching items, next index, tree size)`` per poll, in index order.

        A connection failure or server error is retried every ``interval`` (the service may
        be restarting), a client error (bad token, no auditor role) stops at once.
        """
        position, failures = self.start, 0
        while True:
            try:
                page = self._page(position)
            except ClientError as exc:
                failures += 1
                if str(exc).startswith("HTTP 4") or failures >= MAX_POLL_FAILURES:
                    raise WatchStopped(f"{exc}; resume with --from {position}") from exc
                self.sleep(self.interval)
                continue
            failures = 0
            items, position, size = page["items"], int(page["next"]), int(page["tree_size"])
            yield items, position, size
            if position >= size:
                if self.once:
                    return
                self.sleep(self.interval)


@dataclass(frozen=True)
class AnchorStatus:
    """One ``anchor`` line of the watch output; ``extended``: True when the log's newest
    checkpoint provably extends the anchor, False when it provably does not (or the anchor
    file is damaged), None when it cannot tell yet (nothing anchored or published)."""

    line: str
    extended: bool | None


def anchor_status(path: Path, client: ApiClient) -> AnchorStatus:
    """The newest published checkpoint kept outside the database (``log.anchor_file``,
    :mod:`signer.translog.anchor`), and whether the log's newest checkpoint extends it: an
    RFC 9162 §2.1.4 consistency proof from the service, checked here (§2.1.4.2)."""
    try:
        anchor = read_anchor(path)
    except ConfigError as exc:
        return AnchorStatus(f"anchor  path={path}  extends=NO ({exc})", False)
    if anchor is None:
        return AnchorStatus(f"anchor  path={path}  none yet", None)
    head = f"anchor  path={path}  size={anchor.size}  root={anchor.root.hex()}"
    why = _damaged(anchor)
    if why is not None:
        return AnchorStatus(f"{head}  extends=NO (the anchor file {why})", False)
    try:
        answer = client.get("/api/v1/log/proof/consistency", old=anchor.size)
    except ClientError as exc:
        if str(exc).startswith("HTTP 400"):  # the anchor's size is past the newest checkpoint
            older = f"the log's newest checkpoint is older: {exc}"
            return AnchorStatus(f"{head}  extends=NO ({older})", False)
        return AnchorStatus(f"{head}  extends=unknown ({exc})", None)  # none published, or down
    try:
        latest = Checkpoint.parse(SignedNote.parse(answer["checkpoint"]).text)
        hashes = tuple(base64.b64decode(h) for h in answer["hashes"])
        proof = ConsistencyProof(anchor.size, int(answer["new_size"]), hashes)
        verify_consistency(proof, TreeHead(anchor.size, anchor.root), latest.tree_head)
    except (CaError, KeyError, TypeError, ValueError) as exc:
        return AnchorStatus(
            f"{head}  extends=NO (no valid consistency proof to the log's checkpoint: {exc})",
            False,
        )
    return AnchorStatus(f"{head}  extends=yes (checkpoint size {latest.size})", True)


def _damaged(anchor: Anchored) -> str | None:
    """Why the anchor's signed note does not state its own size and root, if it does not."""
    try:
        noted = Checkpoint.parse(SignedNote.parse(anchor.note).text)
    except CaError as exc:
        return f"holds no checkpoint note ({exc})"
    if (noted.size, noted.root_hash) != (anchor.size, anchor.root):
        return "names another size or root than its note"
    return None


class AnchorLines:
    """``qes audit watch --anchor FILE``: the anchor's line at the first poll and whenever it
    changes (the anchor advanced, or the log stopped extending it)."""

    def __init__(self, path: Path, client: Callable[[], ApiClient]) -> None:
        self.path = path
        self._client = client
        self.last: AnchorStatus | None = None

    def poll(self, emit: Callable[[str], None]) -> None:
        status = anchor_status(self.path, self._client())
        if self.last is None or status.line != self.last.line:
            emit(status.line)
        self.last = status

    @property
    def broken(self) -> bool:
        """The last look found that the log does not extend the anchor."""
        return self.last is not None and self.last.extended is False
