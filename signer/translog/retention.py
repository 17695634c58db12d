"""Retention and data-subject requests for the signing records (issue 5).

- :func:`purge` (``qes audit purge --before DATE``): records are kept ``[audit]
  retention_days`` (default 7 years); older ones may have their personal payload erased (GDPR
  Art. 17, Art. 5(1)(e)). The log entry and a tombstone row stay, so the Merkle tree, every
  checkpoint and every proof are unchanged and ``qes audit verify`` still verifies (it checks a
  tombstone's remaining fields against its entry and reports it as purged). A date inside the
  retention period is refused, whatever else is asked.
- Approval requests (issue 7) that ended, their decisions and admin actions (the kill switch)
  are purged in the same transaction and verified the same way (:mod:`signer.translog.audit`).
- :func:`find_subject` (``qes audit subject``, GDPR Art. 15 right of access): a person's
  approval requests, decisions and admin actions through their rows' (subject, issuer) indexes,
  and issuance and refusal entries through the subject index (``log_entries.subject_key``, a
  keyed hash of token issuer and subject: :func:`signer.translog.log.subject_index`), with their
  records; records still 'issued' (no entry yet) through the ``token_subject`` index. Only
  refusal entries appended before the subject index existed are found by recomputing their
  per-entry commitments (``ca.logentry``): a fixed range that never grows
  (:mod:`signer.translog.backfill`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ca.logentry import PrivacyKey
from signer.errors import SignerError
from signer.storage.policy import LoggedAction, Target
from signer.storage.retention import (
    Purged,
    RetentionStore,
    SubjectAdminAction,
    SubjectApprovalRequest,
    SubjectDecision,
    SubjectRecord,
)
from signer.translog.admin import AdminLog
from signer.translog.log import EntryFilter, describe_entry, subject_index

REFUSAL_BATCH = 5000


class RetentionRefused(SignerError):
    """A purge would erase records younger than the configured retention."""


def earliest_allowed(now: datetime, retention_days: int) -> datetime:
    """The latest ``--before`` a purge accepts: now minus the retention period."""
    return now - timedelta(days=retention_days)


async def purge(
    store: RetentionStore,
    before: datetime,
    *,
    now: datetime,
    retention_days: int,
    audit: AdminLog | None = None,
) -> Purged:
    """Tombstone every record, ended approval request (with its decisions) and admin action
    from before ``before`` and delete the web-signing requests that ended before it; refuses a
    date within retention. With ``audit`` (an operator's ``qes audit purge``) the purge is an
    admin-action entry (issue 15 item 5; EN 319 401 §7.10) naming the cut-off and the counts,
    written in the purge's transaction."""
    limit = earliest_allowed(now, retention_days)
    if before > limit:
        raise RetentionRefused(
            f"--before {before.date().isoformat()} is inside the {retention_days}-day retention"
            f" period: records created after {limit.date().isoformat()} must be kept"
        )
    if audit is None:
        return await store.purge(before, now)

    def act(done: Purged) -> LoggedAction:
        counts = (
            f"records={done.records} approval_requests={done.approval_requests}"
            f" approval_decisions={done.approval_decisions} admin_actions={done.admin_actions}"
            f" web_requests={done.web_requests}"
        )
        return audit.act("purge", Target("all"), detail=f"before={before.isoformat()} {counts}")

    return await store.purge(before, now, act)


@dataclass(frozen=True)
class SubjectReport:
    subject: str
    records: tuple[SubjectRecord, ...]
    refusals: tuple[dict[str, Any], ...]
    approval_requests: tuple[SubjectApprovalRequest, ...] = ()
    approval_decisions: tuple[SubjectDecision, ...] = ()
    admin_actions: tuple[SubjectAdminAction, ...] = ()


async def find_subject(
    store: RetentionStore,
    key: PrivacyKey,
    subject: str,
    issuer: str | None,
    issuers: Sequence[str] = (),
) -> SubjectReport:
    """Everything the service holds about ``subject`` at ``issuer``, or, when no issuer is
    given, at any of ``issuers`` (the configured ones: the index is keyed by issuer too).
    Approval requests, decisions and admin actions (as target or actor) come from their rows'
    (subject, issuer) indexes; with no issuer, at any issuer."""
    if not subject:
        raise SignerError("--subject must not be empty")
    keys = [subject_index(key, iss, subject) for iss in ([issuer] if issuer else issuers)]
    records = await store.subject_records(keys, subject, issuer)
    wanted = EntryFilter(subject=subject, issuer=issuer)
    found = await store.subject_refusals(keys)
    refusals = [d for e in found if (d := describe_entry(e, key, wanted))]
    start = 0
    while True:  # refusals from before the subject index: recompute their commitments
        batch = await store.legacy_refusals(start, REFUSAL_BATCH)
        refusals += [d for e in batch if (d := describe_entry(e, key, wanted))]
        if len(batch) < REFUSAL_BATCH:
            break
        start = batch[-1].idx + 1
    refusals.sort(key=lambda d: int(d["index"]))
    requests, decisions, actions = await store.subject_approvals(subject, issuer)
    return SubjectReport(
        subject, tuple(records), tuple(refusals), tuple(requests), tuple(decisions), tuple(actions)
    )
