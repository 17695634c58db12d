"""m-of-n human approval of batch signatures (issue 7, item 2).

A batch request whose policy decision names an :class:`ApprovalRequirement` (m approvals from
members of a group) is not signed at once: :meth:`ApprovalService.hold` stores it, with the
requester's verified identity as data, and the requester polls its status (or gets a webhook).
Members of the group see it (who asks, which digests with their labels, why, until when) and
decide. Each decision is bound to the exact digests: the approver sends back the digest
commitment they were shown, ``SHA-256(lp(d1) || ... || lp(dn))`` with ``lp(x) = u32(len(x))
|| x`` (the ``digests_sha256`` of ``ca.logentry``), and any other value is refused. Every
decision is a log entry (``ca.logentry`` kind 0x03) written in the transaction that records it.

Rules (the four-eyes principle of an HSM's m-of-n key-use policy):

- nobody approves their own request (403), a member decides once (409), a non-member not at
  all (403), nothing after expiry (410) or after the request ended (409);
- **one denial ends the request**: any member may veto; a request somebody in the group has
  objected to is not signed on the votes of the others (the requester may ask again);
- the m-th approval moves the request to ``signing`` in the same transaction (row lock), and
  only that caller signs, through :meth:`signer.signing.pipeline.SigningService.sign`, so the
  signature gets the normal key life, record and issuance log entry, with the requester's
  identity in the certificate. With several replicas it happens exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, cast

import structlog

from ca.logentry import ApprovalEntry, PrivacyKey, digests_sha256
from idp_adapter.principal import Principal
from signer.errors import RequestError, SignerError
from signer.flows.webhooks import Webhooks, approval_payload, webhook_key
from signer.flows.websign import principal_from_json as principal_from_data
from signer.flows.websign import principal_json as principal_data
from signer.formats.pdf import PreparedPdf, embed
from signer.periodic import every
from signer.policy.rules import PolicyRefusal
from signer.signing.longterm import LongTerm, PadesLevel
from signer.signing.pipeline import SignatureRequest, SigningService, Start
from signer.storage.approvals import (
    ApprovalStore,
    NewApprovalRequest,
    NewDecision,
    StoredApprovalRequest,
)
from signer.translog.log import DecisionFields, RequestFields, approval_entry

log = structlog.get_logger(__name__)

EXPIRY_SWEEP_SECONDS = 15.0


class ApprovalNotFound(RequestError):
    slug = "approval-not-found"
    title = "No such approval request (or it is not yours to see)"
    status = 404


class NotAnApprover(RequestError):
    slug = "approval-not-member"
    title = "Only members of the request's approver group may decide on it"
    status = 403


class SelfApproval(RequestError):
    slug = "approval-self"
    title = "Nobody may approve or deny their own request"
    status = 403


class AlreadyDecided(RequestError):
    slug = "approval-already-decided"
    title = "You have already decided on this request; each approver counts once"
    status = 409


class DigestsMismatch(RequestError):
    slug = "approval-digests-mismatch"
    title = "The digest commitment does not match the digests of this request"
    status = 409


class ApprovalExpired(RequestError):
    slug = "approval-expired"
    title = "This approval request has expired"
    status = 410


class NotPending(RequestError):
    slug = "approval-not-pending"
    title = "This approval request has already been decided"
    status = 409


class Requirement(Protocol):
    """``signer.policy.rules.ApprovalRequirement``: m approvals (``required``) from ``group``."""

    @property
    def required(self) -> int: ...

    @property
    def group(self) -> str: ...


class PolicyDecision(Protocol):
    @property
    def approvals(self) -> Requirement | None: ...


class ApprovalPolicy(Protocol):
    """The two methods of ``signer.policy.rules.Policy`` that approvals need."""

    def decide(self, principal: Principal, *, client_id: str | None) -> PolicyDecision: ...

    def is_member(self, group: str, principal: Principal) -> bool: ...


class CurrentPolicy:
    """The policy in force, read on every call (the policy file reloads without a restart:
    ``signer.policy.file.PolicyFile.current``), as an :class:`ApprovalPolicy`."""

    def __init__(self, current: Callable[[], ApprovalPolicy]) -> None:
        self._current = current

    def decide(self, principal: Principal, *, client_id: str | None) -> PolicyDecision:
        return self._current().decide(principal, client_id=client_id)

    def is_member(self, group: str, principal: Principal) -> bool:
        return self._current().is_member(group, principal)


def digest_commitment(digests: tuple[bytes, ...]) -> str:
    """What an approver is shown and sends back: hex of ``ca.logentry.digests_sha256``."""
    return digests_sha256(digests).hex()


def display_name(principal: Principal) -> str:
    return principal.attributes.get("common_name") or principal.subject


@dataclass(frozen=True)
class Hold:
    """What to hold: the validated request, one label per digest, the requester's reason."""

    request: SignatureRequest
    labels: tuple[str, ...]
    reason: str | None
    webhook_url: str | None = None
    pdf: PreparedPdf | None = None
    #: With ``pdf``: the baseline level of the signed PDF (EN 319 142-1 §6.3).
    level: PadesLevel = "b-t"


