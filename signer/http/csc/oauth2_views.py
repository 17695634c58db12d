"""HTTP edge of the CSC v2 OAuth2 credential flow (:mod:`signer.flows.csc_oauth2`).

Browser steps (``authorize``, the IdP's ``callback``, the consent page and its POST) answer
with redirects or server-rendered HTML (jinja2, autoescaped, no JavaScript; the signing pages'
look). The login-flow and consent cookies are HttpOnly random values stored only as SHA-256.
``token`` answers RFC 6749 §5.1 / §5.2 JSON; the authorization server metadata is RFC 8414.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

import jinja2
import structlog
from aiohttp import web
from cryptography import x509
from markupsafe import Markup
from multidict import MultiMapping

from idp_adapter.errors import IdpError
from signer.errors import SignerError
from signer.flows import csc_oauth2 as o
from signer.http.browser import SECURITY_HEADERS, SIGNING_PAGES, Cookies, failure, render_page
from signer.http.browser import consent as c
from signer.http.browser import templates as browser_templates
from signer.http.kit.paths import path_id

log = structlog.get_logger(__name__)
CSC_OAUTH2 = web.AppKey("csc_oauth2", o.CredentialOAuth2)
OAUTH2_COOKIES = web.AppKey("csc_oauth2_cookies", Cookies)
OAUTH2_TEMPLATES = web.AppKey("csc_oauth2_templates", jinja2.Environment)
FLOW_COOKIE_SECONDS = 600
BASE = "/csc/v2/oauth2"
_MESSAGES: Mapping[type[SignerError], str] = {
    o.UnknownClient: "The application that sent you here is not registered with this signing"
    " service. Nothing was authorised.",
    o.RedirectNotRegistered: "The application that sent you here gave an address to return to"
    " that is not registered for it, so you are not sent back. Nothing was authorised.",
    o.AuthorizationLoginFailed: "The login could not be completed: it expired, was already"
    " used, or was not started in this browser. Start again from the application.",
    o.NotCredentialOwner: "You are logged in as someone other than the owner of this signing"
    " credential. Nothing was authorised.",
    o.AuthorizationLoginNotFresh: "The login happened before this authorisation was"
    " requested. Nothing was authorised.",
    o.AuthorizationAssuranceTooLow: "This authorisation needs a stronger login than the one"
    " you used. Nothing was authorised.",
    o.NoAuthorizationConsent: "There is no open consent in this browser for this"
    " authorisation (it was already answered, or it expired). Nothing was authorised now.",
    o.AuthorizationCsrf: "The consent form was not issued to this browser. Nothing was authorised.",
    o.PolicyRefusedAuthorization: "The signing policy of this service, or a suspension by its"
    " administrator, does not allow this authorisation. Nothing was authorised.",
}


def templates() -> jinja2.Environment:
    """The browser kit's consent, base and error pages, as the signing pages look."""
    return browser_templates(SIGNING_PAGES)


