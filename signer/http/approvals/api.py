"""The approvals API (issue 7): batch requests held for m-of-n approval, and the decisions.

- ``POST /api/v1/signatures`` (and ``/api/v1/signatures/pdf``) from a requester whose policy
  decision requires approvals: ``202 Accepted`` (RFC 9110 §15.3.3) with ``Location`` = the
  status URL, the requirement and the digest commitment;
- ``GET /api/v1/approval-requests/{id}``: the requester (or an approver) polls; once
  completed the body is the 201 signing response plus ``id``, ``status`` and ``approval``;
- ``GET /api/v1/approval-requests``: the pending requests the caller may decide on;
- ``POST /api/v1/approval-requests/{id}/approve`` | ``/deny`` with ``{"digest_commitment"}``.

Handlers parse, call :class:`signer.flows.approvals.ApprovalService`, render.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from signer.flows.approvals import (
    ApprovalService,
)
from signer.http.approvals.models import Decision
from signer.http.kit.auth import authenticate
from signer.http.kit.body import read_json
from signer.http.kit.hold import APPROVALS, render
from signer.http.kit.models import validate
from signer.http.kit.paths import path_id
from signer.http.kit.problems import NotFound
from signer.http.kit.state import REQUEST_ID


def _service(request: web.Request) -> ApprovalService:
    service = request.app.get(APPROVALS)
    if service is None:
        raise NotFound("approvals are not configured")
    return service


def _id(request: web.Request) -> uuid.UUID:
    return path_id(request, NotFound("not an approval request id"))


async def show(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    service = _service(request)
    req = await service.visible(_id(request), principal)
    return web.json_response(render(request, req))


async def document(request: web.Request) -> web.Response:
    """The signed PDF of a completed PDF-upload request."""
    principal = await authenticate(request)
    service = _service(request)
    req = await service.visible(_id(request), principal)
    if req.signed_pdf is None:
        raise NotFound(f"{req.id} has no signed PDF ({req.status})")
    return web.Response(
        body=req.signed_pdf,
        content_type="application/pdf",
        headers={"Content-Disposition": 'attachment; filename="signed.pdf"'},
    )


async def list_pending(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    service = _service(request)
    pending = await service.pending_for(principal)
    return web.json_response({"requests": [render(request, r) for r in pending]})


async def _decide(request: web.Request, *, approve: bool) -> web.Response:
    principal = await authenticate(request)  # 401 before any body check (RFC 6750 §3.1)
    service = _service(request)
    commitment = validate(Decision, await read_json(request)).digest_commitment
    req = await service.decide(
        _id(request),
        principal,
        approve=approve,
        commitment=commitment,
        http_request_id=request[REQUEST_ID],
    )
    return web.json_response(render(request, req))


async def approve(request: web.Request) -> web.Response:
    return await _decide(request, approve=True)


async def deny(request: web.Request) -> web.Response:
    return await _decide(request, approve=False)
