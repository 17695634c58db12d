"""The transparency log as a service (issue 5): entries, the integrator task, the log key.

- :func:`approval_entry` is the entry of an approver's decision (issue 7), rebuilt by
  ``qes audit verify`` from ``approval_decisions`` and ``approval_requests`` rows.
- :func:`issuance_entry` turns what the pipeline records into the
  canonical entries of :mod:`ca.logentry`. ``qes audit verify`` rebuilds issuance entries from
  ``signing_records`` rows with the same function, so an altered record no longer matches the
  entry it is committed by.
- :class:`LogPublisher` integrates sequenced entries and publishes signed checkpoints (C2SP
  tlog-checkpoint in a C2SP signed note, ECDSA P-256 type 0x02 with the HSM log key) every
  ``[log] checkpoint_interval_seconds`` and on demand. Every process runs one; the database
  lets one integrate at a time.
- :func:`load_privacy_key` reads the HMAC key of the entries' keyed commitments.
- :func:`describe_entry` turns a logged entry into what ``qes audit watch`` shows, matching
  refusals against an identity through the same keyed commitments (``ca.logentry``).
- :func:`subject_index` is the deterministic keyed hash of (token issuer, subject) stored
  beside each entry (``log_entries.subject_key``), so a data-subject request is an index
  lookup; :func:`source_index` is the keyed hash that groups refusals by client address for
  the rate limit (:mod:`signer.policy.refusals`). Both use keys derived from the privacy key (RFC
  5869 HKDF, one ``info`` label each), distinct from the per-entry commitment key.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ca.checkpoint import Checkpoint, NoteSigner, NoteVerifier, sign_checkpoint, sign_note
from ca.errors import CaError
from ca.logentry import (
    AdminActionEntry,
    ApprovalEntry,
    EntryKind,
    IssuanceEntry,
    LogEntryError,
    PrivacyKey,
    Requester,
    RequestSummary,
    decode_time,
    entry_fields,
)
from signer.errors import ConfigError
from signer.keys import Hsm, HsmSession
from signer.periodic import every
from signer.settings.config import LogSettings, Settings
from signer.storage.log import LoggedEntry, LogStore, StoredCheckpoint
from signer.storage.policy import AdminAction
from signer.storage.records import IssuedRecord
from signer.translog.anchor import CheckpointAnchor

log = structlog.get_logger(__name__)
PRIVACY_KEY_FILE = "log-privacy.key"


def issuance_entry(
    record: IssuedRecord,
    *,
    completed_at: datetime,
    destruction: Mapping[str, bool] | None,
    signed_count: int,
    failure: str | None,
    certificate: x509.Certificate | None = None,
    time_stamps: tuple[bytes, ...] = (),
) -> IssuanceEntry:
    """The log entry of a finished record (``ca.logentry`` issuance, kind 0x01).

    Everything comes from the record's columns and its stored time-stamp tokens
    (``certificate`` only saves re-parsing the DER the record holds), so an auditor
    recomputes it from the database rows.
    """
    return IssuanceEntry(
        record_id=str(record.id),
        request_id=record.request_id,
        issued_at=record.created_at,
        completed_at=completed_at,
        requester=Requester(
            issuer_name=record.issuer_name,
            token_issuer=record.token_issuer,
            token_subject=record.token_subject,
            client_id=record.client_id,
        ),
        request=RequestSummary(
            record.profile, record.subject_type, record.hash_algorithm, record.digests
        ),
        certificate=certificate or x509.load_der_x509_certificate(record.certificate_der),
        key_evidence=record.key_evidence,
        destruction=destruction,
        signed_count=signed_count,
        failure=failure,
        signature_format=record.signature_format,
        time_stamps=time_stamps,
    )


SUBJECT_INDEX_INFO = b"qes-log-subject-index/1"
SOURCE_INDEX_INFO = b"qes-log-refusal-source/1"


@functools.lru_cache(maxsize=8)
def _derived(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA-256 (RFC 5869) of the privacy key with ``info``: one key per purpose."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _keyed(key: PrivacyKey, info: bytes, *parts: str) -> bytes:
    mac = hmac.HMAC(_derived(key.secret, info), hashes.SHA256())
    for part in parts:
        raw = part.encode("utf-8")
        mac.update(len(raw).to_bytes(4, "big") + raw)
    return mac.finalize()


def subject_index(key: PrivacyKey, issuer: str, subject: str) -> bytes:
    """``HMAC-SHA-256(HKDF(privacy key, info="qes-log-subject-index/1"), lp(iss) || lp(sub))``.

    The same person (``sub`` at ``iss``) always gets the same value, so it can be indexed; it
    reveals nothing without the privacy key, and it is kept beside the entry, not in it (the
    leaf stays unlinkable, and a purge erases the value without touching the tree)."""
    return _keyed(key, SUBJECT_INDEX_INFO, issuer, subject)


def source_index(key: PrivacyKey, address: str) -> bytes:
    """The keyed hash that groups refusals by client address (``log_refusal_windows``)."""
    return _keyed(key, SOURCE_INDEX_INFO, address)


@dataclass(frozen=True)
class RequestFields:
    """What an approval entry takes from the request (also rebuilt by ``qes audit verify``)."""

    id: str
    token_issuer: str
    token_subject: str
    approver_group: str
    approvals_required: int
    hash_algorithm: str
    digests: tuple[bytes, ...]


@dataclass(frozen=True)
class DecisionFields:
    """What an approval entry takes from the decision (also rebuilt by ``qes audit verify``)."""

    id: str
    request_id: str
    decided_at: datetime
    decision: str
    issuer_name: str
    token_issuer: str
    token_subject: str
    email: str | None


def approval_entry(req: RequestFields, d: DecisionFields) -> ApprovalEntry:
    """The log entry of one decision (``ca.logentry`` kind 0x03)."""
    return ApprovalEntry(
        record_id=d.id,
        request_id=d.request_id,
        decided_at=d.decided_at,
        decision=d.decision,
        approval_request=req.id,
        approver=Requester(d.issuer_name, d.token_issuer, d.token_subject, email=d.email),
        requester=Requester(None, req.token_issuer, req.token_subject),
        approver_group=req.approver_group,
        approvals_required=req.approvals_required,
        request=RequestSummary(None, None, req.hash_algorithm, req.digests),
    )


@dataclass(frozen=True)
class EntryFilter:
    """Whose entries to show: token subject (with its issuer ``iss``) and RP client id."""

    subject: str | None = None
    issuer: str | None = None
    client_id: str | None = None


def _committed(key: PrivacyKey, record_id: str, name: str, value: str, field: bytes) -> bool:
    return bool(field) and key.commit(record_id, name, value.encode()) == field


def _matches(
    item: LoggedEntry, fields: Mapping[str, bytes], key: PrivacyKey, flt: EntryFilter
) -> bool:
    """Issuance: compare the record's clear columns. Refusal: recompute the keyed commitments
    of the asked identifiers for this entry's record id (``ca.logentry`` ``commit``)."""
    if item.kind == "issuance":
        wanted = (
            (flt.subject, item.token_subject),
            (flt.issuer, item.token_issuer),
            (flt.client_id, item.client_id),
        )
        return all(want is None or want == have for want, have in wanted)
    record_id = fields["record_id"].decode()
    if flt.issuer is not None and fields["token_issuer"].decode() != flt.issuer:
        return False
    for name, want in (("token_subject", flt.subject), ("client_id", flt.client_id)):
        if want is not None and not _committed(key, record_id, name, want, fields[name]):
            return False
    return True


