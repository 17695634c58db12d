"""The CSC credential lifecycle (issue 6; STANDARDS.md §6): reserve, create, authorize, sign,
sweep.

An ephemeral key must exist before the client hashes (the client embeds the certificate in
its signed attributes), but ``credentials/list`` is a listing any client may call as often as it
likes, so it never touches the HSM (issue 17 item 9): it hands out a *reserved* credential ID
(a database row, one open reservation per identity, the same ID until it is used or expires).
The key and its certificate are made when the reserved credential is first needed:
``credentials/info`` (the client asks for the certificate it will embed; CSC v2 §11.5 requires
``cert`` and ``key`` in the answer, so there is no credential without them to describe) or
``credentials/authorize``, whichever comes first. Before that, ``credentials/list`` with
``credentialInfo`` describes a reserved credential as key ``status`` "disabled" with no
certificates (CSC v2 §11.4/§11.5: ``key/status`` "disabled" = not usable yet). The v2 OAuth2
flow needs the credential's certificate on its consent page, so it takes credentials that
exist (a wallet reads ``credentials/info`` first, as pyHanko does).

    reserve ─► (credentials/list) a reserved ID, no HSM work; the policy and kill switch apply
    create_credential ─► (first info/authorize) HSM: token-object key pair + CA issues the
    10-minute certificate ─► commit "issued" record + credential, reservation gone (bridged to
    the loop, awaited from the thread); the rate limit and the bound on unused credentials count
    here
    authorize ─► single-use secret bound to credential, owner, hash algorithm, exact digests,
    count and authentication (acr/amr/auth_time); stored hashed
    sign_hash ─► consume the secret under row locks after checking every binding ─► HSM: sign
    each digest, destroy both halves, confirm ─► complete record + log entry ─► signatures
    sweep ─► destroy keys of expired credentials; their records fail "expired unused"

Each request's HSM work is one worker-thread hop (STANDARDS.md §8). Every refusal with a known
requester is appended to the transparency log as a refusal entry, like other refusals.

:meth:`CscService.create_authorization` is the seam for the v2 OAuth2 credential flow
(``oauth2/token`` issues its result as the credential token; ``signatures/signHash`` accepts
it as the bearer token in place of a SAD).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ca.authority import IssuingCA
from ca.logentry import PrivacyKey, Requester, RequestSummary
from ca.profiles import Level, Subject
from ca.tsa import HASH_ALGORITHMS
from idp_adapter.errors import InvalidToken
from idp_adapter.principal import Principal
from signer.errors import (
    DatabaseUnavailable,
    HsmUnavailable,
    KeyNotDestroyed,
    RequestError,
    SignerError,
)
from signer.keys import Destruction, Hsm, HsmSession
from signer.keys.credential import credential_label, label_expiry
from signer.policy.enforcement import Gate, Suspended
from signer.policy.refusals import RefusalLog
from signer.policy.rules import Decision, PolicyRefusal
from signer.settings.config import CscSettings
from signer.signing.csc_errors import (
    AuthenticationChanged,
    CredentialExpired,
    CredentialNotFound,
    CredentialTokenMismatch,
    CredentialUsed,
    CscError,
    CscInvalidToken,
    HashesNotAuthorized,
    InvalidSad,
    SadAlreadyUsed,
    SadExpired,
    TooManyCredentials,
    TooManySignatures,
)
from signer.signing.pipeline import issued_record
from signer.signing.timestamping import BuiltinTimeStamps, ExternalTimeStamps, TimeStampSource
from signer.storage.csc import (
    AuthorizationCheck,
    Credential,
    CredentialAuthorization,
    CscStore,
    NewCredential,
    StoredAuthorization,
)
from signer.storage.records import IssuedRecord, RecordStore
from signer.translog.log import issuance_entry

log = structlog.get_logger(__name__)

#: Authorization secrets start with this, so ``signHash`` tells a v2 credential token from a
#: JWT access token (a JWT starts with ``ey``).
SECRET_PREFIX = "qcsc_"  # noqa: S105 - a prefix, not a secret
#: Digest algorithm OIDs (RFC 5754 §2) by name, and back.
HASH_OIDS = {name: oid for name, (oid, _) in HASH_ALGORITHMS.items()}
HASH_NAMES = {oid: name for name, oid in HASH_OIDS.items()}
#: ecdsa-with-SHA256/384/512 (RFC 5758 §3.2) -> the digest algorithm it implies.
ECDSA_WITH = {
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
}
#: id-ecPublicKey (RFC 5480 §2.1.1): CSC v2's key-only signAlgo, the hash given separately.
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
#: How long past its expiry a credential caught mid-signature is left to its signer.
SIGNING_GRACE = timedelta(seconds=60)
#: How long the working rows of an ended credential (and of a v2 OAuth2 request) are kept for
#: an operator's inspection before the sweeper deletes them; the signing record and its log
#: entry are the audit trail and stay for the retention period.
KEEP_ENDED = timedelta(days=1)
#: How long a worker thread waits for the credential's "issued" commit.
COMMIT_TIMEOUT = 10.0
#: How long one request may take to make a reserved credential (an HSM hop and a commit);
#: concurrent requests for it poll every CLAIM_POLL seconds meanwhile.
CLAIM = timedelta(seconds=30)
CLAIM_POLL = 0.05
FAILURE_EXPIRED_UNUSED = "csc-credential-expired-unused"
FAILURE_INTERRUPTED = "csc-signing-interrupted"


def secret_hash(secret: str) -> bytes:
    """What is stored of an authorization secret: its SHA-256."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def is_credential_token(token: str) -> bool:
    """True for this service's authorization secrets (``qcsc_…``), False for JWTs."""
    return token.startswith(SECRET_PREFIX)