def _render(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
    return render_page(request, request.app[OAUTH2_TEMPLATES], name, status=status, **context)


def _error_page(request: web.Request, exc: Exception) -> web.Response:
    events = ("csc_oauth2_error", "csc_oauth2_refused")
    err, message = failure(exc, _MESSAGES, events=events, path=request.path, titled=False)
    back = err.back_url if isinstance(err, o.EndsAuthorization) else None
    return _render(
        request, "error.html", status=err.status, title=err.title, message=message,
        back_url=back, signer=None,
    )  # fmt: skip


def _redirect(url: str) -> web.Response:
    return web.Response(status=303, headers={"Location": url, **SECURITY_HEADERS})


def _single(params: MultiMapping[Any]) -> tuple[dict[str, str], frozenset[str]]:
    """Text parameters as a dict, and the names given more than once (RFC 6749 §3.1)."""
    counts = Counter(params.keys())
    values = {k: v for k in counts if isinstance(v := params[k], str)}
    return values, frozenset(k for k, n in counts.items() if n > 1)


async def authorize(request: web.Request) -> web.StreamResponse:
    """``GET /csc/v2/oauth2/authorize`` (CSC API v2 §8.4.2): start the owner's login."""
    flow, cookies = request.app[CSC_OAUTH2], request.app[OAUTH2_COOKIES]
    query, repeated = _single(request.query)
    try:
        started = await flow.authorize(query, repeated)
    except o.BackToClient as back:
        return _redirect(back.url)
    except (SignerError, IdpError) as exc:
        return _error_page(request, exc)
    resp = _redirect(started.redirect_url)
    cookies.put(resp, cookies.flow, started.flow_id, FLOW_COOKIE_SECONDS)
    return resp


async def callback(request: web.Request) -> web.StreamResponse:
    """RFC 6749 §4.1.2: the IdP's answer; the login flow is used up whatever happens."""
    flow, cookies = request.app[CSC_OAUTH2], request.app[OAUTH2_COOKIES]
    q = request.query
    try:
        done = await flow.finish(
            request.cookies.get(cookies.flow), q.get("state"), q.get("code"), q.get("error")
        )
    except o.BackToClient as back:
        resp = _redirect(back.url)
    except (SignerError, IdpError) as exc:
        resp = _error_page(request, exc)
    else:
        resp = _redirect(f"{BASE}/consent/{done.request_id}")
        cookies.put(resp, cookies.session, done.session_id, None)
    cookies.clear(resp, cookies.flow)
    return resp


def _request_id(request: web.Request) -> uuid.UUID:
    return path_id(request, o.NoAuthorizationConsent("not a request id"))


def _emails(cert: x509.Certificate) -> list[str]:
    """The certificate's e-mail addresses (subjectAltName)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.RFC822Name)


def _page(view: o.ConsentView) -> c.ConsentPage:
    req, rp, n = view.request, view.rp_name, view.request.num_signatures
    hash_name = c.hash_label(view.hash_name)
    cert = view.credential.certificate
    note = None
    if req.description:
        note = Markup("<strong>{} says:</strong> {}").format(rp, req.description)
    return c.ConsentPage(
        title="Authorise signatures",
        heading=f"{rp} asks you to authorise {n} signature{'s' if n != 1 else ''}",
        lead=Markup("These are the exact values your key will sign, computed by {} from your"
                    " documents. Nothing can be signed with your credential until you choose"
                    " <strong>Authorise</strong>, and then only these values, once each."
                    ).format(rp),
        note=note,
        table_id="hashes",
        table_title="What will be signed",
        caption=f"{n} {hash_name} hash{'es' if n != 1 else ''} as sent by {rp}"
        " (hex, and base64url as sent)",
        columns=("#", f"Hash ({hash_name})"),
        rows=tuple(c.Row(h.hex(), note=o.b64url(h)) for h in req.hashes),
        subject=c.subject_rows(cert.subject, _emails(cert)),
        details_id="authorisation-details",
        details_title="Authorisation",
        details=(c.Detail("Credential", req.credential_id, id="credential-id", mono=True),
                 c.Detail("Certificate serial", format(cert.serial_number, "x"), mono=True),
                 c.Detail("Signatures", str(n), id="signature-count")),
        rp_name=rp,
        redirect_uri=req.redirect_uri,
        signer=view.signer,
        expires=("Credential expires", view.credential.expires_at),
        action=f"{BASE}/consent/{req.id}",
        csrf_token=view.request.csrf_token or "",
        statement=Markup("By choosing <strong>Authorise</strong> you let {} sign {} above with your"
                         " credential, in the name shown.").format(
                             rp, "the value" if n == 1 else f"the {n} values"),
        button="Authorise",
    )  # fmt: skip


async def consent_page(request: web.Request) -> web.Response:
    flow, cookies = request.app[CSC_OAUTH2], request.app[OAUTH2_COOKIES]
    session = request.cookies.get(cookies.session)
    view = lambda: flow.consent(session, _request_id(request))  # noqa: E731
    return await c.consent_response(
        request, request.app[OAUTH2_TEMPLATES], view, _page, _error_page
    )


async def decide(request: web.Request) -> web.StreamResponse:
    """The consent form: Sign or Cancel, with this session's CSRF token."""
    flow, cookies = request.app[CSC_OAUTH2], request.app[OAUTH2_COOKIES]
    csrf, choice = await c.decision(request)
    try:
        url = await flow.decide(
            request.cookies.get(cookies.session), _request_id(request), csrf, choice
        )
    except (SignerError, IdpError) as exc:
        return _error_page(request, exc)
    resp = _redirect(url)
    cookies.clear(resp, cookies.session)
    return resp


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _token_error(err: o.TokenError, basic: bool) -> web.Response:
    """RFC 6749 §5.2; ``invalid_client`` after HTTP Basic is a 401 with a challenge."""
    headers = dict(_NO_STORE)
    if err.status == 401:
        headers["WWW-Authenticate"] = (
            'Basic realm="qes-signer"' if basic else 'Bearer realm="qes-signer"'
        )
    body = {"error": err.error, "error_description": err.description}
    return web.json_response(body, status=err.status, headers=headers)


async def token(request: web.Request) -> web.Response:
    """``POST /csc/v2/oauth2/token`` (CSC API v2 §8.4.3, RFC 6749 §4.1.3)."""
    flow = request.app[CSC_OAUTH2]
    authorization = request.headers.get("Authorization")
    basic = (authorization or "").lower().startswith("basic ")
    if request.content_type != "application/x-www-form-urlencoded":
        err = o.TokenError("invalid_request", "use application/x-www-form-urlencoded")
        return _token_error(err, basic)
    form, repeated = _single(await request.post())
    try:
        if repeated:
            raise o.TokenError("invalid_request", "a parameter is repeated")
        issued = await flow.token(form, authorization)
    except o.TokenError as err:
        log.info("csc_oauth2_token_refused", error=err.error, detail=err.description)
        return _token_error(err, basic)
    return web.json_response(issued.body(), headers=_NO_STORE)


def metadata_for(public_url: str) -> dict[str, Any]:
    """RFC 8414 §2 authorization server metadata; the issuer is ``{public_url}/csc/v2``."""
    return {
        "issuer": f"{public_url}/csc/v2",
        "authorization_endpoint": f"{public_url}{BASE}/authorize",
        "token_endpoint": f"{public_url}{BASE}/token",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "scopes_supported": ["credential"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }


def info_fields(public_url: str) -> dict[str, str]:
    """``info``'s ``oauth2`` (the base URI clients append ``/oauth2/authorize`` to, CSC API
    v1 §11.1) and ``oauth2Issuer`` (RFC 8414 issuer, v2 §11.1)."""
    return {"oauth2": f"{public_url}/csc/v2", "oauth2Issuer": f"{public_url}/csc/v2"}


async def metadata(request: web.Request) -> web.Response:
    public_url = request.app[CSC_OAUTH2].public_url
    return web.Response(
        text=json.dumps(metadata_for(public_url)),
        content_type="application/json",
        headers={"Cache-Control": "max-age=3600"},
    )


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of this flow's endpoints (for ``signer.http.openapi``)."""
    q = [
        ("response_type", "code", True),
        ("client_id", "a relying party registered with `qes client add`", True),
        ("redirect_uri", "exactly one of the client's registered redirect URIs", True),
        ("scope", "credential", True),
        ("code_challenge", "PKCE S256 challenge (RFC 7636), 43 characters", True),
        ("code_challenge_method", "S256 (plain is refused)", True),
        ("credentialID", "from credentials/list", True),
        ("numSignatures", "number of hashes", True),
        ("hashes", "base64url hashes separated by commas", True),
        ("hashAlgorithmOID", "2.16.840.1.101.3.4.2.1 (SHA-256), .2 (SHA-384), .3 (SHA-512)", True),
        ("state", "returned unchanged", False),
        ("description", "shown on the consent page (up to 500 characters)", False),
        ("account_token", "accepted and ignored", False),
        ("lang", "passed to the IdP as ui_locales", False),
    ]
    params = [
        {"name": n, "in": "query", "required": r, "description": d, "schema": {"type": "string"}}
        for n, d, r in q
    ]
    form = {
        "type": "object",
        "required": ["grant_type", "code", "code_verifier", "redirect_uri"],
        "properties": {
            "grant_type": {"const": "authorization_code"},
            "code": {"type": "string"},
            "code_verifier": {"type": "string", "minLength": 43, "maxLength": 128},
            "redirect_uri": {"type": "string"},
            "client_id": {"type": "string", "description": "client_secret_post"},
            "client_secret": {"type": "string", "description": "client_secret_post"},
        },
    }
    token_body = {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {
                "type": "string",
                "description": "credential token: the bearer token of signatures/signHash for"
                " this credential and these hashes, without SAD",
            },
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer"},
            "scope": {"const": "credential"},
            "credentialID": {"type": "string"},
        },
    }
    oauth_error = {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "enum": [
                                "invalid_request", "invalid_client", "invalid_grant",
                                "unsupported_grant_type",
                            ]
                        },
                        "error_description": {"type": "string"},
                    },
                }
            }
        }
    }  # fmt: skip
    return {
        f"{BASE}/authorize": {
            "get": {
                "summary": "CSC v2 credential authorization (OAuth2 code flow with PKCE): the"
                " owner logs in afresh, sees the hashes and consents",
                "parameters": params,
                "responses": {
                    "303": {
                        "description": "to the IdP login; errors after the redirect URI is"
                        " trusted go back to it as error=…&state=… (RFC 6749 §4.1.2.1)"
                    },
                    "400": {"description": "HTML page: unknown client or redirect_uri"},
                },
            }
        },
        f"{BASE}/token": {
            "post": {
                "summary": "Exchange the code for a credential token (RFC 6749 §4.1.3)",
                "security": [{"rp_basic": []}, {}],
                "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": form}}},
                "responses": {
                    "200": {
                        "description": "RFC 6749 §5.1",
                        "content": {"application/json": {"schema": token_body}},
                    },
                    "400": {"description": "RFC 6749 §5.2", **oauth_error},
                    "401": {"description": "invalid_client", **oauth_error},
                },
            }
        },
        "/.well-known/oauth-authorization-server/csc/v2": {
            "get": {
                "summary": "RFC 8414 authorization server metadata (issuer {public_url}/csc/v2)",
                "responses": {"200": {"description": "metadata JSON"}},
            }
        },
    }
