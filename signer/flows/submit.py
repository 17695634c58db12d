"""Sign or hold: the one place that decides what happens to an authenticated batch request.

A request whose policy rule names an m-of-n approval (issue 7) is held
(:meth:`signer.flows.approvals.ApprovalService.hold`); any other goes to the pipeline
(:meth:`signer.signing.pipeline.SigningService.sign`). Both surfaces that take batch requests
(``POST /api/v1/signatures`` and its PDF upload) call :func:`submit` and render what it returns;
nothing here knows HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from idp_adapter.principal import Principal
from signer.flows.approvals import ApprovalService, Held, Hold
from signer.signing.pipeline import SignatureRequest, SignatureResult, SigningService, Start
from signer.storage.records import IdempotencyKey

__all__ = ["Held", "Signed", "submit"]


@dataclass(frozen=True)
class Signed:
    """Signed at once: the result and its JSON value (with ``"log": {"index": N}``)."""

    result: SignatureResult
    body: Mapping[str, Any]


async def submit(
    signing: SigningService,
    approvals: ApprovalService | None,
    principal: Principal,
    request: SignatureRequest,
    *,
    request_id: str,
    hold: Callable[[], Hold],
    idempotency: IdempotencyKey | None = None,
    start: Start | None = None,
) -> Signed | Held:
    """Hold ``request`` for approval when the requester's rule asks for it (``hold`` builds
    the held request's labels and reason, only then), else sign it. ``idempotency`` goes with a
    signing to its completion commit; a held request's 202 is kept by the HTTP kit. ``start``
    (the token's ``jti``, RFC 7519 §4.1.7) runs once either admitted the request: a refused
    one spends nothing."""
    requirement = None if approvals is None else approvals.requirement(principal)
    if approvals is not None and requirement is not None:
        return await approvals.hold(
            principal, hold(), requirement, request_id=request_id, start=start
        )
    result, body = await signing.sign(
        principal, request, request_id=request_id, idempotency=idempotency, start=start
    )
    return Signed(result, body)
