"""Completion webhooks of signing requests (issue 4): tell the RP that a request ended.

A request created with ``webhook_url`` gets one POST when it ends (completed, failed,
cancelled, or expired when next used): the JSON body ``{"id", "state", "status"}`` (compact,
keys sorted), never the signatures; the RP fetches those with its own credentials
(``GET /api/v1/signing-requests/{id}``). The POST is sent after the ending is committed, from a
background task, so the browser's redirect never waits for it; failed attempts (no 2xx, no
answer within the timeout) are retried with doubling backoff. Each attempt is recorded on the
request (``webhook_attempts``, ``webhook_result``, ``webhook_attempted_at``,
``webhook_delivered_at``), shown in the RP's GET and readable by an operator in the database.
Deliveries still pending when the service stops (or is killed) are resumed, and requests the
sweeper ends ('failed', error 'abandoned') get theirs: :class:`WebhookResumer`, on every
replica, resends an ended request's undelivered webhook that still has attempts left once
neither its end nor its last attempt is newer than ``sweeper.webhook_retry_after_seconds``
(longer than the live loop's pauses, so a delivery a live process is retrying is left to it),
one attempt per claim, under a lease in the database so that two replicas never send the same
delivery at once. A webhook may still arrive twice, rarely: a process killed after the RP's
2xx but before recording it sends it again; RPs deduplicate by ``id`` (the body only says "go
and fetch").

Authentication reuses the ``qes audit watch`` scheme (:mod:`signer.cli.watch`) with a timestamp
bound into the MAC against replays: the headers are ``X-Qes-Timestamp: <unix seconds>`` and
``X-Qes-Signature-256: sha256=<hex HMAC-SHA-256(key, timestamp + "." + body)>``. A receiver
recomputes it over the raw body, compares in constant time and refuses timestamps more than a
few minutes from its own clock (and may remember ids it has seen).

The key is derived, not stored: ``HMAC-SHA-256(SHA-256(client_secret), "qes-signer webhook
v1")``. The RP computes it from the client secret it already holds; the service from the
secret's SHA-256, which is all it stores. So ``qes client rotate`` rotates the webhook key too,
and no second secret needs handing over. Trade-off, deliberately accepted: someone who can
read ``rp_clients.secret_hash`` from the database can forge webhooks (not API calls, which need
the secret itself); since the webhook only says "go and fetch", a forged one makes the RP
fetch a request and see its true status.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from signer.errors import SignerError
from signer.settings.config import SweeperSettings
from signer.storage.signing_requests import RpClientStore, SigningRequestStore, StoredRequest
from signer.storage.webhook_outbox import DueWebhook, WebhookOutboxStore

TIMESTAMP_HEADER = "X-Qes-Timestamp"
SIGNATURE_HEADER = "X-Qes-Signature-256"
MAX_BACKOFF = 60.0
#: One POST: ``(url, body, headers, timeout seconds)`` -> (delivered (2xx), result text). The
#: HTTP edge supplies it (``signer.http.kit.outbound``), so this module stays free of aiohttp.
Post = Callable[[str, bytes, Mapping[str, str], float], Awaitable[tuple[bool, str]]]
#: Told of each delivery attempt: its result text and whether it was delivered.
RecordAttempt = Callable[[str, bool], Awaitable[None]]
KEY_LABEL = b"qes-signer webhook v1"

log = structlog.get_logger(__name__)


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Qes-Signature-256`` value: ``sha256=`` + hex HMAC-SHA-256 of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def webhook_key(secret_hash: bytes) -> bytes:
    """The RP's webhook HMAC key from ``SHA-256(client_secret)``."""
    return hmac.new(secret_hash, KEY_LABEL, hashlib.sha256).digest()


def signed_bytes(timestamp: str, body: bytes) -> bytes:
    """What the MAC covers: the timestamp header's value, ``.``, the raw body."""
    return timestamp.encode() + b"." + body


def payload(req: StoredRequest, status: str) -> bytes:
    return request_payload(req.id, req.state, status)


def request_payload(request_id: uuid.UUID, state: str, status: str) -> bytes:
    """A signing request's webhook body: ``{"id", "state", "status"}``."""
    return _compact({"id": str(request_id), "state": state, "status": status})


def approval_payload(request_id: uuid.UUID, status: str) -> bytes:
    """An approval request's webhook body: ``{"id", "status"}`` (issue 7)."""
    return _compact({"id": str(request_id), "status": status})


