"""Subject templates and claim mapping, without any network."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from idp_adapter import IdentityNotAllowed, InvalidToken, IssuerSettings
from idp_adapter._claims import Template, lookup
from idp_adapter._jwks import algorithms_for, max_age
from idp_adapter._mapping import build_principal

CLAIMS: dict[str, Any] = {
    "iss": "https://idp.example.com",
    "sub": "4711",
    "name": "Erika Mustermann",
    "address": {"country": "DE"},
    "birth": 1964,
    "flag": True,
    "roles": ["signer", "qes-auditor"],
}


def test_literals_and_placeholders_render() -> None:
    t = Template.compile("PNODE-{sub}/{address.country}:{birth}")
    assert t.claims == ("sub", "address.country", "birth")
    assert t.render(CLAIMS) == "PNODE-4711/DE:1964"
    assert Template.compile("DE").render({}) == "DE"


def test_claim_values_are_never_interpreted() -> None:
    claims = {"name": "{sub} {0.__class__} %s"}
    assert Template.compile("{name}").render(claims) == "{sub} {0.__class__} %s"
    # a dotted path only walks JSON objects, never Python attributes
    with pytest.raises(IdentityNotAllowed, match=r"'name\.__class__'"):
        Template.compile("{name.__class__}").render(claims)


@pytest.mark.parametrize("source", ["", "{", "}", "a{b", "{}", "{a..b}", "{a:b}", "{0}", "{{a}}"])
def test_bad_templates_are_refused(source: str) -> None:
    with pytest.raises(ValueError):
        Template.compile(source)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({}, "'name' is required"),
        ({"name": ""}, "'name' is required"),
        ({"name": True}, "string or an integer"),
        ({"name": 1.5}, "string or an integer"),
        ({"name": ["a"]}, "string or an integer"),
        ({"name": {"a": 1}}, "string or an integer"),
        ({"name": "a\nCN=evil"}, "control characters"),
    ],
)
def test_unusable_claims_name_the_claim(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(IdentityNotAllowed, match=message):
        Template.compile("{name}").render(claims)


def test_lookup_walks_objects_only() -> None:
    assert lookup(CLAIMS, "address.country") == "DE"
    assert lookup({"a": "xyz"}, "a.upper") is not None  # a string has no members: MISSING
    assert repr(lookup({"a": "xyz"}, "a.upper")) == "MISSING"


def settings(**overrides: Any) -> IssuerSettings:
    values: dict[str, Any] = {
        "name": "corp",
        "issuer": "https://idp.example.com",
        "audience": "urn:qes-signer",
        "subject_type": "natural",
        "subject": {"common_name": "{name}", "country": "{address.country}"},
        "profiles": ("qes",),
        "default_profile": "qes",
    }
    values.update(overrides)
    return IssuerSettings(**values)


EXP = datetime(2030, 1, 1, tzinfo=UTC)


def test_principal_from_claims() -> None:
    granting = settings(grants_roles=["signer", "qes-auditor", "a", "b"])
    p = build_principal(granting, {**CLAIMS, "azp": "web", "amr": ["pwd"], "acr": "x"}, EXP)
    assert dict(p.attributes) == {"common_name": "Erika Mustermann", "country": "DE"}
    assert p.roles == {"signer", "qes-auditor"}
    assert (p.client_id, p.acr, p.amr, p.subject) == ("web", "x", ("pwd",), "4711")
    by_scope = settings(roles_claim="scope", grants_roles=["a", "b"])
    space = build_principal(by_scope, {**CLAIMS, "scope": "a b"}, EXP)
    assert space.roles == {"a", "b"}


def test_required_claims_match_exactly_with_type() -> None:
    s = settings(required_claims={"flag": True, "birth": 1964})
    assert build_principal(s, CLAIMS, EXP).subject == "4711"
    with pytest.raises(IdentityNotAllowed, match="'flag'"):
        build_principal(s, {**CLAIMS, "flag": 1}, EXP)
    with pytest.raises(IdentityNotAllowed, match="'birth'"):
        build_principal(s, {**CLAIMS, "birth": "1964"}, EXP)


def test_bad_optional_claims() -> None:
    with pytest.raises(IdentityNotAllowed, match="'roles'"):
        build_principal(settings(), {**CLAIMS, "roles": [1]}, EXP)
    with pytest.raises(InvalidToken) as info:
        build_principal(settings(), {**CLAIMS, "amr": "pwd"}, EXP)
    assert info.value.reason == "malformed"


def test_key_algorithms_follow_kty_and_crv() -> None:
    assert algorithms_for({"kty": "EC", "crv": "P-256"}) == {"ES256"}
    assert algorithms_for({"kty": "EC", "crv": "P-256", "alg": "ES384"}) == set()
    assert algorithms_for({"kty": "oct", "k": "c2VjcmV0"}) == set()
    assert "PS256" in algorithms_for({"kty": "RSA"})
    assert algorithms_for({"kty": "OKP", "crv": "Ed25519"}) == {"EdDSA", "Ed25519"}


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 300),
        ("public, max-age=600", 600),
        ("max-age=5", 30),
        ("max-age=999999999", 86400),
        ("no-store", 30),
        ("private", 300),
    ],
)
def test_cache_control_max_age_is_clamped(header: str | None, seconds: int) -> None:
    assert max_age(header).total_seconds() == seconds
