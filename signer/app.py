"""The aiohttp application: the one place that wires concrete types together.

Resources are opened in ``cleanup_ctx`` in dependency order (HSM, database, IdP client) and
closed in reverse; nothing does I/O at import or in ``__init__``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import structlog
from aiohttp import web

from ca.authority import Chain, IssuingCA
from ca.errors import CaError
from ca.logentry import PrivacyKey
from ca.tsa import TimeStampAuthority
from idp_adapter.binding import NonceSource
from idp_adapter.registry import IssuerRegistry
from signer.errors import ConfigError, SignerError
from signer.flows.approvals import ApprovalService, CurrentPolicy
from signer.flows.request_retention import RequestRetention
from signer.flows.webhooks import WebhookResumer, Webhooks
from signer.http import approvals, openapi
from signer.http import audit as auditui
from signer.http import sign as webflow
from signer.http.api import (
    admin,
    certificates,
    meta,
    ocsp,
    pdf_upload,
    signatures,
    translog,
    tsa,
)
from signer.http.browser import LoginResources
from signer.http.csc import api as csc_api
from signer.http.csc import oauth2_setup as csc_oauth2
from signer.http.kit.access_log import observe_middleware
from signer.http.kit.auth import DPOP_NONCES
from signer.http.kit.connections import hygiene_middleware
from signer.http.kit.contract import text_middleware
from signer.http.kit.outbound import poster
from signer.http.kit.problems import Handler, problem_middleware
from signer.http.kit.public_limits import PUBLIC_LIMITER, public_limit_middleware
from signer.http.kit.refused import REFUSAL_LOG
from signer.http.kit.state import REQUEST_ID, SERVICES, TRUST_BUNDLE_CACHE, Services
from signer.http.kit.tls import hsts_middleware, hsts_wanted
from signer.http.sign.api import WEBHOOKS
from signer.keys import Hsm
from signer.policy.enforcement import open_gate
from signer.policy.public_limits import PublicLimiter
from signer.policy.refusals import RefusalLog
from signer.settings.config import Settings
from signer.signing import expiry, gauges, switch_watch
from signer.signing.ceremony import root_key_online
from signer.signing.csc import CscService
from signer.signing.longterm import LongTerm
from signer.signing.pipeline import SigningService
from signer.signing.revocation import RevocationStatus, load_responders
from signer.signing.rollover import Authorities, load_authorities
from signer.signing.sweeper import Sweeper
from signer.signing.timestamping import BuiltinTimeStamps, ExternalTimeStamps, TimeStampSource
from signer.storage.anchor import AnchorStore
from signer.storage.authority import CaCertificateStore, RootCrlStore
from signer.storage.backfill import BackfillStore
from signer.storage.csc import CscStore
from signer.storage.db import create_pool
from signer.storage.log import LogStore
from signer.storage.public_limits import PublicLimitStore
from signer.storage.records import RecordStore
from signer.storage.refusals import RefusalStore
from signer.storage.request_retention import RequestRetentionStore
from signer.storage.revocations import RevocationStore
from signer.storage.signing_requests import RpClientStore, SigningRequestStore, StoredRequest
from signer.storage.sweeper import SweeperStore
from signer.storage.webhook_outbox import WebhookOutboxStore
from signer.translog.anchor import CheckpointAnchor, check_anchor_quietly
from signer.translog.backfill import backfill_quietly
from signer.translog.log import LogPublisher, load_privacy_key

log = structlog.get_logger(__name__)
REPLAY_PURGE_SECONDS = 300
_APPROVALS = web.AppKey("approval_service", ApprovalService)
_SWEEPER = web.AppKey("sweeper", Sweeper)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def utc_now() -> datetime:
    return datetime.now(UTC)


_ROLE_NAME = re.compile(r"^[A-Za-z0-9._:/-]{1,64}$")


def log_ignored_roles(issuer_name: str, subject: str, values: frozenset[str]) -> None:
    """Issue 18: a role or group claim from an issuer without ``grants_roles`` for it is
    ignored, and said so. The values are the token's text: only short plain names are shown."""
    shown = sorted(v for v in values if _ROLE_NAME.match(v))[:10]
    log.warning(
        "role_claims_ignored",
        issuer=issuer_name,
        subject_hash=hashlib.sha256(subject.encode()).hexdigest()[:16],
        roles=shown,
        count=len(values),
        advice=f"list them in [issuers.{issuer_name}] grants_roles if this issuer may grant them",
    )


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind one request id (the caller's ``X-Request-Id`` when sane) to logs and the response."""
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    return response


async def load_chain(store: CaCertificateStore, settings: Settings) -> Chain:
    """The current issuing CA and the root (:mod:`signer.signing.rollover`)."""
    return (await load_authorities(store, settings)).chain


async def load_time_stamps(
    settings: Settings, authorities: Authorities, clock: Callable[[], datetime]
) -> TimeStampSource:
    """The configured signature-time-stamp source (STANDARDS.md §3): the built-in TSA's
    current generation, with the issuing CA generation that issued it, or the external TSA."""
    tsa = settings.tsa
    if tsa.url is not None:
        if tsa.trust_anchor_file is None:
            raise ConfigError("tsa.trust_anchor_file: required with tsa.url")
        anchors = tsa.trust_anchor_file
        return await asyncio.to_thread(ExternalTimeStamps.from_pem, tsa.url, anchors, tsa.timeout)
    current = authorities.current("tsa")
    if current is None:
        raise ConfigError("no TSA certificate in the database: run `qes init` first")
    try:
        issuer = authorities.issuer_of(current.certificate)
        authority = TimeStampAuthority(
            certificate=current.certificate,
            chain=(issuer.certificate, authorities.root),
            policy_oid=tsa.policy_oid,
            clock=clock,
            accuracy=tsa.accuracy,
        )
    except (CaError, ConfigError) as exc:
        raise ConfigError(f"tsa: stored TSA certificate unusable ({exc}); run `qes init`") from exc
    return BuiltinTimeStamps(authority, current.key_label)


@dataclass(frozen=True)
class _Opened:
    """What the lower resources opened, for the ones above them (one app key, set once)."""

    hsm: Hsm
    pool: asyncpg.Pool
    http: aiohttp.ClientSession
    privacy_key: PrivacyKey


_OPENED = web.AppKey("opened", _Opened)
_Step = Callable[
    [web.Application, Settings, Callable[[], datetime]], AbstractAsyncContextManager[None]
]


@asynccontextmanager
async def _connections(
    app: web.Application, settings: Settings, clock: Callable[[], datetime]
) -> AsyncIterator[None]:
    """The HSM, the database pool and the HTTP client session (IdPs, webhooks)."""
    if settings.database.url is None:
        raise ConfigError("database.url: not configured (set QES_DATABASE_URL)")
    privacy_key = load_privacy_key(settings)  # before opening anything: a config error
    async with AsyncExitStack() as stack:
        hsm = await asyncio.to_thread(Hsm.open, settings.hsm)
        stack.push_async_callback(asyncio.to_thread, hsm.close)
        pool = await create_pool(
            settings.database.url.reveal(),
            min_size=settings.database.pool_min,
            max_size=settings.database.pool_max,
            command_timeout=settings.database.command_timeout,
        )
        stack.push_async_callback(pool.close)
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        )
        app[_OPENED] = _Opened(hsm=hsm, pool=pool, http=http, privacy_key=privacy_key)
        yield


