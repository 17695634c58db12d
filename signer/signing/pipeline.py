"""The per-request signing pipeline (DESIGN.md, "The per-request pipeline and its failure rules").

One request = one ephemeral key, one 10-minute certificate, N signatures. Every key's whole life
runs inside a single worker-thread hop on one PKCS#11 session::

    generate key ─► read evidence ─► CA issues certificate ─► commit "issued" (bridged to the
    event loop and awaited from the thread) ─► sign every digest ─► destroy both halves ─►
    confirm they are gone

so a key can never outlive the function that made it, and it signs nothing unless its "issued"
record is committed. Back on the loop the record is completed (in one statement with the
idempotent response) before anything is returned; if that commit fails the signatures are
dropped and the caller gets DatabaseUnavailable (fail closed).

Group commit: requests wait in one queue; each HSM session has a *lane* that takes every
request waiting when its session frees up (at most MAX_BATCH, MAX_BATCH_DIGESTS) into one hop.
Each request still gets its own key and certificate, and each key is still born, recorded,
used and destroyed inside that one hop; what the requests of a hop share is the thread hop and
the two database round trips ("issued" for all, then "completed" for all). Under load that
removes most of the per-request hand-offs between threads and processes, which cost more CPU
than the HSM work itself; a lone request is never held back waiting for company.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import Chain, IssuingCA
from ca.errors import ProfileError
from ca.logentry import PrivacyKey, Requester, RequestSummary
from ca.profiles import Level, NaturalPerson, Subject, subject_from_attributes
from idp_adapter.principal import Principal
from signer import metrics
from signer.errors import (
    DatabaseUnavailable,
    HsmUnavailable,
    KeyNotDestroyed,
    RequestError,
    SignerError,
)
from signer.formats.cms import CmsSigner, cades_b_t, pades_b_t
from signer.formats.ltv import ValidationData, cades_b_lt
from signer.keys import Destruction, EphemeralKey, Hsm, HsmSession, KeyEvidence
from signer.policy.enforcement import ApprovalRequired, Gate
from signer.policy.refusals import RefusalLog
from signer.policy.rules import Decision, PolicyRefusal
from signer.signing.timestamping import TimeStampSource, checked
from signer.storage.records import Completion, IdempotencyKey, IssuedRecord, RecordStore
from signer.translog.log import issuance_entry, subject_index

log = structlog.get_logger(__name__)

# How long the worker thread waits for the "issued" commit before giving up (and destroying).
ISSUED_COMMIT_TIMEOUT = 10.0


class ProfileNotAllowed(RequestError):
    slug = "profile-not-allowed"
    title = "This identity may not sign with the requested profile"
    status = 403


class SubjectNotIssuable(RequestError):
    slug = "identity-not-allowed"
    title = "This identity cannot be given a certificate"
    status = 403


#: What each digest becomes: a bare DER ECDSA value, a detached CAdES B-T signature (EN 319
#: 122-1) or the CMS of a PAdES B-T signature field (EN 319 142-1); STANDARDS.md §2.
SignatureFormat = Literal["raw", "cades", "cades-b-lt", "pades"]
FORMATS: tuple[SignatureFormat, ...] = ("raw", "cades", "cades-b-lt", "pades")
#: Validation data for CAdES B-LT, fetched before the HSM hop (``LongTerm.validation_data``).
ValidationDataSource = Callable[[], Awaitable[ValidationData]]


@dataclass(frozen=True)
class SignatureRequest:
    """Validated digests to sign; ``profile`` None means the identity's default."""

    hash_algorithm: str
    digests: tuple[bytes, ...]
    profile: str | None = None
    format: SignatureFormat = "raw"


