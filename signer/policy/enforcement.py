"""Enforcing the signing policy and the kill switch at every entry point that signs.

:class:`Gate` is consulted by :meth:`signer.signing.pipeline.SigningService.sign` (batch API, PDF
upload, web signing) and, before consent, by the web flow. Its hot path is in memory: the
suspensions are a set each process keeps (:class:`Suspensions`), the policy is the parsed file
(:class:`signer.policy.file.PolicyFile`). Only a matching rule with a ``rate_limit`` costs a
database round trip (the shared window counters, :mod:`signer.storage.policy`).

Kill switch: suspensions live in PostgreSQL. Each process LISTENs on ``qes_suspensions``
(PostgreSQL NOTIFY, sent in the transaction of the change) and also polls a version number every
``poll`` seconds, in case the listening connection was lost; either way it reloads the whole
(small) table and swaps its set, so a change reaches every replica within about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import math
import uuid
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta

import asyncpg
import structlog

from ca.logentry import PrivacyKey
from idp_adapter.principal import Principal
from signer.errors import ConfigError, DatabaseUnavailable, RequestError
from signer.policy.file import PolicyFile
from signer.policy.rules import Decision, PolicyFileError, PolicyRefusal, RateLimit, RateLimited
from signer.settings.config import Settings
from signer.storage.policy import (
    NOTIFY_CHANNEL,
    AdminAction,
    PolicyStore,
    Suspension,
    Target,
    Window,
)
from signer.translog.admin import AdminLog
from signer.translog.log import admin_entry

log = structlog.get_logger(__name__)
MAX_REASON = 500
LISTEN_CONNECT_TIMEOUT = 5.0

__all__ = [
    "ApprovalRequired",
    "Gate",
    "NotSuspended",
    "Suspended",
    "SuspensionSet",
    "Suspensions",
    "admin_entry",
    "cli_actor",
]


class Suspended(PolicyRefusal):
    """An administrator suspended this identity, this client or the whole signer."""

    slug = "suspended"
    title = "Signing is suspended for this identity, client or service"


class ApprovalRequired(PolicyRefusal):
    """The matching rule needs m-of-n approval, which this entry point cannot collect."""

    slug = "approval-required"
    title = "The signing policy requires approval for this request"


class ReasonTooLong(RequestError):
    slug = "reason-too-long"
    title = "The reason is longer than 500 characters"
    status = 422


class NotSuspended(RequestError):
    slug = "not-suspended"
    title = "There is no such suspension"
    status = 404


@dataclass(frozen=True)
class SuspensionSet:
    """The suspensions in force, as sets (membership costs nothing on the hot path)."""

    everything: bool = False
    identities: frozenset[tuple[str, str]] = frozenset()
    clients: frozenset[str] = frozenset()
    #: The suspensions themselves (who, since when, why), for the audit UI's banner.
    items: tuple[Suspension, ...] = ()

    @classmethod
    def of(cls, suspensions: list[Suspension]) -> SuspensionSet:
        targets = [s.target for s in suspensions]
        return cls(
            items=tuple(suspensions),
            everything=any(t.scope == "all" for t in targets),
            identities=frozenset(
                (t.token_issuer or "", t.token_subject or "")
                for t in targets
                if t.scope == "identity"
            ),
            clients=frozenset(t.client_id or "" for t in targets if t.scope == "client"),
        )

    def check(self, principal: Principal, client_id: str | None) -> None:
        self.check_identity(principal.issuer, principal.subject, client_id)

    def check_identity(self, issuer: str, subject: str, client_id: str | None) -> None:
        self.check_client(client_id)
        if (issuer, subject) in self.identities:
            raise Suspended(f"identity {subject} is suspended")

    def check_client(self, client_id: str | None) -> None:
        """The whole signer, or this RP client (before anyone has logged in)."""
        if self.everything:
            raise Suspended("the whole signer is suspended")
        if client_id is not None and client_id in self.clients:
            raise Suspended(f"client {client_id} is suspended")


class UnknownIssuer(RequestError):
    slug = "unknown-issuer"
    title = "The issuer is not one this service trusts"
    status = 422


def resolve_issuer(settings: Settings, value: str) -> str:
    """The ``iss`` of a configured issuer, given as its ``iss`` or as its configured name (an
    operator may type either); anything else is refused (a typo would suspend no one)."""
    for issuer in settings.issuers:
        if value in (issuer.issuer, issuer.name):
            return issuer.issuer
    known = sorted({i.issuer for i in settings.issuers} | {i.name for i in settings.issuers})
    raise UnknownIssuer(f"issuer {value!r} is not configured (one of: {', '.join(known)})")


def cli_actor() -> str:
    """Who runs an operator command, for the log (committed, never in clear)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


