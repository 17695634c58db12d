"""IssuerSettings validation: every bad value stops the start with a message naming it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from idp_adapter import ConfigError, IssuerSettings


def make(**overrides: Any) -> IssuerSettings:
    values: dict[str, Any] = {
        "name": "corp",
        "issuer": "https://idp.example.com",
        "audience": "urn:qes-signer",
        "subject_type": "natural",
        "subject": {"common_name": "{name}", "country": "DE", "serial_number": "PNODE-{sub}"},
        "profiles": ("qes", "advanced"),
        "default_profile": "qes",
    }
    values.update(overrides)
    return IssuerSettings(**values)


def test_valid_settings_are_frozen_and_compiled() -> None:
    s = make(required_claims={"email_verified": True}, profiles=["qes"])
    assert s.profiles == ("qes",)
    assert s.algorithms == ("ES256", "ES384", "RS256", "PS256", "EdDSA")
    assert set(s.templates) == {"common_name", "country", "serial_number"}
    with pytest.raises(TypeError):
        s.subject["x"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        s.required_claims["x"] = 1  # type: ignore[index]


def test_loopback_http_is_allowed_for_development() -> None:
    assert make(issuer="http://127.0.0.1:9400").issuer == "http://127.0.0.1:9400"
    assert make(jwks_uri="http://localhost:9400/jwks").jwks_uri


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"name": ""}, "name"),
        ({"name": "a b"}, "name"),
        ({"issuer": "http://idp.example.com"}, "issuer must use https"),
        ({"issuer": "https://idp.example.com/?x=1"}, "issuer"),
        ({"issuer": "https://idp.example.com/#f"}, "issuer"),
        ({"issuer": "idp.example.com"}, "issuer"),
        ({"jwks_uri": "http://evil.example/jwks"}, "jwks_uri"),
        ({"audience": ""}, "audience"),
        ({"subject_type": "robot"}, "subject_type"),
        ({"subject": {}}, "subject"),
        ({"subject": {"Common Name": "{name}"}}, "subject field"),
        ({"subject": {"common_name": "{name"}}, "subject.common_name"),
        ({"subject": {"common_name": "{0}"}}, "subject.common_name"),
        ({"subject": {"common_name": "{name!r}"}}, "subject.common_name"),
        ({"subject": {"common_name": 5}}, "subject.common_name"),
        ({"profiles": ()}, "profiles"),
        ({"profiles": ("gold",)}, "profiles"),
        ({"profiles": ("qes", "qes")}, "profiles"),
        ({"default_profile": "qualified"}, "default_profile"),
        ({"algorithms": ("none",)}, "never allowed"),
        ({"algorithms": ("ES256", "HS256")}, "never allowed"),
        ({"algorithms": ("ES256K",)}, "not supported"),
        ({"algorithms": ()}, "algorithms"),
        ({"leeway": timedelta(seconds=-1)}, "leeway"),
        ({"leeway": timedelta(minutes=10)}, "leeway"),
        ({"required_claims": {"email_verified": 1.5}}, "required_claims.email_verified"),
        ({"required_claims": {"bad key": True}}, "required_claims"),
        ({"roles_claim": ""}, "roles_claim"),
        ({"require_jti": "yes"}, "require_jti"),
    ],
)
def test_invalid_settings_name_the_setting(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(**overrides)
    assert str(info.value).startswith("issuers.")
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
