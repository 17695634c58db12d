"""`qes audit watch` lines show what a refusal before authentication carries."""

from __future__ import annotations

from signer.cli.watch import entry_line


def test_a_suppressed_aggregate_and_a_claimed_issuer_are_shown() -> None:
    item = {
        "index": 7,
        "time": "2026-11-21T21:00:00+00:00",
        "kind": "refusal",
        "outcome": "refused",
        "reason": "refusals-suppressed",
        "claimed_issuer": None,
        "suppressed": 995,
    }
    assert entry_line(item).endswith("reason=refusals-suppressed  suppressed=995")
    one = {
        **item,
        "reason": "token.bad_signature",
        "claimed_issuer": "https://idp",
        "suppressed": 0,
    }
    line = entry_line(one)
    assert "claimed_issuer=https://idp(unverified)" in line and "suppressed" not in line
