"""Backfills of what older log rows lack (issue 5), run at startup and by ``qes audit subject``.

- **Subject index**: issuance entries appended before ``log_entries.subject_key`` existed get
  it from their record's (token issuer, subject) (:func:`signer.translog.log.subject_index`).
  Refusal entries of that time hold their identifiers only as per-entry commitments, so they
  cannot be indexed; a data-subject lookup recomputes the commitments over that fixed range
  (``log_backfill.legacy_refusals_below``) only.
- **E-mail**: records created before the ``email`` column keep their address only inside the
  certificate (subjectAltName rfc822Name, RFC 5280 §4.2.1.6, the only place the CA puts it:
  ``ca.extensions``). It is read from there, so an e-mail search finds those records too.
  Until that has run, the audit UI says so; a purged record has no certificate left and no
  e-mail, by design.

Idempotent and batch by batch; several replicas may run it at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from cryptography import x509

from ca.logentry import PrivacyKey
from signer.errors import SignerError
from signer.storage.backfill import BackfillStore
from signer.translog.log import subject_index

log = structlog.get_logger(__name__)
BATCH = 2000
_START = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))


@dataclass(frozen=True)
class BackfillReport:
    subject_keys: int
    emails: int


def certificate_email(der: bytes) -> str | None:
    """The first rfc822Name of the certificate's subjectAltName, if any."""
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    emails = san.get_values_for_type(x509.RFC822Name)
    return emails[0] if emails else None


async def _subject_keys(store: BackfillStore, key: PrivacyKey, below: int) -> int:
    done, after = 0, -1
    while True:
        batch = await store.pending_subjects(after, below, BATCH)
        if not batch:
            return done
        keys = [subject_index(key, p.token_issuer, p.token_subject) for p in batch]
        await store.set_subject_keys([p.idx for p in batch], keys)
        done += len(batch)
        after = batch[-1].idx


async def _emails(store: BackfillStore, before: datetime) -> int:
    done, after = 0, _START
    while True:
        batch = await store.pending_emails(before, after, BATCH)
        if not batch:
            return done
        found = [(p.id, e) for p in batch if (e := certificate_email(p.certificate_der))]
        if found:
            await store.set_emails([i for i, _ in found], [e for _, e in found])
        done += len(found)
        after = (batch[-1].created_at, batch[-1].id)


async def backfill(store: BackfillStore, key: PrivacyKey) -> BackfillReport:
    """Run whatever backfill is not done yet; returns how many rows each one filled."""
    state = await store.state()
    keys = emails = 0
    if not state.subject_keys_done:
        keys = await _subject_keys(store, key, state.legacy_refusals_below)
        await store.mark_done(subject_keys=True)
    if not state.emails_done:
        emails = await _emails(store, state.emails_before)
        await store.mark_done(emails=True)
    if keys or emails:
        log.info("log_backfilled", subject_keys=keys, emails=emails)
    return BackfillReport(keys, emails)


async def backfill_quietly(store: BackfillStore, key: PrivacyKey) -> None:
    """:func:`backfill` as a startup task: a failure is logged and retried at the next start."""
    try:
        await backfill(store, key)
    except SignerError as exc:
        log.warning("log_backfill_failed", error=str(exc))
