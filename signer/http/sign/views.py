"""The signer's pages at ``/sign``: start the login, the IdP's callback, consent, decision.

Server-rendered (jinja2, autoescaped), no JavaScript. The browser holds two random values,
never stored in clear: the login-flow cookie (RFC 6749 §10.12, binds ``state`` to this
browser) and the consent-session cookie. The consent POST carries the session's CSRF token.
Failures render an HTML page with a fixed text per kind; details go to the log only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import structlog
from aiohttp import web
from markupsafe import Markup

from idp_adapter.errors import IdpError
from signer.errors import SignerError
from signer.flows import websign as f
from signer.http.browser import SECURITY_HEADERS, SIGNING_PAGES, Cookies, failure, render_page
from signer.http.browser import consent as c
from signer.http.browser import templates as browser_templates
from signer.http.kit.paths import path_id
from signer.http.kit.state import REQUEST_ID, WEB_SIGNING
from signer.policy.enforcement import Suspended
from signer.policy.rules import PolicyDenied

log = structlog.get_logger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
FLOW_COOKIE_SECONDS = 600
COOKIES = web.AppKey("web_signing_cookies", Cookies)

LEVELS = {
    "qes": "Qualified electronic signature (QES)",
    "qualified": "Qualified certificate, advanced signature",
    "advanced": "Advanced electronic signature",
}
FORMATS = {
    "pades": "PAdES B-T: signature inside each PDF, with a trusted time-stamp",
    "cades": "CAdES B-T: detached CMS signature with a trusted time-stamp",
    "cades-b-lt": "CAdES B-LT: detached CMS signature with a trusted time-stamp and the data to"
    " validate it for the long term",
    "raw": "Raw ECDSA signature value",
}
_MESSAGES: Mapping[type[SignerError], str] = {
    f.SigningRequestNotFound: "This signing link is not valid. Ask the application that sent"
    " you here for a new one.",
    f.SignerLoginFailed: "The login could not be completed: it expired, was already used, or"
    " was not started in this browser. Open the signing link again.",
    f.WrongSigner: "You are logged in as someone other than the person this signing request is"
    " meant for. Nothing was signed.",
    f.AssuranceTooLow: "This request needs a stronger login than the one you used. Nothing was"
    " signed.",
    f.NoConsentSession: "There is no open consent in this browser for this request (it was"
    " already answered, or it expired). Nothing was signed.",
    f.CsrfRejected: "The consent form was not issued to this browser. Nothing was signed.",
    f.RequestNotPending: "This signing request can no longer be signed: it was completed,"
    " cancelled, or it expired. Nothing was signed now.",
    f.ActivationRefused: "The signature could not be activated for this request. Nothing was"
    " signed.",
    Suspended: "Signing is suspended by the service's administrator, for you, for the"
    " application that sent you here, or for the whole service. Nothing was signed. Please"
    " contact the application's or the signing service's support.",
    PolicyDenied: "The signing policy of this service does not allow you to sign for the"
    " application that sent you here. Nothing was signed.",
}


def templates() -> jinja2.Environment:
    return browser_templates(SIGNING_PAGES, "http/sign/templates")


TEMPLATES = web.AppKey("web_signing_templates", jinja2.Environment)


def render(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
    return render_page(request, request.app[TEMPLATES], name, status=status, **context)


def error_page(request: web.Request, exc: Exception, **context: Any) -> web.Response:
    events = ("web_signing_error", "web_signing_refused")
    err, message = failure(exc, _MESSAGES, events=events, path=request.path)
    context.setdefault("retry_url", None)
    context.setdefault("signer", None)
    return render(
        request, "error.html", status=err.status, title=err.title, message=message, **context
    )


def _request_id(request: web.Request) -> uuid.UUID:
    return path_id(request, f.SigningRequestNotFound("not a request id"))


async def start(request: web.Request) -> web.StreamResponse:
    """``sign_url``: a new login for this browser (RFC 6749 §4.1.1), or the request's end."""
    flow = request.app[WEB_SIGNING]
    cookies = request.app[COOKIES]
    try:
        request_id = _request_id(request)
        started = await flow.begin(request_id)
    except f.RequestNotPending:
        return await ended_page(request, request_id)
    except (SignerError, IdpError) as exc:
        return error_page(request, exc)
    resp = web.Response(status=303, headers={"Location": started.redirect_url, **SECURITY_HEADERS})
    cookies.put(resp, cookies.flow, started.flow_id, FLOW_COOKIE_SECONDS)
    return resp


async def ended_page(request: web.Request, request_id: uuid.UUID) -> web.Response:
    req = await request.app[WEB_SIGNING].get(request_id)
    back = f.back_to_rp(req, error="request_expired") if req.status == "expired" else None
    return render(request, "ended.html", status=409, req=req, back_url=back, signer=None)


