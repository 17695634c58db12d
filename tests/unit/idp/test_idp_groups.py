"""The groups claim (issuer setting ``groups_claim``) on the Principal, for the signing policy."""

from __future__ import annotations

import pytest

from idp_adapter import IdentityNotAllowed
from idp_adapter._mapping import build_principal
from tests.unit.idp.test_idp_templates import CLAIMS, EXP, settings


def test_groups_from_the_configured_claim() -> None:
    p = build_principal(settings(), {**CLAIMS, "groups": ["treasury", "finance"]}, EXP)
    assert p.groups == {"treasury", "finance"}
    assert build_principal(settings(), CLAIMS, EXP).groups == frozenset()
    nested = {**CLAIMS, "org": {"teams": "ops audit"}}
    assert build_principal(settings(groups_claim="org.teams"), nested, EXP).groups == {
        "ops",
        "audit",
    }


def test_malformed_groups_are_refused() -> None:
    with pytest.raises(IdentityNotAllowed, match="'groups'"):
        build_principal(settings(), {**CLAIMS, "groups": {"a": 1}}, EXP)


def test_groups_claim_setting_is_validated() -> None:
    from idp_adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="groups_claim"):
        settings(groups_claim="")
