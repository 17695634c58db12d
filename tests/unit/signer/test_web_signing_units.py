"""Web signing (issue 4) values that need no service: configuration, redirect URIs, the
redirect back to the relying party."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest

from signer.errors import ConfigError
from signer.flows.registry import RegistryError, check_redirect_uri
from signer.flows.websign import back_to_rp
from signer.settings.config import load_settings
from signer.storage.signing_requests import StoredRequest
from tests.support.service import DEV_CONFIG

BASE = {
    "QES_HSM_PIN": "1234",
    "QES__WEB_SIGNING__CLIENT_ID": "demo-signer-web",
    "QES__WEB_SIGNING__ISSUER": "demo_people",
    "QES_WEB_SIGNING_CLIENT_SECRET": "s3cret",
}


def test_web_signing_is_off_unless_configured() -> None:
    assert load_settings(DEV_CONFIG, env={"QES_HSM_PIN": "1"}).web_signing is None
    web = load_settings(DEV_CONFIG, env={**BASE, "QES__WEB_SIGNING__ACR_LEVELS": '["a", "b"]'})
    assert web.web_signing is not None
    assert web.web_signing.acr_levels == ("a", "b")
    assert web.web_signing.request_lifetime == timedelta(minutes=15)
    assert "s3cret" not in repr(web.web_signing)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"QES_WEB_SIGNING_CLIENT_SECRET": ""}, "web_signing.client_secret"),
        ({"QES__WEB_SIGNING__ISSUER": "nope"}, "web_signing.issuer"),
        ({"QES__WEB_SIGNING__ACR_LEVELS": '["a", "a"]'}, "web_signing.acr_levels"),
        ({"QES__WEB_SIGNING__ACR_LEVELS": '["a", 1]'}, "web_signing.acr_levels"),
        ({"QES__WEB_SIGNING__REQUEST_MINUTES": "0"}, "web_signing.request_minutes"),
        ({"QES__WEB_SIGNING__MAX_AGE_SECONDS": "5"}, "web_signing.max_age_seconds"),
        ({"QES__WEB_SIGNING__CLIENT_SECRET": '"inline"'}, "web_signing.client_secret"),
        ({"QES__WEB_SIGNING__TYPO": "1"}, "web_signing.typo"),
    ],
)
def test_bad_web_signing_settings_name_the_key(override: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(DEV_CONFIG, env={**BASE, **override})


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.com/signed",
        "https://app.example.com/cb?tenant=7",
        "http://127.0.0.1:8080/cb",
        "http://localhost/cb",
    ],
)
def test_good_redirect_uris(uri: str) -> None:
    assert check_redirect_uri(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example.com/cb",  # plain http off loopback
        "https://app.example.com/cb#x",
        "https://app.example.com/cb#",
        "/relative",
        "javascript:alert(1)",
        "https://app.example.com/c b",
        "ftp://app.example.com/",
    ],
)
def test_bad_redirect_uris(uri: str) -> None:
    with pytest.raises(RegistryError):
        check_redirect_uri(uri)


def _request(redirect_uri: str, state: str) -> StoredRequest:
    now = datetime.now(UTC)
    return StoredRequest(
        id=uuid.uuid4(),
        client_id="rp-1",
        format="raw",
        profile=None,
        hash_algorithm="sha256",
        labels=("a",),
        digests=(b"\0" * 32,),
        redirect_uri=redirect_uri,
        state=state,
        acr=None,
        acr_accepted=None,
        expected_subject=None,
        expected_email=None,
        created_at=now,
        expires_at=now,
        status="pending",
        ended_at=None,
        signer_subject=None,
        record_serial=None,
        result=None,
        error=None,
    )


def test_back_to_rp_keeps_the_query_and_encodes_state() -> None:
    req = _request("https://app.example.com/cb?tenant=7", "a&b=c d")
    url = back_to_rp(req, id="42")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "app.example.com", "/cb")
    assert parse_qsl(parts.query) == [("tenant", "7"), ("id", "42"), ("state", "a&b=c d")]
    denied = back_to_rp(req, error="access_denied")
    assert parse_qsl(urlsplit(denied).query)[1] == ("error", "access_denied")


@pytest.mark.parametrize(
    ("claims", "email"),
    [
        ({"email": "a@example.com", "email_verified": True}, "a@example.com"),
        ({"email": "a@example.com", "email_verified": False}, None),
        ({"email": "a@example.com", "email_verified": "true"}, None),
        ({"email": "a@example.com"}, None),
        ({"email_verified": True}, None),
    ],
)
def test_only_a_verified_email_identifies_the_signer(
    claims: dict[str, object], email: str | None
) -> None:
    from idp_adapter import IssuerSettings
    from idp_adapter._mapping import build_principal

    settings = IssuerSettings(
        name="people",
        issuer="https://idp.example.com",
        audience="urn:x",
        subject_type="natural",
        subject={"common_name": "{sub}", "surname": "{sub}", "country": "DE"},
        profiles=("advanced",),
        default_profile="advanced",
    )
    full = {"iss": "https://idp.example.com", "sub": "alice", **claims}
    principal = build_principal(settings, full, datetime.now(UTC))
    assert principal.email == email