@dataclass(frozen=True)
class SignatureResult:
    record_id: uuid.UUID
    serial: str
    profile: str
    certificate: x509.Certificate
    chain: Chain
    chain_pem: str
    signatures: tuple[bytes, ...]
    evidence: KeyEvidence
    destruction: Destruction
    format: SignatureFormat = "raw"
    time_stamps: tuple[bytes, ...] = ()
    #: Index of the request's entry in the transparency log (sequenced with the completion).
    log_index: int | None = None

    def as_json(self, public_url: str) -> dict[str, Any]:
        """The result as the JSON value every surface returns (batch API, web signing, held
        requests) and the idempotent replay keeps: plain data, no HTTP."""
        pem = self.certificate.public_bytes(Encoding.PEM).decode()
        return {
            "serial": self.serial,
            "profile": self.profile,
            "format": self.format,
            "signature_algorithm": "ecdsa",
            "signatures": [base64.b64encode(s).decode() for s in self.signatures],
            "certificate": pem,
            "chain": pem + self.chain_pem,
            "not_before": self.certificate.not_valid_before_utc.isoformat(),
            "not_after": self.certificate.not_valid_after_utc.isoformat(),
            "record_url": f"{public_url}/api/v1/certificates/{self.serial}",
            "key": {"evidence": self.evidence.as_dict(), "destruction": self.destruction.as_dict()},
        }


# A hop takes at most this many waiting requests, and stops adding requests once this many
# digests are in it (the first request always fits: its own limit is server.max_digests).
MAX_BATCH = 8
MAX_BATCH_DIGESTS = 1000

#: Starts the signing operation once admission allowed it: the HTTP edge spends the access
#: token's ``jti`` here (RFC 7519 §4.1.7; ``signer.http.kit.refused.start_operation``), so a
#: request the policy, the kill switch or the rate limit refuses leaves the token unspent.
Start = Callable[[], Awaitable[None]]

#: The result (with its log index) and its JSON value plus ``"log": {"index": N}``.
_Outcome = tuple["SignatureResult", "Mapping[str, Any]"]


@dataclass(frozen=True, eq=False)
class _Job:
    principal: Principal
    level: Level
    subject: Subject
    request: SignatureRequest
    request_id: str
    record_id: uuid.UUID
    idempotency: IdempotencyKey | None
    future: asyncio.Future[_Outcome]
    #: Format 'cades-b-lt': what goes into each CMS's certificates and crls.
    validation_data: ValidationData | None = None


@dataclass(frozen=True)
class _Signed:
    certificate: x509.Certificate
    evidence: KeyEvidence
    signatures: tuple[bytes, ...]
    time_stamps: tuple[bytes, ...]
    destruction: Destruction


@dataclass(frozen=True)
class _Failed:
    """A request that released nothing; ``recorded`` when its 'issued' row was committed."""

    cause: Exception
    destruction: Destruction | None
    recorded: bool


def issued_record(
    principal: Principal,
    level: Level,
    subject: Subject,
    cert: x509.Certificate,
    *,
    record_id: uuid.UUID,
    request_id: str,
    created_at: datetime,
    key_evidence: Mapping[str, bool],
    request: SignatureRequest | None = None,
) -> IssuedRecord:
    """The 'issued' record of ``cert``, made for ``principal`` at ``level`` with ``subject``,
    committed before its key signs anything: for a batch ``request``, its digests and format;
    without one (a CSC credential, whose digests come with signHash), ``hash_algorithm``
    "none", no digests and format "raw"."""
    return IssuedRecord(
        id=record_id,
        serial=serial_hex(cert),
        request_id=request_id,
        created_at=created_at,
        token_issuer=principal.issuer,
        issuer_name=principal.issuer_name,
        token_subject=principal.subject,
        client_id=principal.client_id,
        profile=level.value,
        subject_type=principal.subject_type,
        subject_dn=cert.subject.rfc4514_string(),
        email=subject.email if isinstance(subject, NaturalPerson) else None,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        certificate_der=cert.public_bytes(Encoding.DER),
        key_evidence=key_evidence,
        hash_algorithm="none" if request is None else request.hash_algorithm,
        digests=() if request is None else request.digests,
        signature_format="raw" if request is None else request.format,
    )


def serial_hex(certificate: x509.Certificate) -> str:
    """Lowercase hex of the serial, whole bytes (as ``openssl x509 -serial``, case aside)."""
    digits = format(certificate.serial_number, "x")
    return digits.zfill(len(digits) + len(digits) % 2)


