"""The one consent page, for web signing (``/sign/{id}/consent``) and the CSC OAuth2
credential flow (``/csc/v2/oauth2/consent/{id}``): what will be signed, in whose name, for
whom; then Sign (Authorise) or Cancel, a form bound to the consent session's CSRF token.

Each surface only fills a :class:`ConsentPage`: its flow has already checked who is logged in
(the expected signer, or the credential's owner). The consent POST is answered by a redirect
to the relying party, so :func:`consent_response` lets the page's form go there (CSP
``form-action``, through :func:`signer.http.browser.render_page`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import jinja2
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID
from markupsafe import Markup

from idp_adapter.errors import IdpError
from signer.errors import SignerError
from signer.http.browser import render_page
from signer.http.kit.body import read_form

__all__ = [
    "ConsentPage",
    "Detail",
    "Row",
    "consent_response",
    "decision",
    "hash_label",
    "render_page",
    "subject_rows",
]

V = TypeVar("V")

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


def subject_rows(name: x509.Name, emails: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The certificate subject as the page lists it, then its e-mail addresses."""
    rows = [(_NAME_FIELDS.get(a.oid, a.oid.dotted_string), str(a.value)) for a in name]
    return rows + [("E-mail", email) for email in emails]


def hash_label(name: str) -> str:
    """``sha256`` as people read it: ``SHA-256``."""
    return name.upper().replace("SHA", "SHA-")


@dataclass(frozen=True)
class Row:
    """One value to be signed: its hex, a second line, and (web signing) its document."""

    hexdigest: str
    note: str | None = None
    label: str | None = None
    link: str | None = None


@dataclass(frozen=True)
class Detail:
    label: str
    value: str
    id: str | None = None
    mono: bool = False


@dataclass(frozen=True)
class ConsentPage:
    """Everything the consent page shows; ``lead``, ``statement`` and ``note`` are markup
    built with :class:`markupsafe.Markup` (their values escaped)."""

    title: str
    heading: str
    lead: Markup
    table_id: str
    table_title: str
    caption: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    subject: list[tuple[str, str]]
    details_id: str
    details_title: str
    details: tuple[Detail, ...]
    rp_name: str
    redirect_uri: str
    signer: Any
    expires: tuple[str, datetime]
    action: str
    csrf_token: str
    statement: Markup
    button: str
    note: Markup | None = None

    @property
    def return_host(self) -> str:
        return urlsplit(self.redirect_uri).netloc


async def decision(request: web.Request) -> tuple[str | None, str]:
    """The consent form's CSRF token (None: absent) and choice (``sign``, ``cancel``; the
    flow refuses anything else)."""
    form = await read_form(request)
    csrf, choice = form.get("csrf"), form.get("decision")
    return (csrf if isinstance(csrf, str) else None), (choice if isinstance(choice, str) else "")


async def consent_response(
    request: web.Request,
    env: jinja2.Environment,
    view: Callable[[], Awaitable[V]],
    page: Callable[[V], ConsentPage],
    error_page: Callable[[web.Request, Exception], web.Response],
) -> web.Response:
    """The consent page of what the flow's ``view`` returns, as the surface's ``page`` fills
    it, or its ``error_page`` when the flow refuses (no such request, no login, not the
    expected person, the request ended, the IdP unreachable)."""
    try:
        shown = await view()
    except (SignerError, IdpError) as exc:
        return error_page(request, exc)
    consent = page(shown)
    return render_page(
        request,
        env,
        "consent.html",
        form_target=consent.redirect_uri,
        page=consent,
        signer=consent.signer,
    )
