"""The per-request signing pipeline (DESIGN.md, "The per-request pipeline and its failure rules").

One request = one ephemeral key, one 10-minute certificate, N signatures. The key's whole life
runs inside a single worker-thread hop on one PKCS#11 session::

    generate key ─► read evidence ─► CA issues certificate ─► commit "issued" (bridged to the
    event loop and awaited from the thread) ─► sign every digest ─► destroy both halves ─►
    confirm they are gone

so the key can never outlive the function that made it, and it signs nothing unless the
"issued" record is committed. Back on the loop the record is completed (in one transaction with
the idempotent response) before anything is returned; if that commit fails the signatures are
dropped and the caller gets DatabaseUnavailable (fail closed).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import Chain, IssuingCA
from ca.errors import ProfileError
from ca.profiles import Level, Subject, subject_from_attributes
from idp_adapter.principal import Principal
from signer.errors import (
    DatabaseUnavailable,
    KeyNotDestroyed,
    RequestError,
    SignerError,
)
from signer.hsm import Destruction, EphemeralKey, Hsm, HsmSession, KeyEvidence
from signer.storage.records import IdempotencyKey, IssuedRecord, RecordStore

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


@dataclass(frozen=True)
class SignatureRequest:
    """Validated digests to sign; ``profile`` None means the identity's default."""

    hash_algorithm: str
    digests: tuple[bytes, ...]
    profile: str | None = None


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


@dataclass(frozen=True)
class _Cycle:
    certificate: x509.Certificate
    evidence: KeyEvidence
    signatures: tuple[bytes, ...]
    destruction: Destruction


class _CycleFailed(Exception):
    """Carries the destruction outcome of a cycle that raised, to be recorded."""

    def __init__(self, cause: BaseException, destruction: Destruction | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.destruction = destruction


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
        clock: Callable[[], datetime],
    ) -> None:
        self._hsm = hsm
        self._ca = ca
        self._label = ca_key_label
        self._records = records
        self._clock = clock
        self._chain_pem = ca.chain.pem()

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

    async def sign(
        self,
        principal: Principal,
        request: SignatureRequest,
        *,
        request_id: str,
        idempotency: IdempotencyKey | None = None,
        render: Callable[[SignatureResult], Mapping[str, Any]] | None = None,
    ) -> tuple[SignatureResult, Mapping[str, Any] | None]:
        """Sign ``request`` for ``principal``; returns the result and its rendered response."""
        level, subject = self.authorize(principal, request.profile)
        loop = asyncio.get_running_loop()
        record_id = uuid.uuid4()
        issued: list[IssuedRecord] = []

        def on_issued(cert: x509.Certificate, evidence: KeyEvidence) -> None:
            rec = self._issued_record(
                record_id, request_id, principal, level, request, cert, evidence
            )
            fut = asyncio.run_coroutine_threadsafe(self._records.record_issued(rec), loop)
            try:
                fut.result(ISSUED_COMMIT_TIMEOUT)
            except TimeoutError as exc:
                fut.cancel()
                raise DatabaseUnavailable("timed out recording the issued certificate") from exc
            issued.append(rec)

        try:
            cycle = await self._hsm.run(
                lambda s: self._cycle(s, subject, level, request.digests, on_issued)
            )
        except _CycleFailed as failed:
            await self._record_failure(record_id, issued, failed)
            raise failed.cause from failed
        result = SignatureResult(
            record_id=record_id,
            serial=serial_hex(cycle.certificate),
            profile=level.value,
            certificate=cycle.certificate,
            chain=self._ca.chain,
            chain_pem=self._chain_pem,
            signatures=cycle.signatures,
            evidence=cycle.evidence,
            destruction=cycle.destruction,
        )
        response = render(result) if render is not None else None
        await self._complete(result, idempotency, response)
        log.info(
            "signed",
            serial=result.serial,
            digests=len(result.signatures),
            profile=level.value,
            subject=principal.subject,
            issuer=principal.issuer_name,
        )
        return result, response

    def _cycle(
        self,
        session: HsmSession,
        subject: Subject,
        level: Level,
        digests: tuple[bytes, ...],
        on_issued: Callable[[x509.Certificate, KeyEvidence], None],
    ) -> _Cycle:
        """The key's whole life, on the worker thread. Nothing here touches the event loop
        except ``on_issued``, which waits for the 'issued' commit."""
        key: EphemeralKey | None = None
        try:
            key = session.generate_ephemeral()
            cert = self._ca.issue(
                session.token_key(self._label), key.private.public_key(), subject, level
            )
            on_issued(cert, key.evidence)
            signatures = tuple(key.private.sign_digest(d) for d in digests)
        except BaseException as exc:
            raise _CycleFailed(exc, _destroy_quietly(session, key)) from exc
        try:
            destruction = session.destroy(key)
        except BaseException as exc:
            raise _CycleFailed(exc, None) from exc
        if not destruction.confirmed_absent:
            raise _CycleFailed(KeyNotDestroyed("key still resolves after destroy"), destruction)
        return _Cycle(cert, key.evidence, signatures, destruction)

    def _issued_record(
        self,
        record_id: uuid.UUID,
        request_id: str,
        principal: Principal,
        level: Level,
        request: SignatureRequest,
        cert: x509.Certificate,
        evidence: KeyEvidence,
    ) -> IssuedRecord:
        return IssuedRecord(
            id=record_id,
            serial=serial_hex(cert),
            request_id=request_id,
            created_at=self._clock(),
            token_issuer=principal.issuer,
            issuer_name=principal.issuer_name,
            token_subject=principal.subject,
            client_id=principal.client_id,
            profile=level.value,
            subject_type=principal.subject_type,
            subject_dn=cert.subject.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            certificate_der=cert.public_bytes(Encoding.DER),
            key_evidence=evidence.as_dict(),
            hash_algorithm=request.hash_algorithm,
            digests=request.digests,
        )

    async def _complete(
        self,
        result: SignatureResult,
        idempotency: IdempotencyKey | None,
        response: Mapping[str, Any] | None,
    ) -> None:
        try:
            await self._records.complete(
                result.record_id,
                signed_count=len(result.signatures),
                destruction=result.destruction.as_dict(),
                at=self._clock(),
                idempotency=idempotency,
                response=response,
            )
        except DatabaseUnavailable:
            log.error("completion_not_recorded", serial=result.serial)
            raise

    async def _record_failure(
        self, record_id: uuid.UUID, issued: list[IssuedRecord], failed: _CycleFailed
    ) -> None:
        destruction = failed.destruction.as_dict() if failed.destruction else None
        log.warning(
            "signing_failed",
            error=type(failed.cause).__name__,
            issued=bool(issued),
            destruction=destruction,
        )
        if not issued:
            return
        reason = failed.cause.slug if isinstance(failed.cause, SignerError) else "internal-error"
        try:
            await self._records.fail(
                record_id, failure=reason, destruction=destruction, at=self._clock()
            )
        except DatabaseUnavailable:
            log.error("failure_not_recorded", record_id=str(record_id))


def _destroy_quietly(session: HsmSession, key: EphemeralKey | None) -> Destruction | None:
    if key is None:
        return None
    try:
        return session.destroy(key)
    except Exception:
        log.exception("ephemeral_key_destroy_failed")
        return None
