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
from urllib.parse import urlsplit

import jinja2
import structlog
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID
from multidict import MultiMapping

from idp_adapter.errors import IdpError
from signer.errors import SignerError
from signer.flows import csc_oauth2 as o
from signer.http.browser import SECURITY_HEADERS, SIGNING_PAGES, Cookies
from signer.http.browser import templates as browser_templates
from signer.http.kit.problems import translate
from signer.http.kit.state import REQUEST_ID

log = structlog.get_logger(__name__)
CSC_OAUTH2 = web.AppKey("csc_oauth2", o.CredentialOAuth2)
OAUTH2_COOKIES = web.AppKey("csc_oauth2_cookies", Cookies)
OAUTH2_TEMPLATES = web.AppKey("csc_oauth2_templates", jinja2.Environment)
FLOW_COOKIE_SECONDS = 600
BASE = "/csc/v2/oauth2"
_NAME_FIELDS = {
    NameOID.COMMON_NAME: "Name",
    NameOID.GIVEN_NAME: "Given name",
    NameOID.SURNAME: "Surname",
    NameOID.PSEUDONYM: "Pseudonym",
    NameOID.SERIAL_NUMBER: "Identifier",
    NameOID.COUNTRY_NAME: "Country",
    NameOID.ORGANIZATION_NAME: "Organisation",
    NameOID.ORGANIZATION_IDENTIFIER: "Organisation identifier",
    NameOID.EMAIL_ADDRESS: "E-mail",
}
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
HASH_NAMES = {"sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}


def cookies_for(public_url: str) -> Cookies:
    """``__Host-`` cookies over https (RFC 6265bis §4.1.3.2); HttpOnly, SameSite=Lax."""
    prefix = "__Host-" if public_url.startswith("https://") else ""
    secure = bool(prefix)
    return Cookies(f"{prefix}qes-csc-consent", f"{prefix}qes-csc-login", secure)


def templates() -> jinja2.Environment:
    """This flow's consent page; the base and error pages are the browser kit's."""
    return browser_templates(SIGNING_PAGES, "http/csc/templates")


def _render(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
    env = request.app[OAUTH2_TEMPLATES]
    html = env.get_template(name).render(request_id=request.get(REQUEST_ID), **context)
    resp = web.Response(text=html, content_type="text/html", status=status)
    resp.headers.update(SECURITY_HEADERS)
    target = context.get("form_target")
    if isinstance(target, str):  # the consent POST is answered by a redirect to the client
        parts = urlsplit(target)
        csp = SECURITY_HEADERS["Content-Security-Policy"]
        resp.headers["Content-Security-Policy"] = csp.replace(
            "form-action 'self'", f"form-action 'self' {parts.scheme}://{parts.netloc}"
        )
    return resp


def _error_page(request: web.Request, exc: Exception) -> web.Response:
    mapped = translate(exc)
    if mapped is None:
        log.exception("csc_oauth2_error", path=request.path)
        err: SignerError = SignerError()
    else:
        err = mapped[0]
        level = "warning" if err.status < 500 else "error"
        getattr(log, level)("csc_oauth2_refused", kind=err.slug, error=str(exc) or repr(exc))
    message = _MESSAGES.get(type(err), "The request could not be completed. Try again later.")
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
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError as exc:
        raise o.NoAuthorizationConsent("not a request id") from exc


def _subject_rows(view: o.ConsentView) -> list[tuple[str, str]]:
    """The certificate's subject name, then its e-mail addresses (subjectAltName)."""
    cert = view.credential.certificate
    rows = [(_NAME_FIELDS.get(a.oid, a.oid.dotted_string), str(a.value)) for a in cert.subject]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return rows
    return rows + [("E-mail", email) for email in san.get_values_for_type(x509.RFC822Name)]


async def consent_page(request: web.Request) -> web.Response:
    flow, cookies = request.app[CSC_OAUTH2], request.app[OAUTH2_COOKIES]
    try:
        view = await flow.consent(request.cookies.get(cookies.session), _request_id(request))
    except (SignerError, IdpError) as exc:
        return _error_page(request, exc)
    req = view.request
    return _render(
        request,
        "oauth2_consent.html",
        form_target=req.redirect_uri,
        view=view,
        req=req,
        signer=view.signer,
        hashes=[(h.hex(), o.b64url(h)) for h in req.hashes],
        hash_name=HASH_NAMES[view.hash_name],
        subject_rows=_subject_rows(view),
        serial=format(view.credential.certificate.serial_number, "x"),
        return_host=urlsplit(req.redirect_uri).netloc,
    )


async def decide(request: web.Request) -> web.StreamResponse:
    """The consent form: Sign or Cancel, with this session's CSRF token."""
    flow, cookies = request.app[CSC_OAUTH2], request.app[OAUTH2_COOKIES]
    form = await request.post()
    csrf, decision = form.get("csrf"), form.get("decision")
    try:
        url = await flow.decide(
            request.cookies.get(cookies.session),
            _request_id(request),
            csrf if isinstance(csrf, str) else None,
            decision if isinstance(decision, str) else "",
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