@dataclass(eq=False)
class Suspensions:
    """This process's copy of the suspensions, and the administrative actions on them."""

    store: PolicyStore
    privacy_key: PrivacyKey
    clock: Callable[[], datetime]
    _: KW_ONLY
    dsn: str | None = None
    poll: float = 1.0
    current: SuspensionSet = field(default_factory=SuspensionSet, init=False)
    _version: int = field(default=-1, init=False, repr=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    async def refresh(self) -> None:
        """Reload the set from the database (it is small) and swap it in."""
        version, suspensions = await self.store.suspensions()
        self.current = SuspensionSet.of(suspensions)
        if version != self._version:
            log.info(
                "suspensions_loaded",
                version=version,
                identities=len(self.current.identities),
                clients=len(self.current.clients),
                everything=self.current.everything,
            )
        self._version = version

    async def list(self) -> list[Suspension]:
        return (await self.store.suspensions())[1]

    async def act(
        self,
        action: str,
        target: Target,
        *,
        actor_issuer: str | None,
        actor_subject: str,
        request_id: str,
        reason: str | None = None,
    ) -> AdminAction | None:
        """Suspend or resume ``target``, logged (kind 0x04) in the same transaction. None when
        it was already so (suspend twice); :class:`NotSuspended` to resume what is not."""
        if reason is not None and len(reason) > MAX_REASON:
            raise ReasonTooLong(f"reason is longer than {MAX_REASON} characters")
        done = AdminAction(
            id=uuid.uuid4(),
            request_id=request_id,
            action=action,
            target=target,
            reason=reason or None,
            actor_issuer=actor_issuer,
            actor_subject=actor_subject,
            acted_at=self.clock(),
        )
        if not await self.store.act(done, admin_entry(done).encode(self.privacy_key)):
            if action == "resume":
                raise NotSuspended(f"{target.describe()} is not suspended")
            return None
        log.warning(
            f"{action}ed",
            scope=target.scope,
            issuer=target.token_issuer,
            subject=target.token_subject,
            client_id=target.client_id,
            action_id=str(done.id),
        )
        await self.refresh()
        return done

    async def run(self) -> None:
        """Follow changes until cancelled: NOTIFY when listening works, polling always."""
        conn: asyncpg.Connection | None = None
        try:
            while True:
                if conn is None or conn.is_closed():
                    conn = await self._listen()
                self._wake.clear()  # before the read: a NOTIFY from now on wakes the next one
                try:
                    version = await self.store.version()
                    if version != self._version:
                        await self.refresh()
                except DatabaseUnavailable as exc:
                    log.warning("suspensions_poll_failed", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll)
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()

    async def _listen(self) -> asyncpg.Connection | None:
        """A connection of its own (pooled connections keep no LISTEN, see storage.db)."""
        if self.dsn is None:
            return None
        try:
            conn = await asyncpg.connect(self.dsn, timeout=LISTEN_CONNECT_TIMEOUT)
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            log.warning("suspensions_listen_failed", error=str(exc))
            return None
        return conn


async def open_gate(
    settings: Settings,
    pool: asyncpg.Pool,
    privacy_key: PrivacyKey,
    clock: Callable[[], datetime],
) -> Gate:
    """The gate of one process: the policy file loaded (a bad one stops the start, naming its
    line) and the suspensions read; :meth:`Gate.run` keeps both current."""
    policy = None
    if settings.policy.file is not None:
        policy = PolicyFile(
            settings.policy.file, interval=settings.policy.reload_seconds, clock=clock
        )
        try:
            await asyncio.to_thread(policy.load)
        except PolicyFileError as exc:
            raise ConfigError(f"policy.file {settings.policy.file}: {exc}") from exc
    store = PolicyStore(pool)
    url = settings.database.url
    suspensions = Suspensions(
        store,
        privacy_key,
        clock,
        dsn=None if url is None else url.reveal(),
        poll=settings.policy.reload_seconds,
    )
    await suspensions.refresh()
    ledger = None
    if policy is not None:
        audit = AdminLog(privacy_key, "service:policy-file", clock, request_id="policy-file")
        ledger = PolicyLedger(policy, store, audit)
    return Gate(suspensions=suspensions, policy=policy, store=store, clock=clock, ledger=ledger)


def _windows(limit: RateLimit, now: datetime) -> list[Window]:
    windows = []
    if limit.per_minute is not None:
        windows.append(Window("minute", now.replace(second=0, microsecond=0), limit.per_minute))
    if limit.per_day is not None:
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        windows.append(Window("day", day, limit.per_day))
    return windows


_SPAN = {"minute": timedelta(minutes=1), "day": timedelta(days=1)}


class PolicyLedger:
    """Logs each policy file content that takes effect as a ``policy-load`` admin entry
    (issue 15 item 5; ETSI EN 319 401 §7.10): once per distinct SHA-256 across replicas and
    restarts (``admin_actions_policy_once``), not per start or reload of the same bytes. A
    database outage is retried at the next check; the policy is in force meanwhile."""

    def __init__(self, policy: PolicyFile, store: PolicyStore, audit: AdminLog) -> None:
        self._policy = policy
        self._store = store
        self._audit = audit
        self._done: str | None = None  # the SHA-256 known to be logged

    async def __call__(self) -> None:
        status = self._policy.status
        if status.sha256 == self._done:
            return
        target = Target("policy", target_sha256=bytes.fromhex(status.sha256))
        logged = self._audit.act(
            "policy-load", target, detail=f"rules={len(status.rules)}", at=status.loaded_at
        )
        try:
            if await self._store.record_once(logged):
                log.info("policy_logged", sha256=status.sha256, file=status.file)
        except DatabaseUnavailable as exc:
            log.warning("policy_log_failed", sha256=status.sha256, error=str(exc))
            return
        self._done = status.sha256


@dataclass(frozen=True, kw_only=True, eq=False)
class Gate:
    """Suspensions, then the policy's decision, then its rate limit."""

    suspensions: Suspensions
    policy: PolicyFile | None
    store: PolicyStore
    clock: Callable[[], datetime]
    ledger: PolicyLedger | None = None

    def screen(
        self, principal: Principal, *, client_id: str | None, profile: str
    ) -> Decision | None:
        """Suspension, matching rule, profile and level (no I/O); the web flow asks this before
        consent and steps the login up to ``required_acr``. None: no policy file."""
        self.suspensions.current.check(principal, client_id)
        if self.policy is None:
            return None
        decision = self.policy.current.decide(principal, client_id=client_id)
        decision.check_profile(profile)
        return decision

    def check(
        self,
        principal: Principal,
        *,
        client_id: str | None,
        profile: str,
        digests: int,
        approved: bool = False,
    ) -> Decision | None:
        """Everything but the rate limit (no I/O); raises a :class:`PolicyRefusal`."""
        decision = self.screen(principal, client_id=client_id, profile=profile)
        if decision is None:
            return None
        decision.check(principal, profile=profile, digests=digests)
        if decision.approvals is not None and not approved:
            raise ApprovalRequired(
                f"rule {decision.rule!r}: {decision.approvals.required} of "
                f"{decision.approvals.group!r}"
            )
        return decision

    async def run(self) -> None:
        """Follow suspensions and the policy file until cancelled (one task per process)."""
        tasks = [asyncio.create_task(self.suspensions.run())]
        if self.policy is not None:
            tasks.append(asyncio.create_task(self.policy.run(self.ledger)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def count(self, principal: Principal, decision: Decision | None) -> None:
        """Count the request against its rule's per-identity limits (RFC 6585 §4 when over)."""
        if decision is None or decision.rate_limit is None:
            return  # no round trip
        now = self.clock()
        windows = _windows(decision.rate_limit, now)
        over = await self.store.count(principal.issuer, principal.subject, windows)
        if over is None:
            return
        window = next(w for w in windows if w.span == over)
        wait = (window.starts_at + _SPAN[over] - now).total_seconds()
        raise RateLimited(
            f"rule {decision.rule!r}: {window.limit} per {over}",
            retry_after=math.ceil(wait),
        )
