"""Handlers of the audit UI: parse, call the service, render HTML (or stream an export).

Every page but login, callback and logged-out needs a live session; without one the browser is
sent to the login. GETs change nothing but the session's last-seen time; the one POST (logout)
carries the session's CSRF token. Failures render an HTML page, never a stack trace or token.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
import structlog
from aiohttp import web
from cryptography import x509

from signer.errors import RequestError, SignerError
from signer.flows.login import AuditLogin, LoginFailed, NotAnAuditor
from signer.http.audit import export as exports
from signer.http.audit.query import STATUSES, FormError, Search, parse_search, parse_time
from signer.http.browser import (
    Cookies,
    SessionViews,
    error_page_for,
    logged_in,
    render_page,
)
from signer.http.kit.query import count
from signer.http.kit.records import decode_cursor, email_notice, encode_cursor
from signer.http.kit.state import SERVICES, Services
from signer.signing.timestamping import gen_time
from signer.storage.audit_sessions import UiSession
from signer.storage.policy import AdminAction, PolicyStore, Suspension
from signer.storage.records import RecordStore, SigningRecord
from signer.translog.log import EntryFilter, describe_entry, subject_index

log = structlog.get_logger(__name__)
PAGE_SIZE = 50
_SERIAL = re.compile(r"^[0-9a-f]{1,64}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class AuditUi:
    login: AuditLogin
    records: RecordStore
    templates: jinja2.Environment
    cookies: Cookies
    clock: Callable[[], datetime]
    actions: PolicyStore


AUDIT_UI = web.AppKey("audit_ui", AuditUi)


def render(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
    context.setdefault("suspensions", _suspensions(request))
    return render_page(request, request.app[AUDIT_UI].templates, name, status=status, **context)


def _suspensions(request: web.Request) -> tuple[Suspension, ...]:
    """What the kill switch suspends now (this process's in-memory copy: no I/O)."""
    services = request.app.get(SERVICES)
    gate = None if services is None else services.signing.gate
    return () if gate is None else gate.suspensions.current.items


_MESSAGES: Mapping[type[SignerError], str] = {
    LoginFailed: "The login could not be completed: it expired, was already used, or was not"
    " started in this browser. Please log in again.",
    NotAnAuditor: "You are logged in, but your account does not have the auditor role, so it"
    " cannot see the signing records. Ask your identity administrator for the role.",
}


_failure_page = error_page_for(render, _MESSAGES, ("audit_ui_error", "audit_ui_failed"))


def error_page(request: web.Request, exc: Exception, session: UiSession | None) -> web.Response:
    """An HTML page for a failure: a search form's own message (400), else fixed text per
    kind, details only in the log."""
    if isinstance(exc, FormError):
        return render(
            request, "error.html", status=400, title="Invalid request", message=str(exc),
            session=session,
        )  # fmt: skip
    return _failure_page(request, exc, session)


#: Resolve the session cookie or send the browser to the login, then run the page.
authenticated = logged_in(AUDIT_UI, "/audit", error_page, whole_path=True, also=(FormError,))


@authenticated
async def search_page(request: web.Request, ui: AuditUi, session: UiSession) -> web.Response:
    context: dict[str, Any] = {
        "session": session,
        "statuses": STATUSES,
        "error": None,
        "email_notice": None,
        "refusals": None,
    }
    try:
        search = parse_search(request.query)
        cursor = request.query.get("cursor")
        if search.filter.status == "refused":
            return await _refusals_page(request, search, cursor, context)
        after = decode_cursor(cursor) if cursor else None
    except (FormError, RequestError) as exc:
        values = {k: v for k, v in request.query.items() if k != "cursor"}
        context.update(
            values=values,
            rows=None,
            error=str(exc) if isinstance(exc, FormError) else "The page link is invalid.",
        )
        return render(request, "search.html", status=400, **context)
    rows = await ui.records.search(search.filter, limit=PAGE_SIZE + 1, after=after)
    page = rows[:PAGE_SIZE]
    as_of = ui.clock().isoformat()
    if search.filter.email is not None and (before := await ui.records.emails_unknown_before()):
        context["email_notice"] = email_notice(before)
    context.update(
        values=search.values,
        rows=page,
        next_query=search.query(cursor=encode_cursor(page[-1])) if len(rows) > PAGE_SIZE else None,
        first_query=search.query() if cursor else None,
        export_query=search.query(as_of=as_of),
    )
    return render(request, "search.html", **context)


async def _refusals_page(
    request: web.Request, search: Search, cursor: str | None, context: dict[str, Any]
) -> web.Response:
    """Outcome "refused": refusal entries of the log, newest first (they have no record). By
    identity through the subject index (every configured issuer), and by time."""
    if cursor is not None and count(cursor, 2**62) is None:
        raise RequestError("invalid refusal cursor")
    services: Services = request.app[SERVICES]
    flt = search.filter
    keys = None
    if flt.subject is not None:
        issuers = sorted({i.issuer for i in services.settings.issuers})
        keys = [subject_index(services.privacy_key, iss, flt.subject) for iss in issuers]
    entries = await services.log.refusals(
        subject_keys=keys,
        since=flt.since,
        until=flt.until,
        before=int(cursor) if cursor else None,
        limit=PAGE_SIZE + 1,
    )
    page = entries[:PAGE_SIZE]
    wanted = EntryFilter(subject=flt.subject)
    context.update(
        values=search.values,
        rows=None,
        refusals=[d for e in page if (d := describe_entry(e, services.privacy_key, wanted))],
        next_query=search.query(cursor=str(page[-1].idx)) if len(entries) > PAGE_SIZE else None,
        first_query=search.query() if cursor else None,
        export_query=None,
    )
    return render(request, "search.html", **context)


# What a sole-control key shows (signer.keys.types.KeyEvidence.acceptable): these two are false.
_EXPECTED_FALSE = frozenset({"extractable", "token"})


def _detail(rec: SigningRecord) -> dict[str, Any]:
    cert = x509.load_der_x509_certificate(rec.certificate_der)
    return {
        "rec": rec,
        "cert_subject": cert.subject.rfc4514_string(),
        "cert_issuer": cert.issuer.rfc4514_string(),
        "cert_serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "evidence": [
            (name, value, value is (name not in _EXPECTED_FALSE))
            for name, value in sorted(rec.key_evidence.items())
        ],
        "digests": [d.hex() for d in rec.digests],
        "gen_times": [gen_time(t) for t in rec.time_stamps],
        "key_destroyed": bool(rec.destruction and rec.destruction.get("confirmed_absent")),
        # abandoned after a crash (signer.signing.sweeper): gone with its HSM session
        "ended_with_session": bool(rec.destruction and rec.destruction.get("ended_with_session")),
    }


