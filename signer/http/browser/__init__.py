"""The browser kit: what every HTML surface (audit, approvals, web signing, CSC OAuth2) shares.

Security headers, cookie names and flags, the autoescaped template environment, the shared
stylesheet (``static/``) and the end of the OpenID Connect code flow (RFC 6749 §4.1.2).
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

import aiohttp
import asyncpg
import jinja2
import structlog
from aiohttp import web

from idp_adapter.codeflow import CodeFlowClient
from idp_adapter.errors import IdpError
from idp_adapter.principal import Principal
from idp_adapter.registry import IssuerRegistry
from signer.errors import RequestError, SignerError
from signer.flows.login import AuditLogin, BrowserLogin
from signer.http.kit.body import read_form
from signer.http.kit.problems import translate
from signer.http.kit.state import REQUEST_ID
from signer.settings.config import AuditUiSettings, OidcClientSettings, Settings
from signer.storage.audit_sessions import AuditSessionStore, UiSession
from signer.storage.login_flows import LoginFlowStore

log = structlog.get_logger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
UNEXPECTED = "The request could not be completed. Try again later."


def add_static(router: web.UrlDispatcher, prefix: str, directory: Path) -> None:
    """``GET prefix/{file}``: the regular files of ``directory`` (listed once, no
    subdirectories). An unknown name is the service's 404 problem, not aiohttp's static
    handler's empty ``application/octet-stream`` 404 that no middleware sees."""
    files = {p.name: p for p in directory.iterdir() if p.is_file()}

    async def serve(request: web.Request) -> web.StreamResponse:
        path = files.get(request.match_info["file"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    router.add_get(f"{prefix}/{{file}}", serve)


@dataclass(frozen=True)
class LoginResources:
    """What every browser surface is built from, opened once by :mod:`signer.app`: the
    database pool (the login-flow table, sessions, the surface's stores), the outbound HTTP
    session (the IdP's token endpoint, webhooks), the token issuers and the clock."""

    pool: asyncpg.Pool
    http: aiohttp.ClientSession
    tokens: IssuerRegistry
    clock: Callable[[], datetime]


def browser_login(
    settings: Settings,
    client: OidcClientSettings,
    *,
    callback: str,
    purpose: str,
    failed: type[RequestError],
    resources: LoginResources,
    max_age: timedelta | None = None,
) -> BrowserLogin:
    """The one login, for the surface whose callback path is ``callback``: its OIDC client at
    the configured issuer, the shared flow table, its own error and step-up age."""
    issuer = next(i.issuer for i in settings.issuers if i.name == client.issuer)
    code_flow = CodeFlowClient(
        issuer,
        client.client_id,
        client.client_secret.reveal(),
        f"{settings.server.public_url}{callback}",
        resources.http,
        scope=client.scope,
    )
    return BrowserLogin(
        client=code_flow,
        tokens=resources.tokens,
        flows=LoginFlowStore(resources.pool),
        purpose=purpose,
        failed=failed,
        clock=resources.clock,
        max_age=max_age,
    )


def session_login(
    settings: Settings,
    ui: AuditUiSettings,
    *,
    realm: str,
    role: str | None,
    failed: type[RequestError],
    resources: LoginResources,
    keep_principal: Callable[[Principal], Mapping[str, Any]] | None = None,
) -> AuditLogin:
    """The one login of a UI with sessions (``/{realm}``: audit, approvals); ``role`` is its
    identity check (the auditor role; None: the approver group, checked per request)."""
    login = browser_login(
        settings, ui, callback=f"/{realm}/callback", purpose=realm, failed=failed,
        resources=resources,
    )  # fmt: skip
    return AuditLogin(
        login=login, store=AuditSessionStore(resources.pool), role=role, idle=ui.idle,
        lifetime=ui.lifetime, clock=resources.clock, realm=realm, keep_principal=keep_principal,
    )  # fmt: skip


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def render_page(
    request: web.Request,
    env: jinja2.Environment,
    name: str,
    *,
    status: int = 200,
    form_target: str | None = None,
    **context: Any,
) -> web.Response:
    """A page of any surface, with the security headers; ``form_target`` (a consent page):
    where the form's answer redirects, added to CSP ``form-action`` (CSP Level 3 §6.3.1)."""
    html = env.get_template(name).render(request_id=request.get(REQUEST_ID), **context)
    resp = web.Response(text=html, content_type="text/html", status=status)
    resp.headers.update(SECURITY_HEADERS)
    if form_target is not None:
        target = urlsplit(form_target)
        csp = SECURITY_HEADERS["Content-Security-Policy"]
        resp.headers["Content-Security-Policy"] = csp.replace(
            "form-action 'self'", f"form-action 'self' {target.scheme}://{target.netloc}"
        )
    return resp


@dataclass(frozen=True)
class Cookies:
    """Cookie names and flags: ``__Host-`` (Secure, Path=/, no Domain) when served over https
    (RFC 6265bis §4.1.3.2); always HttpOnly and SameSite=Lax, so the IdP's redirect back (a
    top-level GET) carries the flow cookie and cross-site POSTs carry nothing."""

    session: str
    flow: str
    secure: bool

    @classmethod
    def for_url(
        cls, public_url: str, session: str = "qes-audit-session", flow: str = "qes-audit-login"
    ) -> Cookies:
        """A surface's two cookies (the audit UI's by default), ``__Host-`` over https."""
        secure = public_url.startswith("https://")
        prefix = "__Host-" if secure else ""
        return cls(f"{prefix}{session}", f"{prefix}{flow}", secure)

    def put(self, resp: web.StreamResponse, name: str, value: str, max_age: int | None) -> None:
        resp.set_cookie(
            name,
            value,
            path="/",
            max_age=max_age,
            httponly=True,
            samesite="Lax",
            secure=self.secure,
        )

    def clear(self, resp: web.StreamResponse, name: str) -> None:
        self.put(resp, name, "", 0)


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Surface:
    """What the one ``base.html`` and ``error.html`` say for a surface: its name and label,
    home and login (UIs with sessions), logout form target, stylesheets, footer line."""

    name: str
    label: str
    stylesheets: tuple[str, ...]
    footer: str
    home: str | None = None
    login: str | None = None
    logout: str | None = None
    back_label: str = ""
    narrow: bool = False

    @classmethod
    def with_sessions(cls, realm: str, name: str, *, footer: str, back_label: str) -> Surface:
        """A UI with sessions under ``/{realm}``: its home, login, logout and stylesheet."""
        home = f"/{realm}"
        return cls(
            name=name, label=name, stylesheets=(f"{home}/static/audit.css",), footer=footer,
            home=home, login=f"{home}/login", logout=f"{home}/logout", back_label=back_label,
        )  # fmt: skip


#: The pages a person signs on: web signing and the CSC OAuth2 consent (static files under /sign).
SIGNING_PAGES = Surface(
    name="Sign",
    label="Signing",
    stylesheets=("/sign/static/base/audit.css", "/sign/static/sign.css"),
    footer="Your key is created for this request only, certified for 10 minutes and destroyed"
    " right after signing.",
    narrow=True,
)


def templates(surface: Surface, *folders: str) -> jinja2.Environment:
    """Autoescaped, strict templates: the surface's own ``folders`` first, then the one
    ``base.html`` / ``error.html`` of every surface (this package's ``templates/``)."""
    loaders = [jinja2.PackageLoader("signer", f) for f in (*folders, "http/browser/templates")]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["surface"] = surface
    env.filters["when"] = _when
    env.filters["hash_name"] = lambda name: name.upper().replace("SHA", "SHA-")
    return env


async def finish_login(
    request: web.Request,
    login: AuditLogin,
    cookies: Cookies,
    failed: Callable[[web.Request, Exception, UiSession | None], web.Response],
) -> tuple[web.StreamResponse, bool]:
    """RFC 6749 §4.1.2: the IdP's answer; code redeemed (§4.1.3), ID token verified (OIDC
    Core §3.1.3.7), role checked, session started. The flow is used up whatever happens.
    Shared by the audit and the approvals UI (``failed`` renders the UI's error page);
    returns the response and whether a session started."""
    q = request.query
    flow = request.cookies.get(cookies.flow)
    try:
        if "error" in q:
            await login.finish(flow, None, None)
        done = await login.finish(flow, q.get("state"), q.get("code"))
    except (SignerError, IdpError) as exc:
        resp = failed(request, exc, None)
        cookies.clear(resp, cookies.flow)
        return resp, False
    resp = web.Response(status=303, headers={"Location": done.return_to, **SECURITY_HEADERS})
    cookies.clear(resp, cookies.flow)
    cookies.put(resp, cookies.session, done.session_id, None)
    return resp, True


def failure(
    exc: Exception,
    messages: Mapping[type[SignerError], str],
    *,
    events: tuple[str, str],
    path: str,
    titled: bool = True,
) -> tuple[SignerError, str]:
    """What a surface's error page says about ``exc``: the public error and its fixed text
    (``messages``, else the error's title when ``titled``); details go only to the log, as
    ``events[0]`` for a bug and ``events[1]`` for a refusal."""
    mapped = translate(exc)
    if mapped is None:
        log.exception(events[0], path=path)
        err: SignerError = SignerError()
    else:
        err = mapped[0]
        level = "warning" if err.status < 500 else "error"
        getattr(log, level)(events[1], kind=err.slug, error=str(exc) or repr(exc))
    message = messages.get(type(err), UNEXPECTED)
    if titled and isinstance(err, RequestError) and type(err) not in messages:
        message = err.title + "."
    return err, message


def error_page_for(
    render: Callable[..., web.Response],
    messages: Mapping[type[SignerError], str],
    events: tuple[str, str],
) -> Callable[[web.Request, Exception, UiSession | None], web.Response]:
    """A UI's error page (``error.html`` through its ``render``): fixed text per kind, details
    only in the log (:func:`failure` with ``messages`` and ``events``)."""

    def error_page(request: web.Request, exc: Exception, session: UiSession | None) -> web.Response:
        err, message = failure(exc, messages, events=events, path=request.path)
        return render(
            request, "error.html", status=err.status, title=err.title, message=message,
            session=session,
        )  # fmt: skip

    return error_page


class SessionUi(Protocol):
    """What :func:`logged_in` needs of a UI on the app: its login and its cookies."""

    @property
    def login(self) -> AuditLogin: ...
    @property
    def cookies(self) -> Cookies: ...


UiT = TypeVar("UiT", bound=SessionUi)
Page = Callable[[web.Request], Awaitable[web.StreamResponse]]
SessionPage = Callable[[web.Request, UiT, UiSession], Awaitable[web.StreamResponse]]


def logged_in(
    key: web.AppKey[UiT], home: str, failed: ErrorPage, *, whole_path: bool = False,
    principal: bool = False, also: tuple[type[Exception], ...] = (),
) -> Callable[[SessionPage[UiT]], Page]:  # fmt: skip
    """A decorator for the pages of the UI at ``key``: the session of the browser's cookie,
    else a redirect (303) to ``{home}/login`` that comes back to this path (``whole_path``:
    with its query); with ``principal``, the session must hold the verified identity. A
    SignerError, an IdpError or one of ``also`` is answered with the ``failed`` page."""

    caught: tuple[type[Exception], ...] = (SignerError, IdpError, *also)

    def decorate(handler: SessionPage[UiT]) -> Page:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            ui = request.app[key]
            session = None
            try:
                session = await ui.login.session(request.cookies.get(ui.cookies.session))
                if session is None or (principal and session.principal is None):
                    back = request.path_qs if whole_path else request.path
                    raise web.HTTPSeeOther(f"{home}/login?{urlencode({'next': back})}")
                return await handler(request, ui, session)
            except caught as exc:
                return failed(request, exc, session)

        return wrapper

    return decorate


FLOW_COOKIE_SECONDS = 600  # a login flow lives 10 minutes (flows.login.FLOW_LIFETIME)
ErrorPage = Callable[[web.Request, Exception, UiSession | None], web.Response]
Render = Callable[..., web.Response]


def _return_to(wanted: str, home: str) -> str:
    """Only a path of this UI (no scheme, host, ``//`` or backslash): no open redirect."""
    ok = re.fullmatch(re.escape(home) + r"(?:[/?][^\\\s]*)?", wanted) and "//" not in wanted
    return wanted if ok else home


async def start_login(
    request: web.Request, login: AuditLogin, cookies: Cookies, home: str, failed: ErrorPage
) -> web.StreamResponse:
    """RFC 6749 §4.1.1 for a UI: a flow cookie for this browser, then off to the IdP; the
    browser comes back to the page it asked for (``next``, within ``home``)."""
    try:
        started = await login.begin(_return_to(request.query.get("next", home), home))
    except (SignerError, IdpError) as exc:
        return failed(request, exc, None)
    resp = web.Response(status=303, headers={"Location": started.redirect_url, **SECURITY_HEADERS})
    cookies.put(resp, cookies.flow, started.flow_id, FLOW_COOKIE_SECONDS)
    return resp


def csrf_ok(token: object, session: UiSession) -> bool:
    """A form's ``csrf`` field is this session's token (constant-time comparison)."""
    return isinstance(token, str) and hmac.compare_digest(
        token.encode(), session.csrf_token.encode()
    )


async def end_session(
    request: web.Request,
    login: AuditLogin,
    cookies: Cookies,
    home: str,
    failed: ErrorPage,
    render: Render,
) -> web.StreamResponse:
    """End a UI session; the form must carry the session's CSRF token."""
    session_id = request.cookies.get(cookies.session)
    token = (await read_form(request)).get("csrf")
    try:
        session = await login.session(session_id)
    except (SignerError, IdpError) as exc:
        return failed(request, exc, None)
    if session is not None and session_id:
        if not csrf_ok(token, session):
            message = (
                "The logout form was not issued by this session. Reload the page and try again."
            )
            return render(request, "error.html", status=403, title="Logout refused",
                          message=message, session=session)  # fmt: skip
        await login.logout(session_id)
    resp = web.Response(status=303, headers={"Location": f"{home}/logged-out", **SECURITY_HEADERS})
    cookies.clear(resp, cookies.session)
    return resp


@dataclass(frozen=True)
class SessionViews:
    """The login, IdP callback, logout and logged-out pages of a UI with sessions (audit,
    approvals): ``parts`` finds the UI's login and cookies on the app; ``event`` is logged
    when a login completes."""

    parts: Callable[[web.Application], tuple[AuditLogin, Cookies]]
    home: str
    failed: ErrorPage
    render: Render
    event: str

    async def login(self, request: web.Request) -> web.StreamResponse:
        login, cookies = self.parts(request.app)
        return await start_login(request, login, cookies, self.home, self.failed)

    async def callback(self, request: web.Request) -> web.StreamResponse:
        login, cookies = self.parts(request.app)
        resp, started = await finish_login(request, login, cookies, self.failed)
        if started:
            log.info(self.event)
        return resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        login, cookies = self.parts(request.app)
        return await end_session(request, login, cookies, self.home, self.failed, self.render)

    async def logged_out(self, request: web.Request) -> web.Response:
        return self.render(request, "logged_out.html", session=None)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """``{home}/login``, ``/callback``, ``/logout`` (POST), ``/logged-out`` and the shared
        ``/static`` files, under the UI's ``home``."""
        router.add_get(f"{self.home}/login", self.login)
        router.add_get(f"{self.home}/callback", self.callback)
        router.add_post(f"{self.home}/logout", self.logout)
        router.add_get(f"{self.home}/logged-out", self.logged_out)
        add_static(router, f"{self.home}/static", STATIC_DIR)
