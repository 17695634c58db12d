"""A temporary in-test policy for approvals (issue 7) implementing the agreed interface of
``signer.policy`` (``decide(principal, *, client_id).approvals`` and ``is_member``), used until
the policy file can be merged: every requester but ``alice`` needs 2 approvals from the group
``seal-approvers``, whose members are the identities with that role (dana, erik, fiona in
deploy/dev-idp/demo.json)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from idp_adapter.principal import Principal

GROUP = "seal-approvers"
APPROVERS = ("dana", "erik", "fiona")


@dataclass(frozen=True)
class ApprovalRequirement:
    required: int
    group: str


@dataclass(frozen=True)
class Decision:
    approvals: ApprovalRequirement | None


@dataclass(frozen=True)
class TwoOfThreePolicy:
    required: int = 2
    group: str = GROUP
    exempt: frozenset[str] = frozenset({"alice"})

    def decide(self, principal: Principal, *, client_id: str | None) -> Decision:
        if principal.subject in self.exempt:
            return Decision(None)
        return Decision(ApprovalRequirement(self.required, self.group))

    def is_member(self, group: str, principal: Principal) -> bool:
        return group in principal.roles


def commitment(digests: list[bytes]) -> str:
    """The digest commitment, computed here from its definition with the standard library:
    SHA-256 over u32-length-prefixed digests."""
    return hashlib.sha256(b"".join(struct.pack(">I", len(d)) + d for d in digests)).hexdigest()
