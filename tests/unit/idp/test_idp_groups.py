"""The groups claim (issuer setting ``groups_claim``) on the Principal, for the signing policy."""

from __future__ import annotations

import pytest

from idp_adapter import IdentityNotAllowed
from idp_adapter._mapping import build_principal, ungranted_roles
from tests.unit.idp.test_idp_templates import CLAIMS, EXP, settings

GRANTS = frozenset({"treasury", "finance", "ops", "audit"})


def test_groups_from_the_configured_claim() -> None:
    granting = settings(grants_roles=GRANTS)
    p = build_principal(granting, {**CLAIMS, "groups": ["treasury", "finance"]}, EXP)
    assert p.groups == {"treasury", "finance"}
    assert build_principal(granting, CLAIMS, EXP).groups == frozenset()
    nested = {**CLAIMS, "org": {"teams": "ops audit"}}
    by_path = settings(groups_claim="org.teams", grants_roles=GRANTS)
    assert build_principal(by_path, nested, EXP).groups == {"ops", "audit"}


def test_roles_and_groups_count_only_when_the_issuer_grants_them() -> None:
    """Issue 18: without ``grants_roles`` no role or group counts; with it, only those listed."""
    claims = {**CLAIMS, "groups": ["treasury", "root"], "roles": ["qes-auditor", "qes-admin"]}
    plain = build_principal(settings(), claims, EXP)
    assert (plain.roles, plain.groups) == (frozenset(), frozenset())
    assert ungranted_roles(settings(), claims) == {"treasury", "root", "qes-auditor", "qes-admin"}
    some = settings(grants_roles=["treasury", "qes-auditor"])
    p = build_principal(some, claims, EXP)
    assert (p.roles, p.groups) == ({"qes-auditor"}, {"treasury"})
    assert ungranted_roles(some, claims) == {"root", "qes-admin"}


def test_grants_roles_setting_is_validated() -> None:
    from idp_adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="grants_roles"):
        settings(grants_roles="qes-auditor")
    with pytest.raises(ConfigError, match="grants_roles"):
        settings(grants_roles=[""])


def test_malformed_groups_are_refused() -> None:
    with pytest.raises(IdentityNotAllowed, match="'groups'"):
        build_principal(settings(), {**CLAIMS, "groups": {"a": 1}}, EXP)


def test_groups_claim_setting_is_validated() -> None:
    from idp_adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="groups_claim"):
        settings(groups_claim="")
