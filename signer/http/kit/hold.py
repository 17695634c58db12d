"""Batch requests at the HTTP edge: :func:`submitted` hands one to
:func:`signer.flows.submit.submit` (sign, or hold for m-of-n approval, issue 7) and answers a
held one ``202 Accepted`` (RFC 9110 §15.3.3) with ``Location`` = the status URL, the
requirement and the digest commitment; :func:`render` is the JSON of an approval request,
shared with the approvals API.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from idp_adapter.principal import Principal
from signer.flows.approvals import ApprovalService, Held, Hold, digest_commitment
from signer.flows.registry import RegistryError, check_redirect_uri
from signer.flows.submit import Signed, submit
from signer.flows.webhooks import delivery_json
from signer.formats.pdf import PreparedPdf
from signer.http.kit.idempotency import keep
from signer.http.kit.links import with_proof_url
from signer.http.kit.problems import InvalidRequest
from signer.http.kit.refused import start_operation
from signer.http.kit.state import REQUEST_ID, SERVICES
from signer.signing.longterm import PadesLevel
from signer.signing.pipeline import SignatureRequest
from signer.storage.approvals import StoredApprovalRequest
from signer.storage.records import IdempotencyKey

APPROVALS = web.AppKey("approvals", ApprovalService)
MAX_LABEL = 200
MAX_REASON = 1000


def _text(value: Any, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidRequest(f"{what} must be a non-empty string of at most {limit} characters")
    if not value.isprintable():
        raise InvalidRequest(f"{what} must not contain control characters")
    return value


def parse_hold(body: Mapping[str, Any], request: SignatureRequest) -> Hold:
    """``labels`` (one per digest, optional), ``reason`` and ``webhook_url`` of a batch body."""
    labels = body.get("labels")
    if labels is None:
        labels = [f"digest {i + 1}" for i in range(len(request.digests))]
    if not isinstance(labels, list) or len(labels) != len(request.digests):
        raise InvalidRequest("labels must be a list with one label per hash")
    checked = tuple(_text(v, f"labels[{i}]", MAX_LABEL) or "" for i, v in enumerate(labels))
    url = body.get("webhook_url")
    if url is not None:
        try:
            url = check_redirect_uri(_text(url, "webhook_url", 2000) or "")
        except RegistryError as exc:
            raise InvalidRequest(f"webhook_url: {exc}".replace("redirect URI", "URI")) from exc
    reason = _text(body.get("reason"), "reason", MAX_REASON)
    return Hold(request=request, labels=checked, reason=reason, webhook_url=url)


def status_url(request: web.Request, approval_id: uuid.UUID) -> str:
    public_url = request.app[SERVICES].settings.server.public_url
    return f"{public_url}/api/v1/approval-requests/{approval_id}"


async def submitted(
    request: web.Request,
    principal: Principal,
    sign_request: SignatureRequest,
    *,
    hold: Callable[[], Hold],
    idempotency: IdempotencyKey | None = None,
) -> Signed | web.Response:
    """:func:`signer.flows.submit.submit` for a batch surface: what was signed, or the 202 of
    a request held for m-of-n approval (issue 7). The operation starts (the token's ``jti`` is
    spent, :func:`start_operation`) only once the policy, the kill switch and the rate limit
    admitted it: a refused request leaves the token for the corrected retry."""
    key = None if idempotency is None else idempotency.key

    async def start() -> None:
        await start_operation(request, principal, key, sign_request)

    outcome = await submit(
        request.app[SERVICES].signing,
        request.app.get(APPROVALS),
        principal,
        sign_request,
        request_id=request[REQUEST_ID],
        hold=hold,
        idempotency=idempotency,
        start=start,
    )
    if isinstance(outcome, Held):
        return await accepted(request, outcome, idempotency)
    return outcome


async def accepted(
    request: web.Request, held: Held, idempotency: IdempotencyKey | None
) -> web.Response:
    """A request held by :func:`signer.flows.submit.submit`: 202 with its status URL. With an
    ``Idempotency-Key`` the answer (without the webhook secret, which is shown once) is kept
    for replays."""
    body = render(request, held.request)
    await keep(request.app[SERVICES], idempotency, body)
    if held.webhook_secret is not None:
        body["webhook"]["secret"] = held.webhook_secret
    url = status_url(request, held.request.id)
    return web.json_response(body, status=202, headers={"Location": url})


def render(request: web.Request, req: StoredApprovalRequest) -> dict[str, Any]:
    """The status body; a completed request carries its 201 signing response's fields."""
    url = status_url(request, req.id)
    body: dict[str, Any] = {}
    if req.status == "completed" and req.result is not None:
        public_url = request.app[SERVICES].settings.server.public_url
        body.update(with_proof_url(req.result, public_url))
        if req.kind == "pdf":
            body["document_url"] = f"{url}/document.pdf"
    body.update(
        {
            "id": str(req.id),
            "status": req.status,
            "status_url": url,
            "created_at": req.created_at.isoformat(),
            "expires_at": req.expires_at.isoformat(),
            "requester": {
                "issuer": req.token_issuer,
                "subject": req.token_subject,
                "name": req.display_name,
                "client_id": req.client_id,
            },
            "reason": req.reason,
            "format": req.format,
            "profile": req.profile,
            "hash_algorithm": req.hash_algorithm,
            "documents": [
                {"label": label, "digest": base64.b64encode(d).decode()}
                for label, d in zip(req.labels, req.digests, strict=True)
            ],
            "digest_commitment": digest_commitment(req.digests),
            "approval": {
                "group": req.approver_group,
                "required": req.approvals_required,
                "approvals": req.approvals,
                "decisions": [
                    {
                        "decision": d.decision,
                        "by": d.display_name,
                        "subject": d.token_subject,
                        "at": d.decided_at.isoformat(),
                        "log_index": d.log_index,
                    }
                    for d in req.decisions
                ],
            },
        }
    )
    if req.error is not None:
        body["error"] = req.error
    webhook = delivery_json(req, last_attempt=False)
    if webhook is not None:
        body["webhook"] = webhook
    return body


def pdf_hold(
    request: web.Request,
    sign_request: SignatureRequest,
    prepared: PreparedPdf,
    level: PadesLevel = "b-t",
) -> Hold:
    """A PDF upload held for approval: query ``label`` (default ``document.pdf``), ``reason``;
    signed once approved, it comes back at ``level`` (EN 319 142-1 §6.3)."""
    label = _text(request.query.get("label", "document.pdf"), "label", MAX_LABEL) or ""
    reason = _text(request.query.get("reason"), "reason", MAX_REASON)
    return Hold(request=sign_request, labels=(label,), reason=reason, pdf=prepared, level=level)
