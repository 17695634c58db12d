"""One-time use of ``jti`` (RFC 7519 §4.1.7)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

__all__ = ["ReplayGuard"]


class ReplayGuard(Protocol):
    """Records token ids until they expire; shared by all replicas (PostgreSQL in the signer)."""

    async def first_use(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """Record ``(issuer, jti)``; return False when it was already recorded.

        ``expires_at`` is the token's ``exp``: the record may be dropped after it, since the
        token is refused as expired from then on anyway.
        """
        ...