def describe_entry(item: LoggedEntry, key: PrivacyKey, flt: EntryFilter) -> dict[str, Any] | None:
    """The decoded fields of one entry for auditors (``qes audit watch``), or None when it
    does not match ``flt``.

    Issuance entries show their record's clear identifiers. A refusal holds identifiers only
    as keyed commitments (``ca.logentry``), so its ``subject``/``client_id`` are shown only
    when the filter asked for them and the commitment matched; otherwise they are None. An
    entry whose bytes do not parse is shown to every watcher as ``malformed``.
    """
    try:
        kind, raw = entry_fields(item.entry)
    except LogEntryError:  # never hidden: shown to every watcher (`qes audit verify` says why)
        return {"index": item.idx, "kind": item.kind, "outcome": "malformed", "time": None}
    fields = dict(raw)
    if item.purged and (flt.subject or flt.client_id):
        return None  # erased identifiers (GDPR Art. 17) match nobody
    if not _matches(item, fields, key, flt):
        return None
    if kind is EntryKind.ADMIN:
        return _describe_admin(item, fields, flt)
    return _describe_signing(kind, item, fields, flt)


def _describe_signing(
    kind: EntryKind, item: LoggedEntry, fields: Mapping[str, bytes], flt: EntryFilter
) -> dict[str, Any]:
    """An issuance, approval or refusal entry's fields (see :func:`describe_entry`)."""
    text = {
        n: fields.get(n, b"").decode() or None for n in ("issuer_name", "token_issuer", "profile")
    }
    common = {
        "index": item.idx,
        "kind": item.kind,
        "issuer": text["token_issuer"],
        "issuer_name": text["issuer_name"],
        "profile": text["profile"],
        "purged": item.purged,
        "signature_format": fields.get("signature_format", b"").decode() or None,  # version 2
    }
    if kind is EntryKind.ISSUANCE:
        return {
            **common,
            "outcome": fields["outcome"].decode(),
            "time": decode_time(fields["completed_at"]).isoformat(),
            "serial": fields["certificate_serial"].hex(),  # whole bytes, as serial_hex
            "subject": None if item.purged else item.token_subject,
            "client_id": None if item.purged else item.client_id,
            "reason": fields["failure"].decode() or None,
        }
    if kind is EntryKind.APPROVAL:  # the identity is the approver's (ca.logentry kind 0x03)
        return {
            **common,
            "outcome": fields["decision"].decode(),
            "time": decode_time(fields["decided_at"]).isoformat(),
            "serial": None,
            "subject": flt.subject,
            "client_id": flt.client_id,
            "reason": None,
            "approval_request": fields["approval_request"].decode(),
        }
    return {
        **common,
        "outcome": "refused",
        "time": decode_time(fields["refused_at"]).isoformat(),
        "serial": None,
        "subject": flt.subject,
        "client_id": flt.client_id,
        "reason": fields["reason"].decode(),
        # Version 2: the iss an unverified token claimed (never who asked), and how many
        # refusals an aggregate entry stands for (signer.policy.refusals).
        "claimed_issuer": fields.get("claimed_issuer", b"").decode() or None,
        "suppressed": int.from_bytes(fields.get("suppressed", b""), "big"),
    }


