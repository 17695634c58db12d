"""The CSC v2 OAuth2 flow's pure parts: PKCE, the ``hashes`` parameter, client credentials,
redirect URIs. Checked against the RFCs' own examples where they have one."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from signer.flows.csc_oauth2 import TokenError, _basic, _Invalid, parse_hashes, s256, with_query
from signer.http.csc.oauth2_views import info_fields, metadata_for


def test_s256_matches_the_rfc_7636_appendix_b_example() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_hashes_are_base64url_separated_by_commas() -> None:
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    text = ",".join(base64.urlsafe_b64encode(h).rstrip(b"=").decode() for h in (a, b))
    assert parse_hashes(text, 32) == (a, b)
    padded = base64.urlsafe_b64encode(a).decode()  # with '=' padding: accepted too
    assert parse_hashes(padded, 32) == (a,)


@pytest.mark.parametrize(
    "text",
    [
        "",  # nothing
        base64.b64encode(b"\xfb" * 32).decode(),  # standard base64 ('+', '/') is not base64url
        base64.urlsafe_b64encode(b"x" * 31).decode(),  # wrong length for SHA-256
        base64.urlsafe_b64encode(b"x" * 32).decode() + ",",  # empty second value
        "a b",
    ],
)
def test_bad_hashes_are_refused(text: str) -> None:
    with pytest.raises(_Invalid) as err:
        parse_hashes(text, 32)
    assert err.value.error == "invalid_request"


def test_redirect_keeps_the_clients_own_query() -> None:
    url = with_query("https://app.example.com/cb?tenant=7", {"code": "c", "state": None})
    parts = urlsplit(url)
    assert parts.netloc == "app.example.com" and parts.path == "/cb"
    assert parse_qs(parts.query) == {"tenant": ["7"], "code": ["c"]}


def test_basic_credentials_are_form_urlencoded_first() -> None:
    """RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding."""
    raw = base64.b64encode(b"rp-1%3Ax:s%2Bcret+two").decode()
    assert _basic(f"Basic {raw}") == ("rp-1:x", "s+cret two")
    assert _basic(None) is None and _basic("Bearer abc") is None
    with pytest.raises(TokenError) as err:
        _basic("Basic !!!")
    assert (err.value.error, err.value.status) == ("invalid_client", 401)


def test_metadata_and_info_name_the_same_issuer() -> None:
    meta = metadata_for("https://signer.example.com")
    info = info_fields("https://signer.example.com")
    assert meta["issuer"] == info["oauth2Issuer"] == "https://signer.example.com/csc/v2"
    # CSC API v1 §11.1: clients append /oauth2/authorize (and /oauth2/token) to ``oauth2``.
    assert meta["authorization_endpoint"] == info["oauth2"] + "/oauth2/authorize"
    assert meta["token_endpoint"] == info["oauth2"] + "/oauth2/token"
    assert meta["code_challenge_methods_supported"] == ["S256"]


def test_credential_acr_must_be_one_of_the_acr_levels() -> None:
    from signer.errors import ConfigError
    from signer.settings.config import load_settings
    from tests.support.service import DEV_CONFIG

    env = {
        "QES_HSM_PIN": "1",
        "QES__WEB_SIGNING__CLIENT_ID": "demo-signer-web",
        "QES__WEB_SIGNING__ISSUER": "demo_people",
        "QES_WEB_SIGNING_CLIENT_SECRET": "s3cret",
        "QES__WEB_SIGNING__ACR_LEVELS": '["a", "b"]',
    }
    web = load_settings(DEV_CONFIG, env={**env, "QES__WEB_SIGNING__CREDENTIAL_ACR": "b"})
    assert web.web_signing is not None and web.web_signing.credential_acr == "b"
    with pytest.raises(ConfigError, match=r"web_signing\.credential_acr"):
        load_settings(DEV_CONFIG, env={**env, "QES__WEB_SIGNING__CREDENTIAL_ACR": "c"})
