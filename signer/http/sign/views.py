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
from urllib.parse import urlsplit

import jinja2
import structlog
from aiohttp import web
from cryptography.x509.oid import NameOID

from idp_adapter.errors import IdpError
from signer.errors import RequestError, SignerError
from signer.flows import websign as f
from signer.http.browser import SECURITY_HEADERS, SIGNING_PAGES, Cookies
from signer.http.browser import templates as browser_templates
from signer.http.kit.problems import translate
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
    "raw": "Raw ECDSA signature value",
}
_NAME_FIELDS = {
    NameOID.COMMON_NAME: "Name",
    NameOID.GIVEN_NAME: "Given name",
    NameOID.SURNAME: "Surname",
    NameOID.PSEUDONYM: "Pseudonym",
    NameOID.SERIAL_NUMBER: "Identifier",
    NameOID.COUNTRY_NAME: "Country",
    NameOID.ORGANIZATION_NAME: "Organisation",
    NameOID.ORGANIZATION_IDENTIFIER: "Organisation identifier",
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


def render(
    request: web.Request,
    name: str,
    *,
    status: int = 200,
    form_target: str | None = None,
    **context: Any,
) -> web.Response:
    env = request.app[TEMPLATES]
    html = env.get_template(name).render(request_id=request.get(REQUEST_ID), **context)
    resp = web.Response(text=html, content_type="text/html", status=status)
    resp.headers.update(SECURITY_HEADERS)
    if form_target is not None:
        # The consent POST is answered by a redirect to the RP: CSP form-action covers it.
        target = urlsplit(form_target)
        origin = f"{target.scheme}://{target.netloc}"
        csp = SECURITY_HEADERS["Content-Security-Policy"]
        resp.headers["Content-Security-Policy"] = csp.replace(
            "form-action 'self'", f"form-action 'self' {origin}"
        )
    return resp


def error_page(request: web.Request, exc: Exception, **context: Any) -> web.Response:
    mapped = translate(exc)
    if mapped is None:
        log.exception("web_signing_error", path=request.path)
        err: SignerError = SignerError()
    else:
        err = mapped[0]
        level = "warning" if err.status < 500 else "error"
        getattr(log, level)("web_signing_refused", kind=err.slug, error=str(exc) or repr(exc))
    message = _MESSAGES.get(type(err), "The request could not be completed. Try again later.")
    if isinstance(err, RequestError) and type(err) not in _MESSAGES:
        message = err.title + "."
    context.setdefault("retry_url", None)
    context.setdefault("signer", None)
    return render(
        request, "error.html", status=err.status, title=err.title, message=message, **context
    )


def _request_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError as exc:
        raise f.SigningRequestNotFound("not a request id") from exc


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


def _subject_rows(view: f.ConsentView) -> list[tuple[str, str]]:
    name = view.subject.x509_name()
    rows = [(_NAME_FIELDS.get(a.oid, a.oid.dotted_string), str(a.value)) for a in name]
    email = getattr(view.subject, "email", None)
    if email:
        rows.append(("E-mail", email))
    return rows


def _documents(view: f.ConsentView) -> list[tuple[str, str, str | None, str | None]]:
    """(label, signed digest hex, link to the PDF, SHA-256 hex of the PDF) per document."""
    req = view.request
    rows = []
    for i, (label, d) in enumerate(zip(req.labels, req.digests, strict=True)):
        pdf = view.file_digests[i].hex() if view.file_digests else None
        link = f"/sign/{req.id}/documents/{i + 1}" if pdf else None
        rows.append((label, d.hex(), link, pdf))
    return rows


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
    try:
        view = await flow.consent(request.cookies.get(cookies.session), _request_id(request))
    except (SignerError, IdpError) as exc:
        return error_page(request, exc)
    req = view.request
    return render(
        request,
        "consent.html",
        form_target=req.redirect_uri,
        view=view,
        req=req,
        signer=view.signer,
        documents=_documents(view),
        subject_rows=_subject_rows(view),
        level=LEVELS.get(view.level.value, view.level.value),
        format_name=FORMATS.get(req.format, req.format),
        return_host=urlsplit(req.redirect_uri).netloc,
    )


async def decide(request: web.Request) -> web.StreamResponse:
    """The consent form: Sign or Cancel, with this session's CSRF token."""
    flow = request.app[WEB_SIGNING]
    cookies = request.app[COOKIES]
    form = await request.post()
    csrf, decision = form.get("csrf"), form.get("decision")
    try:
        done = await flow.decide(
            request.cookies.get(cookies.session),
            _request_id(request),
            csrf if isinstance(csrf, str) else None,
            decision if isinstance(decision, str) else "",
            http_request_id=request[REQUEST_ID],
        )
    except (SignerError, IdpError) as exc:
        return error_page(request, exc)
    resp = web.Response(status=303, headers={"Location": done.redirect_url, **SECURITY_HEADERS})
    cookies.clear(resp, cookies.session)
    return resp