def _describe_admin(
    item: LoggedEntry, fields: Mapping[str, bytes], flt: EntryFilter
) -> dict[str, Any]:
    """An administrative action: ``outcome`` is the action, ``reason`` its scope (the
    free-text reason is only committed); from version 3 its ``detail`` and certificate."""
    serial = fields.get("certificate_serial", b"")
    return {
        "index": item.idx,
        "kind": item.kind,
        "issuer": fields["token_issuer"].decode() or None,
        "issuer_name": None,
        "profile": None,
        "purged": item.purged,
        "signature_format": None,
        "outcome": fields["action"].decode(),
        "time": decode_time(fields["acted_at"]).isoformat(),
        "serial": serial.hex() or None,
        "detail": fields.get("detail", b"").decode() or None,
        "subject": flt.subject,
        "client_id": flt.client_id,
        "reason": fields["scope"].decode(),
    }


def privacy_key_path(settings: Settings) -> Path:
    return settings.data_dir / PRIVACY_KEY_FILE


def load_privacy_key(settings: Settings) -> PrivacyKey:
    """The configured privacy key (hex, ≥ 32 bytes), else ``<data_dir>/log-privacy.key``."""
    secret = settings.log.privacy_key
    if secret is None:
        path = privacy_key_path(settings)
        try:
            text = path.read_text(encoding="ascii").strip()
        except OSError as exc:
            raise ConfigError(
                f"log.privacy_key: not configured and {path} is unreadable: run `qes init`"
            ) from exc
    else:
        text = secret.reveal().strip()
    try:
        return PrivacyKey(settings.log.privacy_key_id, bytes.fromhex(text))
    except (ValueError, CaError) as exc:
        raise ConfigError("log.privacy_key: must be at least 32 bytes in hex") from exc