def _csc(
    settings: Settings,
    o: _Opened,
    clock: Callable[[], datetime],
    authorities: Authorities,
    signing: SigningService,
    records: RecordStore,
    time_stamps: TimeStampSource,
    log_guard: Callable[[], None] | None,
) -> CscService:
    """The CSC credential service: the pipeline's CA, records, time stamps and gate."""
    return CscService(
        hsm=o.hsm,
        ca=IssuingCA(authorities.chain, settings.ca.policy, clock),
        ca_key_label=authorities.issuing_ca.key_label,
        store=CscStore(o.pool),
        records=records,
        policy=signing.authorize,
        privacy_key=o.privacy_key,
        time_stamps=time_stamps,
        clock=clock,
        settings=settings.csc,
        refusals=signing.refusals,
        gate=signing.gate,
        log_guard=log_guard,
    )


async def _revocation(
    settings: Settings,
    o: _Opened,
    authorities: Authorities,
    time_stamps: TimeStampSource,
    clock: Callable[[], datetime],
) -> RevocationStatus:
    """The CRLs and OCSP answers over the issuing CA and the built-in TSA (issue 15); the
    issuing CA's CRL from the generation that issued the TSA certificate in use, OCSP answers
    and a CRL of its own from every generation."""
    tsa = time_stamps.authority.certificate if isinstance(time_stamps, BuiltinTimeStamps) else None
    crl_issuer = authorities.issuing_ca if tsa is None else authorities.issuer_of(tsa)
    return RevocationStatus(
        hsm=o.hsm,
        store=RevocationStore(o.pool),
        settings=settings,
        chain=authorities.chain,
        tsa=tsa,
        responders=await load_responders(
            CaCertificateStore(o.pool),
            settings,
            authorities.root,
            (g.certificate for g in authorities.issuing),
        ),
        clock=clock,
        issuing_crl=(crl_issuer.certificate, crl_issuer.key_label),
        root_crls=RootCrlStore(o.pool),
        tsa_issued=tuple(g.certificate for g in authorities.tsa),
        issuing_generations=authorities.issuing,
    )


