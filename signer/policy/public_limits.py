"""Rate limits of the anonymous endpoints (issue 17, item 8), shared by every replica.

``POST /tsa`` signs in the HSM, the CRLs are signed in the HSM, the trust bundle and the CA
certificates, the OpenAPI document and CSC ``info`` answer anyone. Each is limited per client
address (``[server] public_per_address_per_minute``) and for all addresses together
(``public_total_per_minute``), in fixed one-minute windows counted in PostgreSQL
(``public_rate_windows``), like the pre-authentication refusal counters
(signer.policy.refusals). The address is stored only as a keyed hash
(signer.translog.source_index). Past a limit the request is refused with 429 and
``Retry-After``: the seconds until the window ends (RFC 6585 §4, RFC 9110 §10.2.3). When the
database cannot count, the request is served (these endpoints must keep working through a
database outage; the HSM's own capacity still bounds them) and the failure is logged at most
once per window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from ca.logentry import PrivacyKey
from signer.errors import DatabaseUnavailable, RequestError
from signer.storage.public_limits import PublicLimitStore
from signer.translog.log import source_index

log = structlog.get_logger(__name__)
WINDOW_SECONDS = 60
UNKNOWN_ADDRESS = "unknown"


class PublicRateLimited(RequestError):
    """An anonymous endpoint's limit is reached; ``retry_after`` in seconds."""

    slug = "public-rate-limited"
    title = "Too many requests to this public endpoint; retry later"
    status = 429

    def __init__(self, message: str = "", *, retry_after: int = WINDOW_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


@dataclass(kw_only=True, eq=False)
class PublicLimiter:
    """Counts anonymous requests per address and in total; refuses past the limits."""

    store: PublicLimitStore
    key: PrivacyKey
    per_address: int
    total: int
    clock: Callable[[], datetime]
    _forgotten_before: datetime | None = field(default=None, init=False)
    _failure_logged_for: datetime | None = field(default=None, init=False)

    @property
    def enabled(self) -> bool:
        return self.per_address > 0 or self.total > 0

    async def admit(self, address: str | None) -> None:
        """Count one request from ``address``; raise PublicRateLimited past a limit."""
        if not self.enabled:
            return
        now = self.clock()
        start = datetime.fromtimestamp(int(now.timestamp()) // WINDOW_SECONDS * WINDOW_SECONDS, UTC)
        source = source_index(self.key, address or UNKNOWN_ADDRESS)
        try:
            mine, everyone = await self.store.hit(source, start)
            await self._forget_closed(start)
        except DatabaseUnavailable as exc:
            if self._failure_logged_for != start:
                self._failure_logged_for = start
                log.warning("public_limit_unavailable", error=str(exc))
            return
        over_address = 0 < self.per_address < mine
        over_total = 0 < self.total < everyone
        if over_address or over_total:
            end = start + timedelta(seconds=WINDOW_SECONDS)
            wait = math.ceil((end - now).total_seconds())
            which = "per-address" if over_address else "total"
            raise PublicRateLimited(f"{which} limit of anonymous requests", retry_after=wait)

    async def _forget_closed(self, start: datetime) -> None:
        """Once per window and process: delete the rows of windows before the previous one."""
        if self._forgotten_before == start:
            return
        self._forgotten_before = start
        await self.store.forget_before(start - timedelta(seconds=WINDOW_SECONDS))
