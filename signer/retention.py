"""Retention and data-subject requests for the signing records (issue 5).

- :func:`purge` (``qes audit purge --before DATE``): records are kept ``[audit]
  retention_days`` (default 7 years); older ones may have their personal payload erased (GDPR
  Art. 17, Art. 5(1)(e)). The log entry and a tombstone row stay, so the Merkle tree, every
  checkpoint and every proof are unchanged and ``qes audit verify`` still verifies (it checks a
  tombstone's remaining fields against its entry and reports it as purged). A date inside the
  retention period is refused, whatever else is asked.
- :func:`find_subject` (``qes audit subject``, GDPR Art. 15 right of access): a person's records
  through the ``token_subject`` index, with their log entry indexes through the record-id
  index; and the person's refusal entries, which hold identifiers only as keyed commitments
  bound to each entry's random record id (``ca.logentry``), so they are found by recomputing
  the commitment per refusal entry (a scan of refusal entries only, batch by batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ca.logentry import PrivacyKey
from signer.errors import SignerError
from signer.storage.retention import RetentionStore, SubjectRecord
from signer.translog import EntryFilter, describe_entry

REFUSAL_BATCH = 5000


class RetentionRefused(SignerError):
    """A purge would erase records younger than the configured retention."""


def earliest_allowed(now: datetime, retention_days: int) -> datetime:
    """The latest ``--before`` a purge accepts: now minus the retention period."""
    return now - timedelta(days=retention_days)


async def purge(
    store: RetentionStore, before: datetime, *, now: datetime, retention_days: int
) -> int:
    """Tombstone every record created before ``before``; refuses a date within retention."""
    limit = earliest_allowed(now, retention_days)
    if before > limit:
        raise RetentionRefused(
            f"--before {before.date().isoformat()} is inside the {retention_days}-day retention"
            f" period: records created after {limit.date().isoformat()} must be kept"
        )
    return await store.purge(before)


@dataclass(frozen=True)
class SubjectReport:
    subject: str
    records: tuple[SubjectRecord, ...]
    refusals: tuple[dict[str, Any], ...]


async def find_subject(
    store: RetentionStore, key: PrivacyKey, subject: str, issuer: str | None
) -> SubjectReport:
    """Everything the service holds about ``subject`` (at ``issuer`` when given)."""
    records = await store.subject_records(subject, issuer)
    wanted = EntryFilter(subject=subject, issuer=issuer)
    refusals: list[dict[str, Any]] = []
    start = 0
    while True:
        batch = await store.refusals(start, REFUSAL_BATCH)
        refusals += [d for e in batch if (d := describe_entry(e, key, wanted))]
        if len(batch) < REFUSAL_BATCH:
            break
        start = batch[-1].idx + 1
    return SubjectReport(subject, tuple(records), tuple(refusals))
