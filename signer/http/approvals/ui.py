"""The approvers' web UI (``/approvals``): OIDC login (the audit UI's :class:`AuditLogin` and
session store, realm ``approvals``), the pending requests of the approver's groups, one
request with its requester, reason, expiry, labelled digests, digest commitment and decisions
so far, and an Approve / Deny form that sends the commitment it showed back (CSRF-protected).
Rendered on the server (jinja2, autoescaped); it works without JavaScript.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import jinja2
import structlog
from aiohttp import web

from signer.flows.approvals import ApprovalNotFound, ApprovalService, digest_commitment
from signer.flows.login import AuditLogin
from signer.flows.websign import principal_from_json as principal_from_data
from signer.http.browser import (
    SECURITY_HEADERS,
    Cookies,
    SessionViews,
    Surface,
    csrf_ok,
    error_page_for,
    logged_in,
    render_page,
    templates,
)
from signer.http.kit.body import read_form
from signer.http.kit.paths import path_id
from signer.http.kit.state import REQUEST_ID
from signer.storage.audit_sessions import UiSession

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ApprovalUi:
    login: AuditLogin
    service: ApprovalService
    templates: jinja2.Environment
    cookies: Cookies


APPROVAL_UI = web.AppKey("approval_ui", ApprovalUi)


APPROVAL_PAGES = Surface.with_sessions(
    "approvals",
    "Approvals",
    footer="Your approval is bound to the exact digests shown and is recorded in the"
    " transparency log.",
    back_label="Back to the list",
)


def page_templates() -> jinja2.Environment:
    return templates(APPROVAL_PAGES, "http/approvals/templates")


def render(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
    templates = request.app[APPROVAL_UI].templates
    return render_page(request, templates, name, status=status, **context)


error_page = error_page_for(render, {}, ("approval_ui_error", "approval_ui_failed"))


authenticated = logged_in(APPROVAL_UI, "/approvals", error_page, principal=True)


def _id(request: web.Request) -> uuid.UUID:
    return path_id(request, ApprovalNotFound("not an id"))


@authenticated
async def list_page(request: web.Request, ui: ApprovalUi, session: UiSession) -> web.Response:
    assert session.principal is not None
    rows = await ui.service.pending_for(principal_from_data(session.principal))
    return render(request, "list.html", session=session, rows=rows)


@authenticated
async def detail_page(request: web.Request, ui: ApprovalUi, session: UiSession) -> web.Response:
    """One request; after a decision (``?decided=1``, the redirect of the form's POST) it says
    what this approver's decision did."""
    assert session.principal is not None
    principal = principal_from_data(session.principal)
    req = await ui.service.visible(_id(request), principal)
    own = [
        d
        for d in req.decisions
        if (d.token_issuer, d.token_subject) == (principal.issuer, principal.subject)
    ]
    mine = (req.token_issuer, req.token_subject) == (principal.issuer, principal.subject)
    message = None
    if own and request.query.get("decided") == "1":
        message = f"Your decision is recorded: {own[0].decision}; the request is {req.status}."
        if own[0].decision == "approved":
            message = f"You approved: {req.approvals} of {req.approvals_required}; {req.status}."
    return render(
        request,
        "detail.html",
        session=session,
        r=req,
        documents=[(label, d.hex()) for label, d in zip(req.labels, req.digests, strict=True)],
        commitment=digest_commitment(req.digests),
        can_decide=req.status == "pending" and not own and not mine,
        message=message,
    )


@authenticated
async def decide(request: web.Request, ui: ApprovalUi, session: UiSession) -> web.Response:
    """The form's POST: CSRF token of this session, the commitment shown, approve or deny;
    then back to the request's page (POST/redirect/GET: a reload never posts again)."""
    form = await read_form(request)
    token, commitment, choice = (
        form.get("csrf"),
        form.get("digest_commitment"),
        form.get("decision"),
    )
    if not csrf_ok(token, session):
        message = "The form was not issued by this session. Reload the page and try again."
        return render(request, "error.html", status=403, title="Form refused", message=message,
                      session=session)  # fmt: skip
    if choice not in ("approve", "deny") or not isinstance(commitment, str):
        return render(request, "error.html", status=400, title="Invalid request",
                      message="Choose Approve or Deny.", session=session)  # fmt: skip
    assert session.principal is not None
    req = await ui.service.decide(
        _id(request),
        principal_from_data(session.principal),
        approve=choice == "approve",
        commitment=commitment,
        http_request_id=request[REQUEST_ID],
    )
    location = f"/approvals/{req.id}?decided=1"
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def _parts(app: web.Application) -> tuple[AuditLogin, Cookies]:
    ui = app[APPROVAL_UI]
    return ui.login, ui.cookies


SESSION = SessionViews(_parts, "/approvals", error_page, render, "approvals_login")