async def _anchor(settings: Settings, pool: asyncpg.Pool) -> CheckpointAnchor | None:
    """The newest published checkpoint kept outside the database (issue 14), checked now."""
    if settings.log.anchor_file is None:
        return None
    anchor = CheckpointAnchor(settings.log.anchor_file, AnchorStore(pool))
    await check_anchor_quietly(anchor)
    return anchor


def _public_limiter(settings: Settings, o: _Opened, clock: Callable[[], datetime]) -> PublicLimiter:
    """The anonymous endpoints' limits, counted in PostgreSQL for every replica (issue 17)."""
    return PublicLimiter(
        store=PublicLimitStore(o.pool),
        key=o.privacy_key,
        per_address=settings.server.public_per_address_per_minute,
        total=settings.server.public_total_per_minute,
        clock=clock,
    )


def _refusal_log(settings: Settings, o: _Opened, clock: Callable[[], datetime]) -> RefusalLog:
    """The one writer of refusal entries (:mod:`signer.policy.refusals`)."""
    return RefusalLog(
        store=RefusalStore(o.pool), key=o.privacy_key, settings=settings.log, clock=clock
    )


async def _authorities(o: _Opened, settings: Settings) -> Authorities:
    """Every CA generation from the database (:func:`load_authorities`); a root key found in
    the online HSM is logged (:func:`root_key_online`)."""
    cas = await load_authorities(CaCertificateStore(o.pool), settings)
    await root_key_online(o.hsm, settings.ca.root_label, cas.root)
    return cas


@asynccontextmanager
async def _core(
    app: web.Application, settings: Settings, clock: Callable[[], datetime]
) -> AsyncIterator[None]:
    """The signing pipeline and what it stands on: CA chain, time stamps, records, the log,
    the policy gate, the refusal log and the token verifier; stopped after the surfaces."""
    o = app[_OPENED]
    cas = await _authorities(o, settings)
    time_stamps = await load_time_stamps(settings, cas, clock)
    records = RecordStore(
        o.pool, abandoned_after=timedelta(seconds=settings.server.idempotency_abandon_seconds)
    )
    log_store = LogStore(o.pool, settings.log.origin)
    anchor = await _anchor(settings, o.pool)
    log_guard = anchor.refuse_if_halted if anchor is not None else None
    app[PUBLIC_LIMITER] = _public_limiter(settings, o, clock)
    app[REFUSAL_LOG] = _refusal_log(settings, o, clock)
    gate = await open_gate(settings, o.pool, o.privacy_key, clock)
    revocation = await _revocation(settings, o, cas, time_stamps, clock)
    signing = SigningService(
        hsm=o.hsm,
        ca=IssuingCA(cas.chain, settings.ca.policy, clock),
        ca_key_label=cas.issuing_ca.key_label,
        records=records,
        privacy_key=o.privacy_key,
        clock=clock,
        time_stamps=time_stamps,
        max_clock_skew=settings.tsa.max_clock_skew,
        public_url=settings.server.public_url,
        refusals=app[REFUSAL_LOG],
        gate=gate,
        log_guard=log_guard,
        validation_data=LongTerm(o.hsm, revocation, time_stamps).validation_data,
    )
    app[SERVICES] = Services(
        settings=settings,
        hsm=o.hsm,
        records=records,
        signing=signing,
        tokens=IssuerRegistry(
            settings.issuers, o.http, clock, replay=records, on_ignored_roles=log_ignored_roles
        ),
        clock=clock,
        time_stamps=time_stamps,
        log=log_store,
        publisher=LogPublisher(
            store=log_store, hsm=o.hsm, settings=settings.log, clock=clock, anchor=anchor
        ),
        privacy_key=o.privacy_key,
        revocation=revocation,
        authorities=cas,
    )
    # RFC 9449 §9 server nonces; every replica derives the same secret from the privacy key.
    app[DPOP_NONCES] = NonceSource(o.privacy_key.secret, clock)
    app[csc_api.CSC] = _csc(settings, o, clock, cas, signing, records, time_stamps, log_guard)
    app[csc_api.CSC].spend_tokens_with(app[SERVICES].tokens.start_operation)
    await signing.start(lanes=settings.hsm.sessions)
    try:
        yield
    finally:
        await signing.stop()


