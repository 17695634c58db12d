"""Several configured identity types for one issuer, selected by ``match_claims``."""

from __future__ import annotations

import pytest

from idp_adapter import ConfigError, IdentityNotAllowed
from tests.support.idp import (
    DEMO_PASSWORDS,
    DEMO_SECRETS,
    MakeRegistry,
    RunningIdp,
    legal_settings,
    natural_settings,
)


async def test_one_issuer_two_identity_types(idp: RunningIdp, make_registry: MakeRegistry) -> None:
    registry = make_registry(
        legal_settings(idp, match_claims={"sub": "demo-batch"}),
        natural_settings(idp),
    )
    seal = await registry.verify_bearer(
        await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    )
    person = await registry.verify_bearer(
        await idp.user_token("alice", DEMO_PASSWORDS["alice"], "demo-web")
    )
    assert (seal.issuer_name, seal.subject_type) == ("dev", "legal")
    assert (person.issuer_name, person.subject_type) == ("dev-users", "natural")
    assert person.attributes["serial_number"] == "PNODE-1234567890"


async def test_no_matching_entry_is_refused(idp: RunningIdp, make_registry: MakeRegistry) -> None:
    registry = make_registry(legal_settings(idp, match_claims={"sub": "someone-else"}))
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    with pytest.raises(IdentityNotAllowed):
        await registry.verify_bearer(token)


def test_catch_all_entry_must_come_last(idp: RunningIdp, make_registry: MakeRegistry) -> None:
    with pytest.raises(ConfigError, match="match_claims"):
        make_registry(natural_settings(idp), legal_settings(idp, match_claims={"sub": "x"}))
