"""Approval entries (kind 0x03): the docstring's encoding, re-implemented with the standard
library as an external auditor would (helpers of ``test_logentry``), and nothing personal in
clear."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ca.logentry import (
    ApprovalEntry,
    EntryKind,
    LogEntryError,
    Requester,
    RequestSummary,
    digests_sha256,
    entry_fields,
)
from tests.unit.ca.test_logentry import (
    DIGESTS,
    ISSUED,
    KEY,
    SECRET,
    lp,
    spec_commit,
    spec_digests,
    spec_field,
    spec_time,
)

APPROVER = Requester(
    issuer_name="corporate-idp",
    token_issuer="https://idp.example.com/realms/staff",
    token_subject="approver-7f3e",
    email="dana.approver@example.com",
)
REQUESTER = Requester(
    issuer_name="workloads",
    token_issuer="https://idp.example.com/realms/workloads",
    token_subject="payroll-batch-job",
)


def approval(**changes: Any) -> ApprovalEntry:
    entry = ApprovalEntry(
        record_id="5e1b7c2a-0d4f-4a8b-9c3e-6f7a8b9c0d1e",
        request_id="req-0003",
        decided_at=ISSUED,
        decision="approved",
        approval_request="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        approver=APPROVER,
        requester=REQUESTER,
        approver_group="seal-approvers",
        approvals_required=2,
        request=RequestSummary(None, None, "sha256", DIGESTS),
    )
    return replace(entry, **changes)


def spec_approval(e: ApprovalEntry) -> bytes:
    rid = e.record_id
    email = e.approver.email
    fields = [
        spec_field("privacy_key_id", b"2026-01"),
        spec_field("record_id", rid.encode()),
        spec_field("request_id", e.request_id.encode()),
        spec_field("decided_at", spec_time(e.decided_at)),
        spec_field("decision", e.decision.encode()),
        spec_field("approval_request", e.approval_request.encode()),
        spec_field("issuer_name", b"corporate-idp"),
        spec_field("token_issuer", b"https://idp.example.com/realms/staff"),
        spec_field("token_subject", spec_commit("token_subject", rid, b"approver-7f3e")),
        spec_field("email", b"" if email is None else spec_commit("email", rid, email.encode())),
        spec_field("client_id", b""),
        spec_field("requester_issuer", b"https://idp.example.com/realms/workloads"),
        spec_field(
            "requester_subject", spec_commit("requester_subject", rid, b"payroll-batch-job")
        ),
        spec_field("approver_group", b"seal-approvers"),
        spec_field("approvals_required", (2).to_bytes(8, "big")),
        spec_field("hash_algorithm", b"sha256"),
        *spec_digests(e.request.digests),
    ]
    return b"qes-log-entry\x02\x03" + b"".join(fields)


@pytest.mark.parametrize("decision", ["approved", "denied"])
def test_approval_entry_follows_the_spec(decision: str) -> None:
    entry = approval(decision=decision)
    assert entry.encode(KEY) == spec_approval(entry)
    entry = approval(decision=decision, approver=replace(APPROVER, email=None))
    assert entry.encode(KEY) == spec_approval(entry)


def test_approval_entry_fields_and_digest_commitment() -> None:
    kind, fields = entry_fields(approval().encode(KEY))
    assert kind is EntryKind.APPROVAL
    values = dict(fields)
    assert len(fields) == 18 and values["decision"] == b"approved"
    # The commitment an approver is shown is the entry's digests_sha256: SHA-256 over the
    # length-prefixed digests, in request order.
    import hashlib

    shown = hashlib.sha256(b"".join(lp(d) for d in DIGESTS)).digest()
    assert values["digests_sha256"] == shown == digests_sha256(DIGESTS)


def test_approval_entry_reveals_no_personal_data() -> None:
    encoded = approval().encode(KEY)
    for secret in ("approver-7f3e", "dana.approver", "payroll-batch-job"):
        assert secret.encode() not in encoded
    assert SECRET not in encoded


@pytest.mark.parametrize(
    "changes",
    [
        {"decision": "maybe"},
        {"approvals_required": 0},
        {"approver_group": ""},
        {"approval_request": ""},
        {"approver": Requester("corporate-idp", None, "x")},
        {"requester": Requester(None, "https://idp.example.com", None)},
        {"request": RequestSummary(None, None, "sha256", ())},
        {"request": RequestSummary(None, None, None, DIGESTS)},
        {"decided_at": ISSUED.replace(tzinfo=None)},
    ],
)
def test_bad_approval_entries_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(LogEntryError):
        approval(**changes)