class SigningService:
    """Runs the pipeline; the HTTP edge only parses requests and renders results."""

    def __init__(
        self,
        *,
        hsm: Hsm,
        ca: IssuingCA,
        ca_key_label: str,
        records: RecordStore,
        privacy_key: PrivacyKey,
        clock: Callable[[], datetime],
        time_stamps: TimeStampSource,
        max_clock_skew: timedelta,
        public_url: str,
        refusals: RefusalLog,
        gate: Gate | None = None,
        log_guard: Callable[[], None] | None = None,
        validation_data: ValidationDataSource | None = None,
    ) -> None:
        self._hsm = hsm
        self._validation_data = validation_data
        self._public_url = public_url
        #: The one refusal writer; the CSC service shares it.
        self.refusals = refusals
        self.gate = gate
        #: Raises while the log is behind its published checkpoint (signer.translog.anchor).
        self.log_guard = log_guard
        self._privacy_key = privacy_key
        self._time_stamps = time_stamps
        self._max_skew = max_clock_skew
        self._ca = ca
        self._label = ca_key_label
        self._records = records
        self._clock = clock
        self._chain_pem = ca.chain.pem()
        self._queue: asyncio.Queue[_Job] | None = None
        self._lanes: list[asyncio.Task[None]] = []
        self._finishing: set[asyncio.Task[None]] = set()

    @property
    def chain(self) -> Chain:
        return self._ca.chain

    def authorize(self, principal: Principal, profile: str | None) -> tuple[Level, Subject]:
        """Policy: may this identity sign with this profile, and what subject does it get."""
        name = profile or principal.default_profile
        if name not in principal.profiles:
            raise ProfileNotAllowed(f"{principal.subject} may not use profile {name!r}")
        try:
            level = Level(name)
            subject = subject_from_attributes(principal.subject_type, principal.attributes)
        except (ValueError, ProfileError) as exc:
            raise SubjectNotIssuable(f"{principal.subject}: {exc}") from exc
        return level, subject

    async def screen(
        self,
        principal: Principal,
        request: SignatureRequest,
        *,
        request_id: str,
        approvals: bool = False,
    ) -> Decision | None:
        """Before consent (web signing): the kill switch, the matching rule, profile and level,
        without counting a rate limit; a refusal is logged as at signing. The caller steps the
        login up to the decision's ``acr_accepted``. ``approvals``: the caller collects a
        rule's m-of-n approvals (a batch request held by ``signer.http.approvals``)."""
        if self.gate is None:
            return None
        try:
            decision = self.gate.screen(
                principal,
                client_id=principal.client_id,
                profile=request.profile or principal.default_profile,
            )
            if decision is not None and decision.approvals is not None and not approvals:
                raise ApprovalRequired(f"rule {decision.rule!r} needs approvals")
            return decision
        except PolicyRefusal as exc:
            await self.log_refusal(principal, request, request_id, exc)
            raise

    async def screen_client(
        self, client_id: str, request: SignatureRequest, *, request_id: str
    ) -> None:
        """Web signing before anyone logs in: is the RP client (or everything) suspended? A
        refusal is a refusal entry naming only the client (committed)."""
        if self.gate is None:
            return
        try:
            self.gate.suspensions.current.check_client(client_id)
        except PolicyRefusal as exc:
            await self.refuse_client(client_id, request, request_id=request_id, reason=exc.slug)
            raise

    async def refuse_client(
        self, client_id: str, request: SignatureRequest, *, request_id: str, reason: str
    ) -> None:
        """Append a refusal entry naming only the RP client (suspended, out of its scopes)."""
        await self.refusals.attributed(
            Requester(None, None, None, client_id=client_id),
            RequestSummary(request.profile, None, request.hash_algorithm, request.digests),
            request_id=request_id,
            reason=reason,
        )

    async def _admit(
        self, principal: Principal, request: SignatureRequest, approved: bool, start: Start | None
    ) -> tuple[Level, Subject]:
        """The kill switch, the policy and the identity's profiles, then the rate limit (a
        refused request counts nothing), then ``start``: the operation goes ahead, and only
        now is the token's ``jti`` spent (RFC 7519 §4.1.7), before any key exists."""
        if self.gate is None:
            authorized = self.authorize(principal, request.profile)
        else:
            decision = self.gate.check(
                principal,
                client_id=principal.client_id,
                profile=request.profile or principal.default_profile,
                digests=len(request.digests),
                approved=approved,
            )
            authorized = self.authorize(principal, request.profile)
            if not approved:  # a held request was counted once, when it was made
                await self.gate.count(principal, decision)
        if start is not None:
            await start()
        return authorized

    async def start(self, lanes: int) -> None:
        """Start one lane per HSM session (call once, on the serving loop)."""
        if self._lanes:
            raise RuntimeError("SigningService already started")
        self._queue = asyncio.Queue()
        self._lanes = [asyncio.create_task(self._lane(self._queue)) for _ in range(lanes)]

    async def stop(self) -> None:
        """Stop the lanes; requests still waiting fail with HsmUnavailable. A hop already on a
        worker thread runs to its end there (its keys are destroyed); its records stay
        'issued', visibly incomplete, as after a crash. Hops whose records are being finished
        are awaited."""
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        await asyncio.gather(*self._finishing, return_exceptions=True)
        queue, self._queue = self._queue, None
        while queue is not None and not queue.empty():
            _settle(queue.get_nowait(), HsmUnavailable("the signer is shutting down"))

    async def sign(
        self,
        principal: Principal,
        request: SignatureRequest,
        *,
        request_id: str,
        idempotency: IdempotencyKey | None = None,
        approved: bool = False,
        start: Start | None = None,
    ) -> _Outcome:
        """Sign ``request`` for ``principal``; returns the result and its JSON value
        (:meth:`SignatureResult.as_json`, stored with the completion as the idempotent response,
        plus ``"log": {"index": N}``). A request refused by policy is logged as a
        refusal entry before the refusal is raised. With a :class:`~signer.policy.enforcement.Gate`
        the kill switch, the policy file and its rate limit apply too (``approved``: the
        rule's m-of-n approval is in). ``start`` runs once all of that admitted the request
        (:data:`Start`: the token's ``jti`` is spent then, not for a refused request)."""
        if self.log_guard is not None:
            self.log_guard()
        try:
            level, subject = await self._admit(principal, request, approved, start)
        except (ProfileNotAllowed, SubjectNotIssuable, PolicyRefusal) as exc:
            await self.log_refusal(principal, request, request_id, exc)
            raise
        if self._queue is None:
            raise HsmUnavailable("the signing service is not running")
        data = None
        if request.format == "cades-b-lt":  # fresh CRLs are async: before the HSM hop
            if self._validation_data is None:
                raise HsmUnavailable("CAdES B-LT needs the service's validation data")
            data = await self._validation_data()
        job = _Job(
            principal=principal,
            level=level,
            subject=subject,
            request=request,
            request_id=request_id,
            record_id=uuid.uuid4(),
            idempotency=idempotency,
            future=asyncio.get_running_loop().create_future(),
            validation_data=data,
        )
        self._queue.put_nowait(job)
        return await job.future

    async def log_refusal(
        self, principal: Principal, request: SignatureRequest, request_id: str, exc: RequestError
    ) -> None:
        """Append the refusal entry of an authenticated request (who asked, what, why) with
        its subject index, through the one refusal writer (:mod:`signer.policy.refusals`)."""
        await self.refusals.attributed(
            Requester(
                principal.issuer_name,
                principal.issuer,
                principal.subject,
                client_id=principal.client_id,
            ),
            RequestSummary(
                request.profile or principal.default_profile,
                principal.subject_type,
                request.hash_algorithm,
                request.digests,
            ),
            request_id=request_id,
            reason=exc.slug,
            signature_format=request.format,
        )

    async def _lane(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            jobs = [await queue.get()]
            digests = len(jobs[0].request.digests)
            while len(jobs) < MAX_BATCH and not queue.empty():
                nxt = queue.get_nowait()
                if digests + len(nxt.request.digests) > MAX_BATCH_DIGESTS:
                    queue.put_nowait(nxt)  # goes to the back: fine, the queue is FIFO per hop
                    break
                jobs.append(nxt)
                digests += len(nxt.request.digests)
            pending = [j for j in jobs if not j.future.done()]  # a caller that left: no key
            if pending:
                await self._run(pending)

    async def _run(self, jobs: list[_Job]) -> None:
        """One hop for ``jobs``, then their records; settles every job's future."""
        loop = asyncio.get_running_loop()
        issued: dict[uuid.UUID, IssuedRecord] = {}  # written on the thread, read after the hop

        def commit_issued(batch: list[tuple[_Job, x509.Certificate, KeyEvidence]]) -> None:
            records = [self._issued_record(job, cert, ev) for job, cert, ev in batch]
            issued.update((r.id, r) for r in records)
            fut = asyncio.run_coroutine_threadsafe(self._records.record_issued(records), loop)
            try:
                fut.result(ISSUED_COMMIT_TIMEOUT)
            except TimeoutError as exc:
                fut.cancel()
                raise DatabaseUnavailable("timed out recording the issued certificates") from exc

        outcomes: list[_Signed | _Failed] | None = None
        with _settling(jobs):
            outcomes = await self._hsm.run(lambda s: self._cycle(s, jobs, commit_issued))
        if outcomes is None:  # the hop failed and settled every job
            return
        # The records are finished off the lane, so its HSM session takes the next hop while
        # this hop's completion commits (stop() waits for these).
        task = asyncio.create_task(self._finish(jobs, outcomes, issued))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(
        self,
        jobs: list[_Job],
        outcomes: list[_Signed | _Failed],
        issued: Mapping[uuid.UUID, IssuedRecord],
    ) -> None:
        """Record how each request of a hop ended, then settle its future."""
        with _settling(jobs, "finishing_failed"):  # a bug must not leave a caller waiting
            completions: list[tuple[_Job, SignatureResult, Mapping[str, Any]]] = []
            for job, outcome in zip(jobs, outcomes, strict=True):
                if isinstance(outcome, _Failed):
                    await self._record_failure(job, outcome, issued.get(job.record_id))
                    _settle(job, outcome.cause)
                    continue
                result = SignatureResult(
                    record_id=job.record_id,
                    serial=serial_hex(outcome.certificate),
                    profile=job.level.value,
                    certificate=outcome.certificate,
                    chain=self._ca.chain,
                    chain_pem=self._chain_pem,
                    signatures=outcome.signatures,
                    evidence=outcome.evidence,
                    destruction=outcome.destruction,
                    format=job.request.format,
                    time_stamps=outcome.time_stamps,
                )
                completions.append((job, result, result.as_json(self._public_url)))
            if completions:
                await self._complete(completions, issued)

    def _cycle(
        self,
        session: HsmSession,
        jobs: list[_Job],
        commit_issued: Callable[[list[tuple[_Job, x509.Certificate, KeyEvidence]]], None],
    ) -> list[_Signed | _Failed]:
        """The keys' whole life, on the worker thread. Nothing here touches the event loop
        except ``commit_issued``, which waits for the 'issued' commit of the whole hop."""
        outcomes: list[_Signed | _Failed | None] = [None] * len(jobs)
        live: dict[int, tuple[EphemeralKey, x509.Certificate]] = {}
        try:
            for i, job in enumerate(jobs):
                key: EphemeralKey | None = None
                try:
                    key = session.generate_ephemeral()
                    cert = self._ca.issue(
                        session.token_key(self._label),
                        key.private.public_key(),
                        job.subject,
                        job.level,
                    )
                except Exception as exc:
                    outcomes[i] = _Failed(exc, _destroy_quietly(session, key), recorded=False)
                    continue
                live[i] = (key, cert)
            if live:
                try:
                    commit_issued([(jobs[i], c, k.evidence) for i, (k, c) in live.items()])
                except Exception as exc:
                    for i, (k, _) in live.items():
                        outcomes[i] = _Failed(exc, _destroy_quietly(session, k), recorded=False)
                    live.clear()
            for i in list(live):
                key, cert = live[i]
                make = self._signature_maker(session, key, cert, jobs[i])
                outcomes[i] = _sign_and_destroy(session, key, cert, jobs[i].request.digests, make)
                del live[i]
        finally:
            for key, _ in live.values():  # only when a BaseException cut the hop short
                _destroy_quietly(session, key)
        return [o for o in outcomes if o is not None]

    def _signature_maker(
        self,
        session: HsmSession,
        key: EphemeralKey,
        cert: x509.Certificate,
        job: _Job,
    ) -> _MakeSignature:
        """Per digest: the signature in the requested format and its time-stamp token (if any).

        CAdES and PAdES get their signature-time-stamp right after the signature, in this hop,
        while the 10-minute certificate is valid (STANDARDS.md §2, §4); CAdES B-LT then the
        job's validation data in the CMS (EN 319 122-1 §6.3, :func:`cades_b_lt`)."""
        request = job.request
        if request.format == "raw":
            return lambda digest: (key.private.sign_digest(digest), None)
        stamp = checked(self._time_stamps.bind(session), self._clock, self._max_skew)
        chain = (self._ca.chain.issuing, self._ca.chain.root)
        alg = request.hash_algorithm
        tokens: list[bytes] = []

        def recording(digest: bytes, hash_algorithm: str, /) -> bytes:
            token = stamp(digest, hash_algorithm)
            tokens.append(token)
            return token

        signer = CmsSigner(cert, chain, key.private, recording)

        def make(digest: bytes) -> tuple[bytes, bytes | None]:
            if request.format in ("cades", "cades-b-lt"):
                signature = cades_b_t(digest, alg, signer, signing_time=self._clock())
                if job.validation_data is not None:
                    signature = cades_b_lt(signature, job.validation_data)
            else:
                signature = pades_b_t(digest, alg, signer)
            return signature, tokens.pop()

        return make

    def _issued_record(
        self, job: _Job, cert: x509.Certificate, evidence: KeyEvidence
    ) -> IssuedRecord:
        return issued_record(
            job.principal,
            job.level,
            job.subject,
            cert,
            record_id=job.record_id,
            request_id=job.request_id,
            created_at=self._clock(),
            key_evidence=evidence.as_dict(),
            request=job.request,
        )

    async def _complete(
        self,
        done: list[tuple[_Job, SignatureResult, Mapping[str, Any]]],
        issued: Mapping[uuid.UUID, IssuedRecord],
    ) -> None:
        at = self._clock()
        key = self._privacy_key
        try:
            completed = await self._records.complete(
                [
                    Completion(
                        record_id=job.record_id,
                        at=at,
                        signed_count=len(result.signatures),
                        destruction=result.destruction.as_dict(),
                        time_stamps=result.time_stamps,
                        idempotency=job.idempotency,
                        response=response,
                        entry=issuance_entry(
                            issued[job.record_id],
                            completed_at=at,
                            destruction=result.destruction.as_dict(),
                            signed_count=len(result.signatures),
                            failure=None,
                            certificate=result.certificate,
                            time_stamps=result.time_stamps,
                        ).encode(key),
                        subject_key=subject_index(key, job.principal.issuer, job.principal.subject),
                    )
                    for job, result, response in done
                ]
            )
        except DatabaseUnavailable as exc:
            log.error("completion_not_recorded", serials=[r.serial for _, r, _ in done])
            for job, result, _ in done:
                count_outcome(job.request, result.profile, "failed", len(job.request.digests))
                _settle(job, exc)
            return
        for job, result, response in done:
            index = completed.get(job.record_id)
            if index is None:
                log.error("completion_not_recorded", serial=result.serial)
                _settle(job, DatabaseUnavailable(f"record {job.record_id} was not 'issued'"))
                continue
            count_outcome(job.request, result.profile, "completed", len(result.signatures))
            log.info(
                "signed",
                serial=result.serial,
                digests=len(result.signatures),
                profile=result.profile,
                subject=job.principal.subject,
                issuer=job.principal.issuer_name,
                request_id=job.request_id,
            )
            if not job.future.done():
                logged = dataclasses.replace(result, log_index=index)
                job.future.set_result((logged, {**response, "log": {"index": index}}))

    async def _record_failure(
        self, job: _Job, failed: _Failed, record: IssuedRecord | None
    ) -> None:
        destruction = failed.destruction.as_dict() if failed.destruction else None
        log.warning(
            "signing_failed",
            error=type(failed.cause).__name__,
            issued=failed.recorded,
            destruction=destruction,
            request_id=job.request_id,
        )
        if not failed.recorded or record is None:
            return
        count_outcome(job.request, record.profile, "failed", len(job.request.digests))
        cause = failed.cause
        reason = cause.slug if isinstance(cause, SignerError) else "internal-error"
        at = self._clock()
        entry = issuance_entry(
            record, completed_at=at, destruction=destruction, signed_count=0, failure=reason
        )
        try:
            await self._records.fail(
                job.record_id,
                failure=reason,
                destruction=destruction,
                at=at,
                entry=entry.encode(self._privacy_key),
                subject_key=subject_index(
                    self._privacy_key, record.token_issuer, record.token_subject
                ),
            )
        except DatabaseUnavailable:
            log.error("failure_not_recorded", record_id=str(job.record_id))


_MakeSignature = Callable[[bytes], tuple[bytes, "bytes | None"]]


def _sign_and_destroy(
    session: HsmSession,
    key: EphemeralKey,
    cert: x509.Certificate,
    digests: tuple[bytes, ...],
    make: _MakeSignature,
) -> _Signed | _Failed:
    """Sign every digest, then destroy the key and confirm it is gone (its record is committed)."""
    try:
        made = [make(d) for d in digests]
        signatures = tuple(signature for signature, _ in made)
        time_stamps = tuple(token for _, token in made if token is not None)
    except BaseException as exc:
        destruction = _destroy_quietly(session, key)
        if not isinstance(exc, Exception):
            raise
        return _Failed(exc, destruction, recorded=True)
    try:
        destruction = session.destroy(key)
    except Exception as exc:
        return _Failed(exc, None, recorded=True)
    if not destruction.confirmed_absent:
        return _Failed(KeyNotDestroyed("key still resolves after destroy"), destruction, True)
    return _Signed(cert, key.evidence, signatures, time_stamps, destruction)


def count_outcome(request: SignatureRequest, profile: str, outcome: str, digests: int) -> None:
    """One certificate and its digests in the metrics, by profile, format and outcome."""
    labels = (profile, request.format)
    metrics.CERTIFICATES.labels(*labels, outcome).inc()
    metrics.SIGNATURES.labels(*labels, "signed" if outcome == "completed" else "failed").inc(
        digests
    )


def _settle(job: _Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)


@contextlib.contextmanager
def _settling(jobs: Sequence[_Job], event: str | None = None) -> Iterator[None]:
    """Whatever escapes the block settles every job still waiting, so no caller waits forever.

    An error keeps its kind (a bug stays a 500) and ends here, logged as ``event`` when given;
    a stop (cancellation) becomes HsmUnavailable for the callers and goes on up.
    """
    try:
        yield
    except BaseException as exc:
        if event is not None:
            log.exception(event)
        cause = exc if isinstance(exc, Exception) else HsmUnavailable("the signer is stopping")
        for job in jobs:
            _settle(job, cause)
        if not isinstance(exc, Exception):
            raise


def _destroy_quietly(session: HsmSession, key: EphemeralKey | None) -> Destruction | None:
    if key is None:
        return None
    try:
        return session.destroy(key)
    except Exception:
        log.exception("ephemeral_key_destroy_failed")
        return None
