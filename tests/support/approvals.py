"""Approvals (issue 7) as the tests see them: the development policy (deploy/dev/policy.toml)
holds every request of the demo client ``demo-seal-batch`` and every approver's own request for
2 approvals of the group ``seal-approvers`` (dana, erik, fiona in deploy/dev-idp/demo.json)."""

from __future__ import annotations

import hashlib
import struct

GROUP = "seal-approvers"
APPROVERS = ("dana", "erik", "fiona")
SEAL_CLIENT = "demo-seal-batch"


def commitment(digests: list[bytes]) -> str:
    """The digest commitment, computed here from its definition with the standard library:
    SHA-256 over u32-length-prefixed digests."""
    return hashlib.sha256(b"".join(struct.pack(">I", len(d)) + d for d in digests)).hexdigest()