@authenticated
async def detail_page(request: web.Request, ui: AuditUi, session: UiSession) -> web.Response:
    serial = request.match_info["serial"].lower()
    rec = await ui.records.get(serial) if _SERIAL.match(serial) else None
    if rec is None or rec.purged:  # a tombstone has no certificate or identity left to show
        return render(request, "not_found.html", status=404, session=session, serial=serial)
    return render(request, "detail.html", session=session, **_detail(rec))


def _action_cursor(text: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The Administration page's cursor: ``<acted_at in µs since 1970>_<action id>`` of the
    last row of the page before."""
    if text is None:
        return None
    when, _, ident = text.partition("_")
    micros = count(when, 2**62)
    try:
        action_id = uuid.UUID(ident)
    except ValueError:
        action_id = None
    if micros is None or action_id is None:
        raise RequestError("invalid administration cursor")
    return _EPOCH + timedelta(microseconds=micros), action_id


def _next_cursor(last: AdminAction) -> str:
    return f"{(last.acted_at - _EPOCH) // timedelta(microseconds=1)}_{last.id}"


@authenticated
async def administration_page(
    request: web.Request, ui: AuditUi, session: UiSession
) -> web.Response:
    """Administration: every admin act (suspensions, RP client changes, CA certificates
    revoked or replaced, policy files that took effect), newest first, from the rows
    ``qes audit verify`` rebuilds their log entries from (ETSI EN 319 401 §7.10)."""
    try:
        before = _action_cursor(request.query.get("cursor"))
    except RequestError as exc:
        return error_page(request, FormError(str(exc)), session)
    rows: list[AdminAction] = await ui.actions.recent_actions(before=before, limit=PAGE_SIZE + 1)
    page = rows[:PAGE_SIZE]
    last = page[-1] if len(rows) > PAGE_SIZE else None
    return render(
        request,
        "administration.html",
        session=session,
        actions=page,
        next_cursor=None if last is None else _next_cursor(last),
        first=before is not None,
    )


def _export_args(request: web.Request, ui: AuditUi) -> tuple[str, Search, datetime]:
    search = parse_search(request.query)
    as_of_text = request.query.get("as_of")
    as_of = parse_time("as_of", as_of_text) if as_of_text else ui.clock()
    return request.match_info["fmt"], search, as_of


def _download_name(as_of: datetime, suffix: str) -> str:
    return f"qes-audit-{as_of.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.{suffix}"


@authenticated
async def export(request: web.Request, ui: AuditUi, session: UiSession) -> web.StreamResponse:
    """The whole search (every page), streamed: JSON Lines or CSV."""
    fmt, search, as_of = _export_args(request, ui)
    resp = web.StreamResponse(
        headers={
            "Content-Type": f"{exports.FORMATS[fmt]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{_download_name(as_of, fmt)}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await resp.prepare(request)
    async for chunk in exports.chunks(ui.records, exports.pinned(search.filter, as_of), fmt):
        await resp.write(chunk)
    await resp.write_eof()
    log.info("audit_export", format=fmt, subject=session.token_subject, filters=search.values)
    return resp


@authenticated
async def export_manifest(request: web.Request, ui: AuditUi, session: UiSession) -> web.Response:
    """The manifest of the export with the same query: its SHA-256, rows, filters, as_of and
    the log checkpoint (published now, so it covers every record finished so far), signed by
    the log key (``signed_note``, :mod:`signer.translog.manifest`)."""
    fmt, search, as_of = _export_args(request, ui)
    services: Services = request.app[SERVICES]
    checkpoint = await services.publisher.publish(force=True)
    checkpoint = checkpoint or await services.log.latest_checkpoint()
    body = await exports.signed_manifest(
        await exports.manifest(
            ui.records,
            exports.pinned(search.filter, as_of),
            fmt,
            query=search.values,
            as_of=as_of,
            now=ui.clock(),
            checkpoint=checkpoint,
        ),
        exported_by={"issuer": session.token_issuer, "subject": session.token_subject},
        origin=services.settings.log.origin,
        sign=services.publisher.sign_note,
    )
    name = _download_name(as_of, f"{fmt}.manifest.json")
    return web.Response(
        text=json.dumps(body, indent=2) + "\n",
        content_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


def _parts(app: web.Application) -> tuple[AuditLogin, Cookies]:
    ui = app[AUDIT_UI]
    return ui.login, ui.cookies


SESSION = SessionViews(_parts, "/audit", error_page, render, "audit_login")