@dataclass(frozen=True)
class Held:
    request: StoredApprovalRequest
    #: Shown once: the webhook HMAC key is HMAC-SHA-256(SHA-256(secret), "qes-signer webhook v1").
    webhook_secret: str | None


@dataclass(frozen=True, kw_only=True, eq=False)
class ApprovalService:
    """Holds, shows and decides approval requests; signs on the m-th approval."""

    store: ApprovalStore
    policy: ApprovalPolicy
    signing: SigningService
    privacy_key: PrivacyKey
    clock: Callable[[], datetime]
    lifetime: timedelta
    webhooks: Webhooks | None = None
    #: Brings a held PDF to B-LT / B-LTA once signed (``signer.signing.longterm``).
    long_term: LongTerm | None = None

    def requirement(self, principal: Principal) -> Requirement | None:
        """The policy's approval requirement for this requester, if any. A request the policy
        refuses outright is not held: it goes on to the pipeline, which refuses and logs it."""
        try:
            return self.policy.decide(principal, client_id=principal.client_id).approvals
        except PolicyRefusal:
            return None

    async def hold(
        self,
        principal: Principal,
        hold: Hold,
        requirement: Requirement,
        *,
        request_id: str,
        start: Start | None = None,
    ) -> Held:
        """Hold an admitted request for its approvers. Holding it is its signing operation:
        ``start`` (the token's ``jti``, RFC 7519 §4.1.7) runs once admission allowed it, so a
        refused request spends nothing; the approved signing later needs no token."""
        await self._admit(principal, hold.request, request_id)
        if start is not None:
            await start()
        now = self.clock()
        secret = secrets.token_urlsafe(32) if hold.webhook_url else None
        new = NewApprovalRequest(
            id=uuid.uuid4(),
            kind="pdf" if hold.pdf is not None else "digests",
            request_id=request_id,
            created_at=now,
            expires_at=now + self.lifetime,
            token_issuer=principal.issuer,
            issuer_name=principal.issuer_name,
            token_subject=principal.subject,
            client_id=principal.client_id,
            display_name=display_name(principal),
            principal=principal_data(principal),
            format=hold.request.format,
            profile=hold.request.profile,
            hash_algorithm=hold.request.hash_algorithm,
            digests=hold.request.digests,
            labels=hold.labels,
            reason=hold.reason,
            approver_group=requirement.group,
            approvals_required=requirement.required,
            pdf=hold.pdf.document if hold.pdf else None,
            pdf_reserved=(hold.pdf.reserved_start, hold.pdf.reserved_end) if hold.pdf else None,
            webhook_url=hold.webhook_url,
            webhook_secret_hash=hashlib.sha256(secret.encode()).digest() if secret else None,
            pades_level=hold.level,
        )
        await self.store.create(new)
        stored = await self.store.get(new.id)
        assert stored is not None
        log.info(
            "approval_requested",
            id=str(new.id),
            group=requirement.group,
            required=requirement.required,
            digests=len(new.digests),
        )
        return Held(stored, secret)

    async def _admit(
        self, principal: Principal, request: SignatureRequest, request_id: str
    ) -> None:
        """Everything but the approval, before anything is held: the kill switch, the rule,
        profile and level (refusals logged by the pipeline), ``acr`` and digest count, the
        identity's profiles; the request counts against the requester's rate limit now, once
        (its signing, with ``approved=True``, counts nothing more)."""
        gate = self.signing.gate
        decision = await self.signing.screen(
            principal, request, request_id=request_id, approvals=True
        )
        profile = request.profile or principal.default_profile
        if decision is not None:
            decision.check(principal, profile=profile, digests=len(request.digests))
        self.signing.authorize(principal, request.profile)
        if gate is not None:
            await gate.count(principal, decision)

    async def expire(self) -> None:
        """Mark overdue requests expired (and tell their webhooks)."""
        for req in await self.store.expire(self.clock()):
            log.info("approval_expired", id=str(req.id))
            self._notify(req)

    async def run_expiry(self) -> None:
        """Every EXPIRY_SWEEP_SECONDS until cancelled, so expiry webhooks go out unasked."""
        await asyncio.sleep(EXPIRY_SWEEP_SECONDS)  # the first round one interval after start
        await every(EXPIRY_SWEEP_SECONDS, self.expire, failed="approval_expiry_failed")

    async def visible(self, request_id: uuid.UUID, principal: Principal) -> StoredApprovalRequest:
        """The request, for its requester or a member of its approver group (else 404)."""
        await self.expire()
        req = await self.store.get(request_id)
        if req is None or not (_is_requester(req, principal) or self._member(req, principal)):
            raise ApprovalNotFound(f"{request_id} for {principal.subject}")
        return req

    async def pending_for(self, principal: Principal) -> list[StoredApprovalRequest]:
        """Pending requests whose approver group ``principal`` belongs to."""
        await self.expire()
        return [r for r in await self.store.pending() if self._member(r, principal)]

    def _member(self, req: StoredApprovalRequest, principal: Principal) -> bool:
        return self.policy.is_member(req.approver_group, principal)

    async def decide(
        self,
        request_id: uuid.UUID,
        principal: Principal,
        *,
        approve: bool,
        commitment: str,
        http_request_id: str,
    ) -> StoredApprovalRequest:
        """Record one approver's decision; the m-th approval signs (module docstring)."""
        await self.expire()
        now = self.clock()
        decision = NewDecision(
            id=uuid.uuid4(),
            decision="approved" if approve else "denied",
            request_id=http_request_id,
            decided_at=now,
            issuer_name=principal.issuer_name,
            token_issuer=principal.issuer,
            token_subject=principal.subject,
            email=principal.email,
            display_name=display_name(principal),
        )

        def check(req: StoredApprovalRequest) -> bytes:
            self._check(req, principal, commitment, now)
            return self._entry(req, decision).encode(self.privacy_key)

        decided = await self.store.decide(request_id, decision, check)
        if decided is None:
            raise ApprovalNotFound(str(request_id))
        log.info(
            "approval_decided",
            id=str(request_id),
            decision=decision.decision,
            approvals=decided.request.approvals,
            required=decided.request.approvals_required,
            log_index=decided.log_index,
        )
        if decided.request.status == "denied":
            self._notify(decided.request)
        if decided.sign:
            return await self._sign(decided.request)
        return decided.request

    def _check(
        self, req: StoredApprovalRequest, principal: Principal, commitment: str, now: datetime
    ) -> None:
        """The refusals, in this order, on the locked row; each raises before anything is
        written."""
        if not self._member(req, principal):
            raise NotAnApprover(f"{principal.subject} is not in {req.approver_group}")
        if _is_requester(req, principal):
            raise SelfApproval(f"{principal.subject} asked for {req.id}")
        if req.status == "expired" or (req.status == "pending" and req.expires_at <= now):
            raise ApprovalExpired(str(req.id))
        if req.status != "pending":
            raise NotPending(f"{req.id} is {req.status}")
        if any((d.token_issuer, d.token_subject) == (principal.issuer, principal.subject)
               for d in req.decisions):  # fmt: skip
            raise AlreadyDecided(f"{principal.subject} on {req.id}")
        expected = digest_commitment(req.digests)
        if not hmac.compare_digest(commitment.lower().encode(), expected.encode()):
            raise DigestsMismatch(f"{req.id}: commitment {commitment[:16]}…")

    def _entry(self, req: StoredApprovalRequest, decision: NewDecision) -> ApprovalEntry:
        return approval_entry(req_fields(req), decision_fields(decision))

    async def _sign(self, req: StoredApprovalRequest) -> StoredApprovalRequest:
        """The request is 'signing' and this caller moved it there: sign, complete."""
        principal = principal_from_data(req.principal)
        request = SignatureRequest(
            hash_algorithm=req.hash_algorithm,
            digests=req.digests,
            profile=req.profile,
            format=req.format,  # type: ignore[arg-type]  # checked when held
        )
        try:
            result, response = await self.signing.sign(
                principal, request, request_id=req.request_id, approved=True
            )
            signed_pdf = None
            if req.pdf is not None and req.pdf_reserved is not None:
                prepared = PreparedPdf(req.pdf, req.digests[0], req.hash_algorithm,
                                       *req.pdf_reserved)  # fmt: skip
                signed_pdf = await asyncio.to_thread(embed, prepared, result.signatures[0])
                level = cast(PadesLevel, req.pades_level)
                if self.long_term is not None and level != "b-t":
                    signed_pdf = await self.long_term.augment(signed_pdf, level)
        except Exception as exc:  # a bug too: the request must not stay 'signing' for ever
            slug = exc.slug if isinstance(exc, SignerError) else "internal-error"
            failed = await self.store.fail(req.id, at=self.clock(), error=slug)
            log.warning("approval_signing_failed", id=str(req.id), error=slug)
            if failed is None or not isinstance(exc, SignerError):
                raise
            self._notify(failed)  # the approval stands; the request shows why it failed
            return failed
        done = await self.store.complete(
            req.id,
            at=self.clock(),
            serial=result.serial,
            result=response,
            signed_pdf=signed_pdf,
        )
        assert done is not None, "only this caller moves a 'signing' request on"
        log.info("approval_completed", id=str(req.id), serial=result.serial)
        self._notify(done)
        return done

    def _notify(self, req: StoredApprovalRequest) -> None:
        if self.webhooks is None or req.webhook_url is None or req.webhook_secret_hash is None:
            return
        body = approval_payload(req.id, req.status)
        store, request_id = self.store, req.id

        async def record(result: str, delivered: bool) -> None:
            await store.record_webhook(request_id, self.clock(), result=result, delivered=delivered)

        key = webhook_key(req.webhook_secret_hash)
        self.webhooks.send(req.webhook_url, key, body, record, name=str(req.id))


def _is_requester(req: StoredApprovalRequest, principal: Principal) -> bool:
    return (req.token_issuer, req.token_subject) == (principal.issuer, principal.subject)


def req_fields(req: StoredApprovalRequest) -> RequestFields:
    return RequestFields(
        str(req.id), req.token_issuer, req.token_subject, req.approver_group,
        req.approvals_required, req.hash_algorithm, req.digests,
    )  # fmt: skip


def decision_fields(d: NewDecision) -> DecisionFields:
    return DecisionFields(
        str(d.id), d.request_id, d.decided_at, d.decision, d.issuer_name, d.token_issuer,
        d.token_subject, d.email,
    )  # fmt: skip