@dataclass(frozen=True)
class Authorized:
    """The answer of ``credentials/authorize``: the SAD and its lifetime in seconds."""

    secret: str
    expires_in: int


@dataclass(frozen=True)
class _Signed:
    signatures: tuple[bytes, ...]
    destruction: Destruction


@dataclass(frozen=True)
class _Failed:
    cause: Exception
    destruction: Destruction | None


class CscService:
    """One-shot CSC credentials; the HTTP edge (``signer.http.csc.api``) parses and renders."""

    def __init__(
        self,
        *,
        hsm: Hsm,
        ca: IssuingCA,
        ca_key_label: str,
        store: CscStore,
        records: RecordStore,
        policy: Callable[[Principal, str | None], tuple[Level, Subject]],
        privacy_key: PrivacyKey,
        time_stamps: TimeStampSource,
        clock: Callable[[], datetime],
        settings: CscSettings,
        refusals: RefusalLog,
        gate: Gate | None = None,
        log_guard: Callable[[], None] | None = None,
    ) -> None:
        self._hsm = hsm
        #: Spends the token's ``jti`` when a credential is made (:meth:`spend_tokens_with`).
        self._start_operation: Callable[[Principal, str | None], Awaitable[None]] | None = None
        self._gate = gate
        self._log_guard = log_guard or (lambda: None)  # signer.translog.anchor
        self._ca = ca
        self._ca_label = ca_key_label
        self._store = store
        self._records = records
        self._refusals = refusals
        self._policy = policy
        self._privacy_key = privacy_key
        self._time_stamps = time_stamps
        self._clock = clock
        self.settings = settings

    def spend_tokens_with(
        self, start_operation: Callable[[Principal, str | None], Awaitable[None]]
    ) -> None:
        """Making a credential (its key, its certificate) is one signing operation: it spends
        the token's ``jti`` through ``start_operation`` (idp_adapter's
        ``IssuerRegistry.start_operation``, RFC 7519 §4.1.7) once the policy, the kill switch
        and the limits admitted it (:meth:`_admit`), so a refused one leaves the token for the
        retry; reading it again does not."""
        self._start_operation = start_operation

    def now(self) -> datetime:
        return self._clock()

    @property
    def chain(self) -> tuple[x509.Certificate, x509.Certificate]:
        """The issuing CA and root certificates that follow every credential's certificate."""
        return (self._ca.chain.issuing, self._ca.chain.root)

    # -- credentials/list ------------------------------------------------------------------------

    async def reserve(self, principal: Principal, request_id: str) -> str:
        """``credentials/list``: the owner's reserved credential ID; no HSM work. The kill
        switch and the policy (may this identity sign at all) refuse here already, logged."""
        try:
            if self._gate is not None:
                self._gate.screen(
                    principal, client_id=principal.client_id, profile=principal.default_profile
                )
            self._policy(principal, None)
        except RequestError as exc:
            await self._refuse(_requester(principal), principal.subject_type, None, request_id, exc)
            raise
        now = self._clock()
        until = now + self._ca.policy.validity
        new_id = secrets.token_urlsafe(18)
        return await self._store.reserve(new_id, principal.issuer, principal.subject, now, until)

    async def made_from_reservation(
        self, principal: Principal, credential_id: str, request_id: str
    ) -> Credential | None:
        """The credential made now from ``principal``'s reservation ``credential_id``, or by a
        concurrent request that claimed it first (awaited); None when that is not a live
        reservation of theirs (the caller reads the credential as usual)."""
        now = self._clock()
        reserved = await self._store.reservation(credential_id, now)
        if reserved is None or (reserved.token_issuer, reserved.token_subject) != (
            principal.issuer,
            principal.subject,
        ):
            return None
        if not await self._store.claim(credential_id, now, now + CLAIM):
            return await self._made_elsewhere(credential_id)
        try:
            return await self.create_credential(principal, request_id, credential_id)
        except BaseException:
            await asyncio.shield(self._store.release(credential_id))
            raise

    async def _made_elsewhere(self, credential_id: str) -> Credential | None:
        """Wait (at most :data:`CLAIM`) for the request that claimed the reservation."""
        for _ in range(int(CLAIM.total_seconds() / CLAIM_POLL)):
            found = await self._store.get(credential_id)
            if found is not None:
                return found
            await asyncio.sleep(CLAIM_POLL)
        return None

    async def create_credential(
        self, principal: Principal, request_id: str, credential_id: str | None = None
    ) -> Credential:
        """A fresh credential for ``principal``: key pair in the HSM (token objects labelled
        ``qes-cred:<id>@<expiry>``), its certificate from the CA (same policy and subject
        rules as the batch API), its "issued" record and the credential row committed before
        the hop ends (the reservation ``credential_id``, if given, goes in the same
        transaction). Any failure destroys the key."""
        self._log_guard()
        level, subject = await self._admit(principal, request_id)
        credential_id = credential_id or secrets.token_urlsafe(18)
        label = credential_label(credential_id, self._clock() + self._ca.policy.validity)
        loop = asyncio.get_running_loop()

        def commit(record: IssuedRecord, credential: NewCredential) -> None:
            fut = asyncio.run_coroutine_threadsafe(
                self._store.create_credential(record, credential), loop
            )
            try:
                fut.result(COMMIT_TIMEOUT)
            except TimeoutError as exc:
                fut.cancel()
                raise DatabaseUnavailable("timed out recording the CSC credential") from exc

        def hop(session: HsmSession) -> None:
            key = session.generate_credential_key(label)
            try:
                ca_key = session.token_key(self._ca_label)
                cert = self._ca.issue(ca_key, key.private.public_key(), subject, level)
                record = issued_record(
                    principal,
                    level,
                    subject,
                    cert,
                    record_id=uuid.uuid4(),
                    request_id=request_id,
                    created_at=self._clock(),
                    key_evidence=key.evidence.as_dict(),
                )
                commit(record, _new_credential(credential_id, label, record))
            except BaseException:
                _destroy_quietly(session, label)
                raise

        await self._hsm.run(hop)
        created = await self._store.get(credential_id)
        if created is None:  # committed above: only a database that lost it gets here
            raise DatabaseUnavailable(f"credential {credential_id} vanished after its commit")
        log.info("csc_credential_created", serial=created.record.serial, subject=principal.subject)
        return created

    async def _admit(self, principal: Principal, request_id: str) -> tuple[Level, Subject]:
        """Policy (may this identity sign, with which subject), the bound on unused
        credentials and the rate limit; a refusal is logged before it is raised. Last, the
        credential is a signing operation that goes ahead: the token's ``jti`` is spent now
        (:meth:`spend_tokens_with`), before the key exists, and never for a refused one."""
        try:
            decision = self._screen(principal, digests=0)
            level, subject = self._policy(principal, None)
            active = await self._store.count_active(
                principal.issuer, principal.subject, self._clock()
            )
            if active >= self.settings.max_active_credentials:
                raise TooManyCredentials(f"{principal.subject} holds {active} unused credentials")
            if self._gate is not None:  # a credential is one signing request: count it here
                await self._gate.count(principal, decision)
        except RequestError as exc:
            await self._refuse(_requester(principal), principal.subject_type, None, request_id, exc)
            raise
        if self._start_operation is not None:
            try:
                await self._start_operation(principal, None)
            except InvalidToken as exc:  # a replayed jti: refused and logged as at the batch API
                await self._refuse(
                    _requester(principal), principal.subject_type, None, request_id, exc
                )
                raise
        return level, subject

    def _screen(self, principal: Principal, *, digests: int) -> Decision | None:
        """The kill switch and the signing policy (``signer.policy.enforcement``): at
        credentials/list (no digests yet) and again at credentials/authorize
        (the digest count, acr)."""
        if self._gate is None:
            return None
        profile = principal.default_profile  # CSC credentials use the identity's default
        return self._gate.check(
            principal, client_id=principal.client_id, profile=profile, digests=digests
        )

    async def screen_signer(
        self, principal: Principal, client_id: str, digests: int, request_id: str
    ) -> None:
        """The v2 OAuth2 credential flow, after the owner's login: the kill switch and the
        policy's rule for this signer and client (profile, digest count, acr, approvals); a
        refusal is logged as a refusal entry before it is raised."""
        as_client = dataclasses.replace(principal, client_id=client_id)
        try:
            self._screen(as_client, digests=digests)
        except PolicyRefusal as exc:
            await self._refuse(_requester(as_client), principal.subject_type, None, request_id, exc)
            raise

    # -- credentials/info ------------------------------------------------------------------------

    async def credential(self, principal: Principal, credential_id: str) -> Credential:
        """``principal``'s credential ``credential_id``; another identity's is "not found"."""
        credential = await self._store.get(credential_id)
        if credential is None or not _owns(principal, credential):
            raise CredentialNotFound(f"{credential_id!r} unknown or not {principal.subject}'s")
        return credential

    # -- credentials/authorize -------------------------------------------------------------------

    async def create_authorization(self, binding: CredentialAuthorization) -> str:
        """Create a single-use authorization and return its secret (``qcsc_…``).

        The secret is bound to ``binding``: the credential, its owner (issuer + subject), the
        hash algorithm OID, the exact digests and their count, the expiry (cut to the
        credential's), and the authentication context (acr/amr/auth_time). Only its SHA-256 is
        stored. ``signatures/signHash`` takes it as body ``SAD`` (with the owner's bearer
        token) or as the bearer token itself (a v2 credential token), consumes it once and
        checks every binding before the key signs. Raises CredentialNotFound (unknown, or the
        binding's owner is not the credential's), CredentialExpired or CredentialUsed.
        """
        now = self._clock()
        credential = await self._store.get(binding.credential_id)
        if credential is None or (credential.token_issuer, credential.token_subject) != (
            binding.token_issuer,
            binding.token_subject,
        ):
            raise CredentialNotFound(f"{binding.credential_id!r} unknown or not the owner's")
        _check_usable(credential, now)
        if binding.hash_algorithm not in HASH_NAMES:
            raise HashesNotAuthorized(f"hash algorithm {binding.hash_algorithm!r}")
        binding = dataclasses.replace(
            binding, expires_at=min(binding.expires_at, credential.expires_at)
        )
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        await self._store.add_authorization(secret_hash(secret), binding, now)
        return secret

    async def authorize(
        self,
        principal: Principal,
        credential_id: str,
        hash_oid: str,
        digests: tuple[bytes, ...],
        request_id: str,
    ) -> Authorized:
        """``credentials/authorize``: a SAD for exactly ``digests`` under ``hash_oid``, bound to
        ``principal``'s current authentication (CSC v1.0.4.0 §11.6, SCAL 2)."""
        made = await self.made_from_reservation(principal, credential_id, request_id)
        now = self._clock()
        try:
            credential = made or await self.credential(principal, credential_id)
            _check_usable(credential, now)
            self._screen(principal, digests=len(digests))
        except (CscError, PolicyRefusal) as exc:
            await self._refuse(
                _requester(principal), principal.subject_type, hash_oid, request_id, exc, digests
            )
            raise
        expires = min(now + self.settings.sad_lifetime, credential.expires_at)
        secret = await self.create_authorization(
            CredentialAuthorization(
                credential_id=credential_id,
                token_issuer=principal.issuer,
                token_subject=principal.subject,
                hash_algorithm=hash_oid,
                digests=digests,
                count=len(digests),
                expires_at=expires,
                acr=principal.acr,
                amr=principal.amr,
                auth_time=principal.auth_time,
            )
        )
        return Authorized(secret, max(1, int((expires - now).total_seconds())))

    # -- signatures/signHash ---------------------------------------------------------------------

    async def sign_hash(
        self,
        *,
        principal: Principal | None,
        secret: str,
        credential_id: str,
        hash_oid: str,
        digests: tuple[bytes, ...],
        request_id: str,
    ) -> tuple[bytes, ...]:
        """Sign ``digests`` (DER ECDSA, input order) with the credential's key, then destroy it.

        ``principal`` is the bearer's identity when the secret came as body ``SAD``; None when
        the secret is the bearer token (v2 credential token). The secret is consumed only if
        every binding holds (:func:`_binding_check`); then the key signs in one HSM hop and is
        destroyed, and the record is completed with its log entry before anything is returned.
        """
        self._log_guard()
        now = self._clock()
        seen: list[Credential] = []
        check = _binding_check(principal, credential_id, hash_oid, digests, now, seen)
        if principal is not None:  # another identity's credential: refused before the SAD
            try:
                await self.credential(principal, credential_id)
            except CscError as exc:
                await self._refuse_signing(principal, None, hash_oid, digests, request_id, exc)
                raise
        try:
            taken = await self._store.take_authorization(secret_hash(secret), now, check)
        except CscError as exc:
            await self._refuse_signing(
                principal, seen[0] if seen else None, hash_oid, digests, request_id, exc
            )
            raise
        if taken is None:
            if principal is None:
                raise CscInvalidToken("unknown credential token")
            unknown = InvalidSad("no such SAD")
            await self._refuse_signing(principal, None, hash_oid, digests, request_id, unknown)
            raise unknown
        _, credential = taken
        try:
            await self._end_if_suspended(credential)
        except Suspended as exc:
            await self._refuse_signing(principal, credential, hash_oid, digests, request_id, exc)
            raise
        outcome = await self._hsm.run(lambda s: _sign_and_destroy(s, credential, digests))
        if isinstance(outcome, _Failed):
            await self._end(credential, ("signing",), "failed", _slug(outcome.cause), outcome)
            raise outcome.cause
        return await self._complete(credential, hash_oid, digests, outcome)

    async def _end_if_suspended(self, credential: Credential) -> None:
        """Suspended since the SAD (issue 7): the SAD is used up and nothing is signed; the key
        is destroyed now and the record fails 'suspended'. Raises Suspended."""
        if self._gate is None:
            return
        r = credential.record
        try:
            self._gate.suspensions.current.check_identity(
                r.token_issuer, r.token_subject, r.client_id
            )
        except Suspended as exc:
            label = credential.key_label
            destruction = await self._hsm.run(lambda s: _destroy_quietly(s, label))
            await self._end(credential, ("signing",), "failed", exc.slug, _Failed(exc, destruction))
            raise

    async def _complete(
        self, credential: Credential, hash_oid: str, digests: tuple[bytes, ...], signed: _Signed
    ) -> tuple[bytes, ...]:
        at = self._clock()
        hash_name = HASH_NAMES[hash_oid]
        record = dataclasses.replace(credential.record, hash_algorithm=hash_name, digests=digests)
        destruction = signed.destruction.as_dict()
        entry = issuance_entry(
            record,
            completed_at=at,
            destruction=destruction,
            signed_count=len(signed.signatures),
            failure=None,
        ).encode(self._privacy_key)
        idx = await self._store.complete(
            credential.id,
            at=at,
            signed_count=len(signed.signatures),
            destruction=destruction,
            hash_algorithm=hash_name,
            digests=digests,
            entry=entry,
        )
        if idx is None:  # ended meanwhile (a sweeper after the grace): release nothing
            raise DatabaseUnavailable(f"credential {credential.id} was no longer signing")
        log.info(
            "csc_signed",
            serial=credential.record.serial,
            digests=len(digests),
            log_index=idx,
            subject=credential.token_subject,
        )
        return signed.signatures

    # -- signatures/timestamp --------------------------------------------------------------------

    async def time_stamp(self, digest: bytes, hash_name: str, nonce: int | None) -> bytes:
        """A DER TimeStampToken over ``digest`` from the configured TSA (built-in: the HSM's TSA
        key; external: its verified token), echoing ``nonce`` when given (RFC 3161 §2.4.1).
        Refused while the whole signer is suspended (the kill switch stops every key's use)."""
        if self._gate is not None:
            self._gate.suspensions.current.check_client(None)
        source = self._time_stamps

        def hop(session: HsmSession) -> bytes:
            if isinstance(source, BuiltinTimeStamps):
                key = session.token_key(source.key_label)
                return source.authority.timestamp_digest(digest, hash_name, key, nonce=nonce)
            if isinstance(source, ExternalTimeStamps) and nonce is not None:
                return dataclasses.replace(source, nonces=lambda: nonce).stamp(digest, hash_name)
            return source.bind(session)(digest, hash_name)

        return await self._hsm.run(hop)

    # -- sweeper ---------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Destroy the keys of expired credentials; return how many credentials were ended.

        Safe in every process at once: destruction by label finds nothing the second time, and
        :meth:`CscStore.end` ends a credential once. An unused credential's record fails with
        ``csc-credential-expired-unused``; one caught mid-signature (its process died) after
        :data:`SIGNING_GRACE` with ``csc-signing-interrupted``. Keys in the HSM whose label's
        expiry passed longer than the grace ago without a credential row (a crash between key
        generation and the commit) are destroyed too.
        """
        now = self._clock()
        expired = [
            c
            for c in await self._store.expired(now)
            if c.state == "active" or c.expires_at <= now - SIGNING_GRACE
        ]
        labels = {c.key_label for c in expired}

        def hop(session: HsmSession) -> tuple[dict[str, Destruction | None], int]:
            results = {label: _destroy_quietly(session, label) for label in labels}
            orphans = [
                label
                for label in session.credential_labels() - labels
                if (expiry := label_expiry(label)) is not None and expiry <= now - SIGNING_GRACE
            ]
            return results, sum(_destroy_quietly(session, o) is not None for o in orphans)

        results, orphans = await self._hsm.run(hop)
        if orphans:
            log.warning("csc_orphan_keys_destroyed", count=orphans)
        ended = 0
        for credential in expired:
            destruction = results.get(credential.key_label)
            if destruction is None:
                continue  # not confirmed gone: the next sweep tries again
            if credential.state == "active":
                reason, failure = "expired-unused", FAILURE_EXPIRED_UNUSED
            else:
                reason, failure = "failed", FAILURE_INTERRUPTED
            done = await self._end(
                credential,
                (credential.state,),
                reason,
                failure,
                _Failed(SignerError(), destruction),
            )
            ended += done is not None
        return ended

    async def run_sweeper(self) -> None:
        """Sweep every ``sweep_interval_seconds`` until cancelled; errors are logged."""
        while True:
            await asyncio.sleep(self.settings.sweep_interval_seconds)
            await self.sweep_logged()

    async def sweep_logged(self) -> None:
        try:
            ended = await self.sweep()
            pruned = await self._store.prune(self._clock() - KEEP_ENDED)
        except SignerError as exc:
            log.warning("csc_sweep_failed", error=str(exc))
            return
        if ended:
            log.info("csc_credentials_expired", count=ended)
        if pruned:
            log.info("csc_credentials_pruned", count=pruned)

    # -- records and refusals --------------------------------------------------------------------

    async def _end(
        self,
        credential: Credential,
        from_states: Sequence[str],
        reason: str,
        failure: str,
        outcome: _Failed,
    ) -> int | None:
        at = self._clock()
        destruction = outcome.destruction.as_dict() if outcome.destruction else None
        entry = issuance_entry(
            credential.record,
            completed_at=max(at, credential.record.created_at),
            destruction=destruction,
            signed_count=0,
            failure=failure,
        ).encode(self._privacy_key)
        try:
            idx = await self._store.end(
                credential.id,
                from_states=from_states,
                end_reason=reason,
                failure=failure,
                destruction=destruction,
                at=max(at, credential.record.created_at),
                entry=entry,
            )
        except DatabaseUnavailable:
            log.error("csc_end_not_recorded", serial=credential.record.serial, reason=reason)
            return None
        if idx is not None:
            log.info("csc_credential_ended", serial=credential.record.serial, reason=reason)
        return idx

    async def _refuse_signing(
        self,
        principal: Principal | None,
        credential: Credential | None,
        hash_oid: str,
        digests: tuple[bytes, ...],
        request_id: str,
        exc: SignerError,
    ) -> None:
        subject_type: str
        if principal is not None:
            requester, subject_type = _requester(principal), principal.subject_type
        elif credential is not None:  # a credential token: its owner asked
            r = credential.record
            requester = Requester(r.issuer_name, r.token_issuer, r.token_subject, r.client_id)
            subject_type = r.subject_type
        else:
            return  # nobody identified (unknown token): nothing to attribute
        await self._refuse(requester, subject_type, hash_oid, request_id, exc, digests)

    async def _refuse(
        self,
        requester: Requester,
        subject_type: str,
        hash_oid: str | None,
        request_id: str,
        exc: SignerError | InvalidToken,
        digests: tuple[bytes, ...] = (),
    ) -> None:
        """Append a refusal entry (who asked, what, why: the error's slug, or ``token.<reason>``
        for a token refused as in ``signer.http.kit.refused``); a refusal stands even when the
        log is unreachable, so that failure is only logged."""
        reason = f"token.{exc.reason}" if isinstance(exc, InvalidToken) else exc.slug
        await self._refusals.attributed(
            requester,
            RequestSummary(None, subject_type, HASH_NAMES.get(hash_oid or "", hash_oid), digests),
            request_id=request_id,
            reason=reason,
            indexed=False,
        )


def _new_credential(credential_id: str, label: str, record: IssuedRecord) -> NewCredential:
    return NewCredential(
        id=credential_id,
        token_issuer=record.token_issuer,
        token_subject=record.token_subject,
        key_label=label,
        created_at=record.created_at,
        expires_at=record.not_after,
    )


def _requester(principal: Principal) -> Requester:
    return Requester(
        principal.issuer_name, principal.issuer, principal.subject, principal.client_id
    )


def _owns(principal: Principal, credential: Credential) -> bool:
    return (principal.issuer, principal.subject) == (
        credential.token_issuer,
        credential.token_subject,
    )


def _check_usable(credential: Credential, now: datetime) -> None:
    if credential.expires_at <= now:
        raise CredentialExpired(f"credential {credential.id} expired {credential.expires_at}")
    if credential.state != "active":
        raise CredentialUsed(f"credential {credential.id} is {credential.state}")


def _binding_check(
    principal: Principal | None,
    credential_id: str,
    hash_oid: str,
    digests: tuple[bytes, ...],
    now: datetime,
    seen: list[Credential],
) -> AuthorizationCheck:
    """The checks run under the row locks before an authorization is consumed (CEN EN 419
    241-1 sole control; STANDARDS.md §6): the secret is for this credential and unused and
    unexpired; the presenter is its owner with the same authentication (acr, auth_time); the
    credential is active and unexpired; the hash algorithm and the exact digests (as a
    multiset, at most ``count``) are the authorized ones."""

    def check(auth: StoredAuthorization, credential: Credential) -> None:
        seen.append(credential)
        b = auth.binding
        if principal is None and b.credential_id != credential_id:
            raise CredentialTokenMismatch(f"token for {b.credential_id}, not {credential_id}")
        if principal is not None:
            if b.credential_id != credential_id or not _owns(principal, credential):
                raise InvalidSad(f"SAD for {b.credential_id}, not {credential_id}")
            if (b.token_issuer, b.token_subject) != (principal.issuer, principal.subject):
                raise InvalidSad("SAD of another identity")
            if (b.acr, b.auth_time) != (principal.acr, principal.auth_time):
                raise AuthenticationChanged("acr/auth_time differ from the authorization's")
        if (b.token_issuer, b.token_subject) != (credential.token_issuer, credential.token_subject):
            raise InvalidSad("authorization owner is not the credential's")
        if auth.consumed_at is not None:
            raise SadAlreadyUsed(f"consumed at {auth.consumed_at}")
        if b.expires_at <= now:
            raise SadExpired(f"expired at {b.expires_at}")
        _check_usable(credential, now)
        if b.hash_algorithm != hash_oid:
            raise HashesNotAuthorized(f"hash algorithm {hash_oid}, authorized {b.hash_algorithm}")
        if len(digests) > b.count:
            raise TooManySignatures(f"{len(digests)} hashes, {b.count} authorized")
        if Counter(digests) != Counter(b.digests):
            raise HashesNotAuthorized("hashes differ from the authorized ones")

    return check


def _sign_and_destroy(
    session: HsmSession, credential: Credential, digests: tuple[bytes, ...]
) -> _Signed | _Failed:
    """On the worker thread: find the key by label, check it is the certificate's, sign every
    digest, destroy both halves and confirm they are gone. A failure still destroys."""
    label = credential.key_label
    try:
        key = session.credential_key(label)
        cert = x509.load_der_x509_certificate(credential.record.certificate_der)
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise HsmUnavailable(f"key {label!r} does not match certificate {cert.serial_number}")
        signatures = tuple(key.sign_digest(d) for d in digests)
    except Exception as exc:
        return _Failed(exc, _destroy_quietly(session, label))
    try:
        destruction = session.destroy_labelled(label)
    except Exception as exc:
        return _Failed(exc, None)
    return _Signed(signatures, destruction)


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _destroy_quietly(session: HsmSession, label: str) -> Destruction | None:
    try:
        return session.destroy_labelled(label)
    except (KeyNotDestroyed, HsmUnavailable):
        log.exception("csc_key_destroy_failed", label=label)
        return None


def _slug(exc: Exception) -> str:
    return exc.slug if isinstance(exc, SignerError) else "internal-error"