@asynccontextmanager
async def _surfaces(
    app: web.Application, settings: Settings, clock: Callable[[], datetime]
) -> AsyncIterator[None]:
    """The configured browser surfaces and approvals; their webhook senders closed at the end."""
    o, services = app[_OPENED], app[SERVICES]
    resources = LoginResources(pool=o.pool, http=o.http, tokens=services.tokens, clock=clock)
    if settings.audit.ui is not None:
        app[auditui.AUDIT_UI] = auditui.build(settings, resources, records=services.records)
    long_term = LongTerm(services.hsm, services.revocation, services.time_stamps)
    if settings.web_signing is not None:
        webflow.build(app, settings, resources, signing=services.signing, long_term=long_term)
        # the v2 OAuth2 credential flow
        csc_oauth2.build(app, settings, resources, csc=app[csc_api.CSC])
    gate = services.signing.gate
    if gate is not None and gate.policy is not None:  # m-of-n approvals: the policy file's
        policy_file = gate.policy  # the one the gate reloads
        app[_APPROVALS] = approvals.build(
            app,
            settings,
            resources,
            policy=CurrentPolicy(lambda: policy_file.current),
            signing=services.signing,
            privacy_key=o.privacy_key,
            long_term=long_term,
        )
    try:
        yield
    finally:
        for key in (WEBHOOKS, approvals.WEBHOOKS):
            if key in app:
                await app[key].close()


@asynccontextmanager
async def _background(
    app: web.Application, settings: Settings, clock: Callable[[], datetime]
) -> AsyncIterator[None]:
    """The service's loops: token-id purge, log integration, policy reload, CSC key sweep,
    refusal windows, subject-index backfill, approval expiry, the sweeper of what a crash left,
    the resender of webhooks still due (issue 14), the deletion of finished web-signing
    requests (issue 17) and the watch on the CA, TSA and responder certificates' ends (issue
    15). Cancelled and awaited at stop."""
    o, services, csc = app[_OPENED], app[SERVICES], app[csc_api.CSC]
    await csc.sweep_logged()  # keys of credentials that expired while we were down
    loops: list[Coroutine[Any, Any, None]] = [
        _purge_replay_records(services.records, clock),
        services.publisher.run(),
        csc.run_sweeper(),
        app[REFUSAL_LOG].run(),
        backfill_quietly(BackfillStore(o.pool), o.privacy_key),
    ]
    app[_SWEEPER] = swept = Sweeper(
        SweeperStore(o.pool), o.privacy_key, clock, settings.sweeper, _on_expired(app)
    )
    loops.append(swept.run())
    loops.append(_resumer(o, clock, settings).run())
    keep = timedelta(hours=settings.audit.finished_requests_keep_hours)
    loops.append(RequestRetention(RequestRetentionStore(o.pool), clock, keep).run())
    if settings.metrics.enabled:  # issue 13: gauges sampled for the scrape
        loops.append(gauges.run(o.pool, o.hsm))
    r = services.revocation
    watched = expiry.watched(r.chain, r.tsa, r.responders, r.issuing_generations)
    loops.append(expiry.run(watched, clock, root_crl=r.root_crl))
    cas = CaCertificateStore(o.pool)
    loops.append(
        switch_watch.run(
            services.authorities,
            lambda: load_authorities(cas, settings),
            settings.ca.switch_check_seconds,
        )
    )
    if services.signing.gate is not None:
        loops.append(services.signing.gate.run())
    if _APPROVALS in app:
        loops.append(app[_APPROVALS].run_expiry())
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _on_expired(app: web.Application) -> Callable[[StoredRequest], None] | None:
    """The webhook of a web-signing request the sweeper expired, sent at once (without web
    signing configured, none is live: the resumer sends any that is due)."""
    if WEBHOOKS not in app:
        return None
    webhooks = app[WEBHOOKS]
    return lambda req: webhooks.notify(req, "expired")


