"""Revocations of the issuing CA and TSA certificates, and the CAs' CRL numbers (migration
0018): the state every replica builds its CRLs and OCSP answers from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.revocation import Revocation, reason_from_name
from signer.storage.policy import LoggedAction, record_action
from signer.storage.records import PoolStore, guard, transaction

ROLES = ("issuing", "tsa")


@dataclass(frozen=True)
class StoredRevocation:
    """One revoked certificate: ``role`` (``issuing`` or ``tsa``), the subjectKeyIdentifier
    of its issuer's certificate (the CRL it goes on), the certificate, the revocation and who
    made it (an operator's account name)."""

    role: str
    issuer_key_id: bytes
    certificate: x509.Certificate
    revocation: Revocation
    revoked_by: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role: one of {', '.join(ROLES)}")
        if self.certificate.serial_number != self.revocation.serial:
            raise ValueError("revocation: serial is not the certificate's")


class RevocationStore(PoolStore):
    async def add(self, revoked: StoredRevocation, logged: LoggedAction | None = None) -> bool:
        """Store a revocation; False (nothing written) when the certificate was revoked before:
        the first revocation stands (RFC 5280 §3.3, no un-revoking). ``logged``: the act's
        admin action and log entry, written in the same transaction (issue 15 item 5)."""
        r = revoked.revocation
        async with transaction(self._pool, "store revocation") as conn:
            added = await conn.fetchval(
                "INSERT INTO ca_revocations (issuer_key_id, serial, role, certificate,"
                " revoked_at, reason, invalidity_date, revoked_by)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
                " ON CONFLICT (issuer_key_id, serial) DO NOTHING RETURNING id",
                revoked.issuer_key_id,
                format(r.serial, "x"),
                revoked.role,
                revoked.certificate.public_bytes(Encoding.DER),
                r.revoked_at,
                r.reason.value,
                r.invalidity_date,
                revoked.revoked_by,
            )
            if added is not None and logged is not None:
                await record_action(conn, logged)
        return added is not None

    async def revoked_by(self, issuer_key_id: bytes) -> tuple[Revocation, ...]:
        """The revocations on the CRL of the CA whose certificate has ``issuer_key_id``."""
        async with guard("read revocations"):
            rows = await self._pool.fetch(
                "SELECT serial, revoked_at, reason, invalidity_date FROM ca_revocations"
                " WHERE issuer_key_id=$1 ORDER BY id",
                issuer_key_id,
            )
        return tuple(
            Revocation(
                serial=int(row["serial"], 16),
                revoked_at=row["revoked_at"],
                reason=reason_from_name(row["reason"]),
                invalidity_date=row["invalidity_date"],
            )
            for row in rows
        )

    async def version(self) -> int:
        """Grows with every revocation (0 before the first): what CRL caches key on."""
        async with guard("read revocation state"):
            found = await self._pool.fetchval("SELECT coalesce(max(id), 0) FROM ca_revocations")
        return int(found)

    async def next_crl_number(self, issuer_key_id: bytes, at: datetime) -> int:
        """The CRL number for the next CRL of that CA (RFC 5280 §5.2.3): the larger of the
        last one + 1 and ``at`` in Unix seconds, so numbers keep increasing across replicas
        and continue above the time-based numbers used before they were stored."""
        async with guard("next CRL number"):
            number = await self._pool.fetchval(
                "INSERT INTO ca_crl_numbers AS n (issuer_key_id, last_number) VALUES ($1, $2)"
                " ON CONFLICT (issuer_key_id) DO UPDATE"
                " SET last_number = greatest(n.last_number + 1, EXCLUDED.last_number)"
                " RETURNING last_number",
                issuer_key_id,
                int(at.timestamp()),
            )
        return int(number)
