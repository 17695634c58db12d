"""The aiohttp application: the one place that wires concrete types together.

Resources are opened in ``cleanup_ctx`` in dependency order (HSM, database, IdP client) and
closed in reverse; nothing does I/O at import or in ``__init__``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import structlog
from aiohttp import web

from ca.authority import Chain, IssuingCA
from ca.errors import CaError
from ca.tsa import TimeStampAuthority
from idp_adapter.registry import IssuerRegistry
from signer import approvals, auditui, gauges, webflow
from signer.access_log import observe_middleware
from signer.api import admin, certificates, meta, pdf_upload, signatures, translog, tsa
from signer.api.problems import Handler, problem_middleware
from signer.api.refused import REFUSAL_LOG
from signer.api.signing_requests import WEBHOOKS
from signer.api.state import CRL_CACHE, REQUEST_ID, SERVICES, Services
from signer.approvals.service import CurrentPolicy
from signer.backfill import backfill_quietly
from signer.config import Settings
from signer.csc import api as csc_api
from signer.csc import oauth2_setup as csc_oauth2
from signer.csc.service import CscService
from signer.enforcement import open_gate
from signer.errors import ConfigError, SignerError
from signer.hsm import Hsm
from signer.pipeline import SigningService
from signer.refusals import RefusalLog
from signer.storage.authority import CaCertificateStore
from signer.storage.backfill import BackfillStore
from signer.storage.csc import CscStore
from signer.storage.db import create_pool
from signer.storage.log import LogStore
from signer.storage.records import RecordStore
from signer.storage.refusals import RefusalStore
from signer.timestamping import BuiltinTimeStamps, ExternalTimeStamps, TimeStampSource
from signer.tls import hsts_middleware, hsts_wanted
from signer.translog import LogPublisher, load_privacy_key

log = structlog.get_logger(__name__)
REPLAY_PURGE_SECONDS = 300
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
    root = await store.load(settings.ca.root_label)
    issuing = await store.load(settings.ca.issuing_label)
    if root is None or issuing is None:
        raise ConfigError("no CA certificates in the database: run `qes init` first")
    return Chain(issuing=issuing, root=root)


async def load_time_stamps(
    store: CaCertificateStore, settings: Settings, chain: Chain, clock: Callable[[], datetime]
) -> TimeStampSource:
    """The configured signature-time-stamp source (STANDARDS.md §3)."""
    tsa = settings.tsa
    if tsa.url is not None:
        if tsa.trust_anchor_file is None:
            raise ConfigError("tsa.trust_anchor_file: required with tsa.url")
        anchors = tsa.trust_anchor_file
        return await asyncio.to_thread(ExternalTimeStamps.from_pem, tsa.url, anchors, tsa.timeout)
    cert = await store.load(tsa.label)
    if cert is None:
        raise ConfigError("no TSA certificate in the database: run `qes init` first")
    try:
        authority = TimeStampAuthority(
            certificate=cert,
            chain=(chain.issuing, chain.root),
            policy_oid=tsa.policy_oid,
            clock=clock,
            accuracy=tsa.accuracy,
        )
    except CaError as exc:
        raise ConfigError(f"tsa: stored TSA certificate unusable ({exc}); run `qes init`") from exc
    return BuiltinTimeStamps(authority, tsa.label)


def _resources(
    settings: Settings, clock: Callable[[], datetime]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if settings.database.url is None:
            raise ConfigError("database.url: not configured (set QES_DATABASE_URL)")
        privacy_key = load_privacy_key(settings)  # before opening anything: a config error
        hsm = await asyncio.to_thread(Hsm.open, settings.hsm)
        pool = None
        try:
            pool = await create_pool(
                settings.database.url.reveal(),
                min_size=settings.database.pool_min,
                max_size=settings.database.pool_max,
                command_timeout=settings.database.command_timeout,
            )
            ca_store = CaCertificateStore(pool)
            chain = await load_chain(ca_store, settings)
            time_stamps = await load_time_stamps(ca_store, settings, chain, clock)
            records = RecordStore(
                pool, abandoned_after=timedelta(seconds=settings.server.idempotency_abandon_seconds)
            )
            log_store = LogStore(pool, settings.log.origin)
            publisher = LogPublisher(store=log_store, hsm=hsm, settings=settings.log, clock=clock)
            app[REFUSAL_LOG] = refusal_log = RefusalLog(
                store=RefusalStore(pool), key=privacy_key, settings=settings.log, clock=clock
            )
            gate = await open_gate(settings, pool, privacy_key, clock)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                registry = IssuerRegistry(
                    settings.issuers,
                    http,
                    clock,
                    replay=records,
                    on_ignored_roles=log_ignored_roles,
                )
                signing = SigningService(
                    hsm=hsm,
                    ca=IssuingCA(chain, settings.ca.policy, clock),
                    ca_key_label=settings.ca.issuing_label,
                    records=records,
                    privacy_key=privacy_key,
                    clock=clock,
                    time_stamps=time_stamps,
                    max_clock_skew=settings.tsa.max_clock_skew,
                    gate=gate,
                )
                app[SERVICES] = Services(
                    settings=settings,
                    hsm=hsm,
                    records=records,
                    signing=signing,
                    tokens=registry,
                    clock=clock,
                    time_stamps=time_stamps,
                    log=log_store,
                    publisher=publisher,
                    privacy_key=privacy_key,
                )
                if settings.audit.ui is not None:
                    app[auditui.AUDIT_UI] = auditui.build(
                        settings,
                        pool=pool,
                        http=http,
                        tokens=registry,
                        records=records,
                        clock=clock,
                    )
                if settings.web_signing is not None:
                    webflow.build(
                        app,
                        settings,
                        pool=pool,
                        http=http,
                        tokens=registry,
                        signing=signing,
                        clock=clock,
                    )
                expiry = None
                if gate.policy is not None:  # m-of-n approvals come from the policy file
                    policy_file = gate.policy  # the one the gate reloads
                    approvals_service = approvals.build(
                        app, settings, policy=CurrentPolicy(lambda: policy_file.current),
                        pool=pool, http=http,
                        tokens=registry, signing=signing, privacy_key=privacy_key, clock=clock,
                        render=lambda r: signatures.render_result(r, settings.server.public_url),
                    )  # fmt: skip
                    expiry = asyncio.create_task(approvals_service.run_expiry())
                app[csc_api.CSC] = csc = CscService(
                    hsm=hsm,
                    ca=IssuingCA(chain, settings.ca.policy, clock),
                    ca_key_label=settings.ca.issuing_label,
                    store=CscStore(pool),
                    records=records,
                    policy=signing.authorize,
                    privacy_key=privacy_key,
                    time_stamps=time_stamps,
                    clock=clock,
                    settings=settings.csc,
                    gate=gate,
                )
                if settings.web_signing is not None:  # the v2 OAuth2 credential flow
                    csc_oauth2.build(
                        app, settings, pool=pool, http=http, tokens=registry, csc=csc, clock=clock
                    )
                await csc.sweep_logged()  # keys of credentials that expired while we were down
                await signing.start(lanes=settings.hsm.sessions)
                log.info("started", public_url=settings.server.public_url)
                purger = asyncio.create_task(_purge_replay_records(records, clock))
                integrator = asyncio.create_task(publisher.run())
                gatekeeper = asyncio.create_task(gate.run())
                sweeper = asyncio.create_task(csc.run_sweeper())
                refusal_windows = asyncio.create_task(refusal_log.run())
                backfiller = asyncio.create_task(backfill_quietly(BackfillStore(pool), privacy_key))
                sampler = (
                    asyncio.create_task(gauges.run(pool, hsm)) if settings.metrics.enabled else None
                )
                try:
                    yield
                finally:
                    purger.cancel()
                    integrator.cancel()
                    gatekeeper.cancel()
                    await asyncio.gather(gatekeeper, return_exceptions=True)
                    sweeper.cancel()
                    refusal_windows.cancel()
                    backfiller.cancel()
                    if sampler is not None:
                        sampler.cancel()
                    await asyncio.gather(
                        sweeper, refusal_windows, backfiller, return_exceptions=True
                    )
                    if WEBHOOKS in app:
                        await app[WEBHOOKS].close()
                    if expiry is not None:
                        expiry.cancel()
                    if approvals.WEBHOOKS in app:
                        await app[approvals.WEBHOOKS].close()
                    await asyncio.gather(integrator, return_exceptions=True)
                    await signing.stop()
        finally:
            if pool is not None:
                await pool.close()
            await asyncio.to_thread(hsm.close)

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
        middlewares=[request_id_middleware, *edge, problem_middleware],
    )
    app[CRL_CACHE] = {}
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
    app.router.add_get("/openapi.json", meta.openapi)
    app.router.add_get("/problems/{slug}", meta.problem_page)
    app.router.add_get("/ca/root.cer", meta.root_certificate)
    app.router.add_get("/ca/issuing.cer", meta.issuing_certificate)
    app.router.add_get("/ca/root.crl", meta.root_crl)
    app.router.add_get("/ca/issuing.crl", meta.issuing_crl)
    app.router.add_get("/api/v1/trust-bundle", meta.trust_bundle)
    app.router.add_post("/tsa", tsa.time_stamp)
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