def _resumer(o: _Opened, clock: Callable[[], datetime], settings: Settings) -> WebhookResumer:
    """Webhooks due after a crash or a sweep, resent by every replica (issue 14)."""
    sender = Webhooks(
        requests=SigningRequestStore(o.pool), rps=RpClientStore(o.pool), post=poster(o.http)
    )
    return WebhookResumer(WebhookOutboxStore(o.pool), sender, clock, settings.sweeper)


_STEPS: tuple[_Step, ...] = (_connections, _core, _surfaces, _background)


def _resources(
    settings: Settings, clock: Callable[[], datetime]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """One cleanup context over the steps above, entered in order and closed in reverse; a
    step that fails to start closes the ones before it."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for step in _STEPS:
                await stack.enter_async_context(step(app, settings, clock))
            log.info("started", public_url=settings.server.public_url)
            yield

    return ctx


async def _purge_replay_records(records: RecordStore, clock: Callable[[], datetime]) -> None:
    """Drop single-use token ids once their tokens have expired (RFC 7519 §4.1.7)."""
    while True:
        await asyncio.sleep(REPLAY_PURGE_SECONDS)
        try:
            await records.purge_replay(clock() - timedelta(minutes=5))
        except SignerError as exc:
            log.warning("replay_purge_failed", error=str(exc))


def create_app(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> web.Application:
    edge = [observe_middleware(access_log=settings.server.access_log)]
    if hsts_wanted(settings.server):
        edge.append(hsts_middleware(settings.server.hsts_max_age))
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[
            request_id_middleware,
            *edge,
            problem_middleware,
            hygiene_middleware(settings.server),
            text_middleware,
            public_limit_middleware,
        ],
    )
    app[TRUST_BUNDLE_CACHE] = {}
    app.cleanup_ctx.append(_resources(settings, clock))
    app.router.add_post("/api/v1/signatures", signatures.create_signatures)
    app.router.add_post("/api/v1/signatures/pdf", pdf_upload.sign_pdf)
    app.router.add_get("/api/v1/certificates", certificates.list_certificates)
    app.router.add_get("/api/v1/certificates/{serial}", certificates.show_certificate)
    app.router.add_get("/api/v1/log/checkpoint", translog.latest_checkpoint)
    app.router.add_post("/api/v1/log/checkpoints", translog.publish_checkpoint)
    app.router.add_get("/api/v1/log/proof/inclusion", translog.inclusion)
    app.router.add_get("/api/v1/log/proof/consistency", translog.consistency)
    app.router.add_get("/api/v1/log/entries", translog.list_entries)
    app.router.add_get("/api/v1/log/entries/{idx}", translog.entry)
    app.router.add_get("/healthz", meta.healthz)
    app.router.add_get("/readyz", meta.readyz)
    app.router.add_get("/openapi.json", openapi.openapi)
    app.router.add_get("/problems/{slug}", meta.problem_page)
    app.router.add_get("/ca/root.cer", meta.root_certificate)
    app.router.add_get("/ca/issuing.cer", meta.issuing_certificate)
    app.router.add_get("/ca/root.crl", meta.root_crl)
    app.router.add_get("/ca/issuing.crl", meta.issuing_crl)
    app.router.add_get("/ca/issuing/{key_id:[0-9a-f]+}.cer", meta.issuing_generation_certificate)
    app.router.add_get("/ca/issuing/{key_id:[0-9a-f]+}.crl", meta.issuing_generation_crl)
    app.router.add_get("/api/v1/trust-bundle", meta.trust_bundle)
    app.router.add_post("/tsa", tsa.time_stamp)
    app.router.add_post("/ocsp", ocsp.post)
    app.router.add_get("/ocsp/{request:.+}", ocsp.get)
    admin.add_routes(app)
    csc_api.add_routes(app)
    if settings.audit.ui is not None:
        auditui.add_routes(app)
    if settings.web_signing is not None:
        webflow.add_routes(app, settings.server.public_url)
    approvals.add_routes(app, settings)
    if settings.web_signing is not None:
        csc_oauth2.add_routes(app, settings.server.public_url)
    return app