async def callback(request: web.Request) -> web.StreamResponse:
    """RFC 6749 §4.1.2: the IdP's answer. The flow is used up whatever happens."""
    flow = request.app[WEB_SIGNING]
    cookies = request.app[COOKIES]
    q = request.query
    flow_id = request.cookies.get(cookies.flow)
    try:
        if "error" in q:  # §4.1.2.1: the IdP refused; the request ends, the RP is told
            decision = await flow.idp_refused(flow_id, q.get("state"), q["error"])
            resp = web.Response(
                status=303, headers={"Location": decision.redirect_url, **SECURITY_HEADERS}
            )
            cookies.clear(resp, cookies.flow)
            return resp
        done = await flow.finish(flow_id, q.get("state"), q.get("code"))
    except f.StepUpRequired as step:  # the policy needs a stronger login: log in again
        resp = web.Response(
            status=303, headers={"Location": f"/sign/{step.request_id}", **SECURITY_HEADERS}
        )
        cookies.clear(resp, cookies.flow)
        return resp
    except (SignerError, IdpError) as exc:
        resp = error_page(request, exc)
        cookies.clear(resp, cookies.flow)
        return resp
    location = f"/sign/{done.request_id}/consent"
    resp = web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})
    cookies.clear(resp, cookies.flow)
    cookies.put(resp, cookies.session, done.session_id, None)
    return resp


def _rows(view: f.ConsentView) -> tuple[c.Row, ...]:
    """Per document: the signed digest, the PDF's own SHA-256 and a link to read it."""
    req = view.request
    rows = []
    for i, (label, d) in enumerate(zip(req.labels, req.digests, strict=True)):
        pdf = view.file_digests[i].hex() if view.file_digests else None
        link = f"/sign/{req.id}/documents/{i + 1}" if pdf else None
        note = f"PDF file SHA-256: {pdf}" if pdf else None
        rows.append(c.Row(d.hex(), note=note, label=label, link=link))
    return tuple(rows)


def _page(view: f.ConsentView) -> c.ConsentPage:
    req, rp, n = view.request, view.rp_name, len(view.request.digests)
    hash_name = c.hash_label(req.hash_algorithm)
    level = LEVELS.get(view.level.value, view.level.value)
    email = getattr(view.subject, "email", None)
    what = "the document" if n == 1 else f"all {n} documents"
    return c.ConsentPage(
        title="Review and sign",
        heading=f"{rp} asks you to sign {n} document{'s' if n != 1 else ''}",
        lead=Markup("Check what will be signed and in whose name. Nothing is signed until you"
                    " choose <strong>Sign</strong>."),
        table_id="documents",
        table_title="Documents",
        caption=f"What you sign: each document's {hash_name} digest"
        + (" (the byte range of the PDF with its signature field; open a document to read it)"
           if req.format == "pades" else f", as sent by {rp}"),
        columns=("#", "Document", f"Digest ({hash_name}, hex)"),
        rows=_rows(view),
        subject=c.subject_rows(view.subject.x509_name(), [email] if email else []),
        details_id="signature-details",
        details_title="Signature",
        details=(c.Detail("Level", level, id="level"),
                 c.Detail("Format", FORMATS.get(req.format, req.format))),
        rp_name=rp,
        redirect_uri=req.redirect_uri,
        signer=view.signer,
        expires=("Request expires", req.expires_at),
        action=f"/sign/{req.id}/consent",
        csrf_token=view.csrf_token,
        statement=Markup("By choosing <strong>Sign</strong> you sign {} above in the name shown."
                         " Level: {}.").format(what, level),
        button="Sign",
    )  # fmt: skip


async def original_pdf(request: web.Request) -> web.StreamResponse:
    """A PDF as the RP sent it, to the person holding this request's consent session."""
    flow = request.app[WEB_SIGNING]
    cookies = request.app[COOKIES]
    try:
        _, pdf = await flow.original_pdf(
            request.cookies.get(cookies.session),
            _request_id(request),
            int(request.match_info["n"]),
        )
    except (SignerError, IdpError) as exc:
        return error_page(request, exc)
    return web.Response(
        body=pdf,
        content_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="document-{request.match_info["n"]}.pdf"',
            "Content-Security-Policy": "sandbox",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


async def consent_page(request: web.Request) -> web.Response:
    flow = request.app[WEB_SIGNING]
    cookies = request.app[COOKIES]
    session = request.cookies.get(cookies.session)
    view = lambda: flow.consent(session, _request_id(request))  # noqa: E731
    return await c.consent_response(request, request.app[TEMPLATES], view, _page, error_page)


async def decide(request: web.Request) -> web.StreamResponse:
    """The consent form: Sign or Cancel, with this session's CSRF token."""
    flow = request.app[WEB_SIGNING]
    cookies = request.app[COOKIES]
    csrf, choice = await c.decision(request)
    try:
        done = await flow.decide(
            request.cookies.get(cookies.session),
            _request_id(request),
            csrf,
            choice,
            http_request_id=request[REQUEST_ID],
        )
    except (SignerError, IdpError) as exc:
        return error_page(request, exc)
    resp = web.Response(status=303, headers={"Location": done.redirect_url, **SECURITY_HEADERS})
    cookies.clear(resp, cookies.session)
    return resp