def _compact(fields: Mapping[str, str]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


class Delivery(Protocol):
    """A request's webhook delivery columns (web signing and approval requests alike)."""

    @property
    def webhook_url(self) -> str | None: ...
    @property
    def webhook_attempts(self) -> int: ...
    @property
    def webhook_result(self) -> str | None: ...
    @property
    def webhook_attempted_at(self) -> datetime | None: ...
    @property
    def webhook_delivered_at(self) -> datetime | None: ...


def delivery_json(req: Delivery, *, last_attempt: bool = True) -> dict[str, Any] | None:
    """The ``webhook`` member of a request's status: where it goes, how often it was tried, the
    last result and when it was delivered (``last_attempt``: and when last tried); None without
    a webhook URL."""
    if req.webhook_url is None:
        return None
    body: dict[str, Any] = {
        "url": req.webhook_url,
        "attempts": req.webhook_attempts,
        "last_result": req.webhook_result,
    }
    if last_attempt:
        body["last_attempt_at"] = _iso(req.webhook_attempted_at)
    body["delivered_at"] = _iso(req.webhook_delivered_at)
    return body


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class Webhooks:
    """Background deliveries; :meth:`close` cancels those still running (app cleanup)."""

    def __init__(
        self,
        *,
        requests: SigningRequestStore,
        rps: RpClientStore,
        post: Post,
        attempts: int = 6,
        backoff: float = 1.0,
        timeout: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._requests = requests
        self._rps = rps
        self._post_once = post
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._sleep = sleep
        self._wall = wall
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, req: StoredRequest, status: str) -> None:
        """Schedule the delivery for a request that has just ended (its end committed)."""
        if req.webhook_url is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(req.id, req.client_id, req.webhook_url, payload(req, status))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait(self) -> None:
        """Until the deliveries scheduled so far are done (tests, orderly shutdowns)."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def post(self, url: str, key: bytes, body: bytes) -> tuple[bool, str]:
        """One signed POST (no retry): (delivered, result text)."""
        timestamp = str(int(self._wall()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(key, signed_bytes(timestamp, body)),
        }
        return await self._post_once(url, body, headers, self.timeout)

    def send(self, url: str, key: bytes, body: bytes, record: RecordAttempt, *, name: str) -> None:
        """Schedule a signed POST of ``body`` to ``url`` with retries (the scheme above);
        ``record`` is told of every attempt. Also used by approval requests (issue 7)."""
        task = asyncio.get_running_loop().create_task(self._send(url, key, body, record, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, url: str, key: bytes, body: bytes, record: RecordAttempt, name: str
    ) -> None:
        try:
            await self._attempts(url, key, body, record, name)
        except asyncio.CancelledError:
            raise
        except Exception:  # a background task: log, never crash the loop
            log.exception("webhook_delivery_error", id=name)

    async def _attempts(
        self, url: str, key: bytes, body: bytes, record: RecordAttempt, name: str
    ) -> None:
        delay = self.backoff
        result = "not attempted"
        for attempt in range(self.attempts):
            if attempt:
                await self._sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            ok, result = await self.post(url, key, body)
            await record(result, ok)
            if ok:
                log.info("webhook_delivered", id=name, attempts=attempt + 1)
                return
        log.warning("webhook_gave_up", id=name, attempts=self.attempts, result=result)

    async def _deliver(self, request_id: uuid.UUID, client_id: str, url: str, body: bytes) -> None:
        async def record(result: str, delivered: bool) -> None:
            await self._requests.record_webhook(
                request_id, datetime.now(UTC), result=result, delivered=delivered
            )

        try:
            found = await self._rps.get(client_id)
            if found is None:
                return
            await self._attempts(url, webhook_key(found[1]), body, record, str(request_id))
        except asyncio.CancelledError:
            raise
        except Exception:  # a background task: log, never crash the loop
            log.exception("webhook_delivery_error", id=str(request_id))


@dataclass(frozen=True, eq=False)
class WebhookResumer:
    """Sends the webhooks that are still due after a crash or a sweep (issue 14), on every
    replica, every ``sweeper.interval_seconds``.

    Due: the request has ended (``ended_at`` set: completed, failed, cancelled, expired,
    denied, or ended 'abandoned' by :mod:`signer.signing.sweeper`), its webhook is not
    delivered, it has had fewer than ``Webhooks.attempts`` attempts, and neither its end nor
    its last attempt is newer than ``sweeper.webhook_retry_after_seconds``. That age is longer
    than the live retry loop's longest pause (``MAX_BACKOFF`` plus one timeout), so a delivery
    a live process is still retrying is left to it. Each claim holds a lease (one retry period
    plus one timeout) and makes one attempt, recorded like the live ones; a failed attempt is
    due again one retry period later, until the attempts run out."""

    store: WebhookOutboxStore
    webhooks: Webhooks
    clock: Callable[[], datetime]
    settings: SweeperSettings
    batch: int = 100

    async def resume(self) -> int:
        """Claim what is due now and make one attempt each; returns how many were delivered."""
        now = self.clock()
        retry = timedelta(seconds=self.settings.webhook_retry_after_seconds)
        due = await self.store.claim(
            now=now,
            lease_until=now + retry + timedelta(seconds=self.webhooks.timeout),
            due_before=now - retry,
            max_attempts=self.webhooks.attempts,
            limit=self.batch,
        )
        results = await asyncio.gather(
            *(self._attempt(item) for item in due), return_exceptions=True
        )
        for item, outcome in zip(due, results, strict=True):
            if isinstance(outcome, BaseException):  # not recorded: due again after the lease
                log.warning("webhook_resume_failed", id=str(item.id), error=repr(outcome))
        return sum(outcome is True for outcome in results)

    async def run(self) -> None:
        """Resume at start, then every ``interval_seconds``, until cancelled."""
        while True:
            try:
                await self.resume()
            except SignerError as exc:  # the database is away: the next round tries again
                log.warning("webhook_resume_failed", error=str(exc))
            except Exception:  # a background loop: log, never end it
                log.exception("webhook_resume_error")
            await asyncio.sleep(self.settings.interval_seconds)

    async def _attempt(self, item: DueWebhook) -> bool:
        if item.kind == "signing":
            body = request_payload(item.id, item.state or "", item.status)
        else:
            body = approval_payload(item.id, item.status)
        ok, result = await self.webhooks.post(item.url, webhook_key(item.secret_hash), body)
        await self.store.record(item, self.clock(), result=result, delivered=ok)
        log.info("webhook_resumed", kind=item.kind, id=str(item.id), delivered=ok, result=result)
        return ok
