"""The CA certificates that `qes init` made, stored beside the records."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signer.storage.records import PoolStore, guard


class CaCertificateStore(PoolStore):
    async def load(self, label: str) -> x509.Certificate | None:
        async with guard("read CA certificate"):
            der = await self._pool.fetchval(
                "SELECT certificate FROM ca_certificates WHERE label=$1", label
            )
        return x509.load_der_x509_certificate(bytes(der)) if der is not None else None

    async def save(self, label: str, cert: x509.Certificate, at: datetime) -> None:
        async with guard("store CA certificate"):
            await self._pool.execute(
                "INSERT INTO ca_certificates (label, certificate, created_at) VALUES ($1,$2,$3)"
                " ON CONFLICT (label) DO UPDATE SET certificate=EXCLUDED.certificate,"
                " created_at=EXCLUDED.created_at",
                label,
                cert.public_bytes(Encoding.DER),
                at,
            )