def ensure_dev_privacy_key(settings: Settings) -> bool:
    """`qes init`: create ``<data_dir>/log-privacy.key`` (0600) when no key is configured.

    Returns True when a file was created. A production deployment configures
    ``privacy_key_env`` / ``privacy_key_file`` from its secret store instead.
    """
    if settings.log.privacy_key is not None:
        return False
    path = privacy_key_path(settings)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x", encoding="ascii") as f:
        path.chmod(0o600)
        f.write(secrets.token_hex(32) + "\n")
    return True


def log_verifier(session: HsmSession, settings: LogSettings) -> NoteVerifier:
    """The note verifier of the HSM log key (call on the HSM worker thread)."""
    return NoteVerifier(settings.origin, session.token_key(settings.key_label).public_key())


def make_log_key(session: HsmSession, settings: LogSettings, *, force: bool) -> bool:
    """`qes init`: create the P-256 log key as a token object; True when created."""
    if session.has_token_key(settings.key_label) and not force:
        return False
    session.create_token_key(settings.key_label, "P-256", replace=force)
    return True


@dataclass(frozen=True, kw_only=True, eq=False)
class LogPublisher:
    """Integrates and publishes checkpoints, periodically (:meth:`run`) and on demand."""

    store: LogStore
    hsm: Hsm
    settings: LogSettings
    clock: Callable[[], datetime]
    anchor: CheckpointAnchor | None = None

    async def _sign(self, checkpoint: Checkpoint) -> str:
        label, name = self.settings.key_label, self.settings.origin
        return await self.hsm.run(
            lambda s: sign_checkpoint(checkpoint, NoteSigner(name, s.token_key(label)))
        )

    async def sign_note(self, text: str) -> str:
        """``text`` as a C2SP signed note of the log key (key name = origin): export
        manifests (:mod:`signer.translog.manifest`), whose first line keeps them apart from
        checkpoints."""
        label, name = self.settings.key_label, self.settings.origin
        return await self.hsm.run(
            lambda s: sign_note(text, (NoteSigner(name, s.token_key(label)),)).to_text()
        )

    async def publish(self, *, force: bool = False) -> StoredCheckpoint | None:
        """Integrate what is sequenced; sign and store a checkpoint when the tree grew. With an
        anchor, the log must extend the newest published checkpoint first (else
        LogBehindCheckpoint, and signing halts), and the new one becomes the anchor."""
        if self.anchor is not None:
            await self.anchor.require()
        published = await self.store.integrate(self._sign, self.clock(), force=force)
        if published is not None:
            log.info("checkpoint_published", size=published.size)
            if self.anchor is not None:
                self.anchor.advance(
                    self.settings.origin, published.size, published.root, published.note
                )
        return published

    async def run(self) -> None:
        """Every ``checkpoint_interval_seconds`` until cancelled; errors are logged, not fatal."""
        await every(
            self.settings.checkpoint_interval_seconds, self.publish, failed="checkpoint_failed"
        )


def admin_entry(action: AdminAction) -> AdminActionEntry:
    """The log entry of an admin action (``ca.logentry`` kind 0x04), from its row's values;
    ``qes audit verify`` encodes it in the logged entry's version (2 or 3)."""
    t = action.target
    return AdminActionEntry(
        record_id=str(action.id),
        request_id=action.request_id,
        acted_at=action.acted_at,
        action=action.action,
        scope=t.scope,
        actor_issuer=action.actor_issuer,
        actor_subject=action.actor_subject,
        token_issuer=t.token_issuer,
        token_subject=t.token_subject,
        client_id=t.client_id,
        reason=action.reason,
        detail=action.detail,
        certificate_serial=t.certificate_serial,
        target_sha256=t.target_sha256,
    )
