"""Admin acts as log entries (issue 15 item 5): :class:`AdminLog` turns an act of an operator
or administrator into its ``admin_actions`` row and its ``ca.logentry`` kind 0x04 entry, which
the store that performs the act writes in the same transaction
(:func:`signer.storage.policy.record_action`).

ETSI EN 319 401 §7.10 (event logging: the trust service records its events, including those
of administration, with their time) and EN 319 411-1 §6.4.5 (CA key and certificate
management events, system administration) ask exactly this: the act, who did it, on what and
when, never a secret (a client secret, for one, is never in the row nor the entry).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ca.logentry import PrivacyKey
from signer.storage.policy import AdminAction, LoggedAction, Target
from signer.translog.log import admin_entry


def operator(actor: str) -> str:
    """The ``actor_subject`` of an operator's command: ``cli:<who>`` (``--actor`` or the OS
    account), committed in the entry, never in clear."""
    return actor if actor.startswith("cli:") else f"cli:{actor}"


def certificate_target(certificate: x509.Certificate) -> Target:
    """The target of an act on a CA certificate: its serial and the SHA-256 of its DER."""
    return Target(
        "certificate",
        certificate_serial=certificate.serial_number,
        target_sha256=certificate.fingerprint(hashes.SHA256()),
    )


@dataclass(frozen=True)
class AdminLog:
    """Who acts (``actor_subject``: ``cli:<user>`` or a token's ``sub`` at ``actor_issuer``)
    under which request id, with the log-privacy key and the clock."""

    key: PrivacyKey = field(repr=False)
    actor_subject: str
    clock: Callable[[], datetime]
    actor_issuer: str | None = None
    request_id: str = field(default_factory=lambda: f"cli-{uuid.uuid4().hex}")

    def act(
        self,
        action: str,
        target: Target,
        *,
        detail: str | None = None,
        reason: str | None = None,
        at: datetime | None = None,
    ) -> LoggedAction:
        """The row and the encoded entry of ``action`` on ``target`` (``at``: when it took
        effect, else now); raises :class:`ca.logentry.LogEntryError` for an impossible one."""
        done = AdminAction(
            id=uuid.uuid4(),
            request_id=self.request_id,
            action=action,
            target=target,
            reason=reason,
            actor_issuer=self.actor_issuer,
            actor_subject=self.actor_subject,
            acted_at=self.clock() if at is None else at,
            detail=detail,
        )
        return LoggedAction(done, admin_entry(done).encode(self.key))
