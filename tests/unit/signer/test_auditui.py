"""The audit UI's pure parts: search-form parsing, CSV cells, PKCE, cookies and settings."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest

from idp_adapter.codeflow import s256_challenge
from signer.errors import ConfigError
from signer.http.audit.export import csv_row, pinned
from signer.http.audit.query import FormError, parse_digest, parse_search
from signer.http.browser import Cookies
from signer.settings.config import load_settings
from signer.storage.records import RecordFilter, _like_escape
from tests.support.service import DEV_CONFIG

ENV = {"QES_HSM_PIN": "1234"}
UI = {"QES__AUDIT__UI_CLIENT_ID": "demo-audit-ui", "QES__AUDIT__UI_ISSUER": "demo_people"}


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    with pytest.raises(ValueError):
        s256_challenge("too-short")


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted() -> None:
    row = csv_row(["=1+1", "+x", "-2", "@SUM(A1)", "\tcmd", "plain", None, 3, "a,b"])
    assert row == b"'=1+1,'+x,'-2,'@SUM(A1),'\tcmd,plain,,3,\"a,b\"\r\n"


def test_digests_are_read_as_hex_or_base64() -> None:
    raw = hashlib.sha384(b"x").digest()
    assert parse_digest(raw.hex()) == raw
    assert parse_digest(raw.hex().upper()) == raw
    assert parse_digest(base64.b64encode(raw).decode()) == raw
    assert parse_digest(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    for bad in ("abcd", "not a digest", base64.b64encode(b"short").decode()):
        with pytest.raises(FormError, match="Digest"):
            parse_digest(bad)


def test_search_form_values_become_a_filter() -> None:
    s = parse_search(
        {
            "subject": " alice ",
            "serial": "0ABC",
            "status": "failed",
            "since": "2026-01-31T14:30",
            "until": "2026-02-01T00:00:00+01:00",
            "dn": "",
        }
    )
    assert s.values == {
        "subject": "alice",
        "serial": "0ABC",
        "status": "failed",
        "since": "2026-01-31T14:30",
        "until": "2026-02-01T00:00:00+01:00",
    }
    f = s.filter
    assert (f.subject, f.serial, f.status, f.subject_dn_contains) == (
        "alice",
        "0abc",
        "failed",
        None,
    )
    assert f.since == datetime(2026, 1, 31, 14, 30, tzinfo=UTC)
    assert f.until is not None and f.until.utcoffset() is not None
    assert "subject=alice" in s.query(cursor="c")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "done"}, "Outcome"),
        ({"serial": "xyz"}, "Serial"),
        ({"since": "yesterday"}, "From"),
        ({"since": "2026-01-02T00:00", "until": "2026-01-01T00:00"}, "Until"),
        ({"status": "refused", "client_id": "app"}, "Outcome refused"),
    ],
)
def test_bad_search_values_name_the_field(query: dict[str, str], field: str) -> None:
    with pytest.raises(FormError, match=field):
        parse_search(query)


def test_an_export_is_pinned_to_its_as_of_time() -> None:
    as_of = datetime(2026, 1, 1, tzinfo=UTC)
    assert pinned(RecordFilter(), as_of).until == as_of
    earlier = datetime(2025, 1, 1, tzinfo=UTC)
    assert pinned(RecordFilter(until=earlier), as_of).until == earlier


def test_like_patterns_match_literally() -> None:
    assert _like_escape(r"50%_a\b") == r"50\%\_a\\b"


def test_cookies_use_the_host_prefix_over_https() -> None:
    https = Cookies.for_url("https://signer.example")
    assert https.secure and https.session.startswith("__Host-") and https.flow.startswith("__Host-")
    http = Cookies.for_url("http://127.0.0.1:8780")
    assert not http.secure and not http.session.startswith("__Host-")


def test_audit_ui_settings() -> None:
    s = load_settings(DEV_CONFIG, env={**ENV, **UI, "QES_AUDIT_UI_CLIENT_SECRET": "s3cret"})
    ui = s.audit.ui
    assert ui is not None and ui.client_id == "demo-audit-ui" and ui.issuer == "demo_people"
    assert ui.client_secret.reveal() == "s3cret" and "s3cret" not in repr(s)
    assert "openid" in ui.scope.split() and ui.idle.total_seconds() == 1800
    assert load_settings(DEV_CONFIG, env=ENV).audit.ui is None


def test_audit_ui_settings_refuse_a_missing_secret_or_unknown_issuer() -> None:
    with pytest.raises(ConfigError, match=r"audit\.ui_client_secret"):
        load_settings(DEV_CONFIG, env={**ENV, **UI})
    env = {**ENV, **UI, "QES_AUDIT_UI_CLIENT_SECRET": "x", "QES__AUDIT__UI_ISSUER": "nobody"}
    with pytest.raises(ConfigError, match=r"audit\.ui_issuer"):
        load_settings(DEV_CONFIG, env=env)
    env = {**ENV, **UI, "QES_AUDIT_UI_CLIENT_SECRET": "x", "QES__AUDIT__UI_IDLE_MINUTES": "0"}
    with pytest.raises(ConfigError, match=r"audit\.ui_idle_minutes"):
        load_settings(DEV_CONFIG, env=env)


def test_refused_requests_are_searched_by_identity_and_time() -> None:
    s = parse_search({"status": "refused", "subject": "alice", "since": "2026-01-31T14:30"})
    assert s.filter.status == "refused" and s.filter.subject == "alice"
