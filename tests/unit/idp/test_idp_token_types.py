"""Issue 18: bearer tokens are access tokens (RFC 9068 §2.1, §4), ID tokens are not."""

from __future__ import annotations

import pytest

from idp_adapter._verify import check_access_token, check_id_token_type, normalize_typ
from idp_adapter.errors import ConfigError, InvalidToken
from tests.unit.idp.test_idp_templates import settings

AT = frozenset({"at+jwt"})


def reason(header: dict[str, object], claims: dict[str, object], accepted: frozenset[str]) -> str:
    with pytest.raises(InvalidToken) as info:
        check_access_token(header, claims, accepted)
    return info.value.reason


def test_typ_is_a_media_type_compared_without_case_or_prefix() -> None:
    assert normalize_typ("application/AT+JWT") == "at+jwt" == normalize_typ("at+jwt")
    check_access_token({"typ": "application/at+jwt"}, {}, AT)


def test_only_at_jwt_by_default() -> None:
    assert reason({}, {}, AT) == "not_access_token"
    assert reason({"typ": "JWT"}, {}, AT) == "not_access_token"
    assert reason({"typ": "dpop+jwt"}, {}, AT) == "not_access_token"
    assert reason({"typ": 7}, {}, AT) == "malformed"
    assert reason({"typ": ""}, {}, AT) == "malformed"


@pytest.mark.parametrize("claim", ["nonce", "at_hash", "c_hash", "s_hash"])
def test_an_id_token_claim_refuses_whatever_the_typ(claim: str) -> None:
    assert reason({"typ": "at+jwt"}, {claim: "x"}, AT) == "not_access_token"
    assert reason({}, {claim: "x"}, frozenset({"absent"})) == "not_access_token"


def test_workload_issuers_are_configured_for_their_typ() -> None:
    check_access_token({"typ": "JWT"}, {}, frozenset({"jwt"}))
    check_access_token({}, {}, frozenset({"absent"}))
    assert reason({"typ": "at+jwt"}, {}, frozenset({"absent"})) == "not_access_token"


def test_id_tokens_have_no_typ_or_jwt() -> None:
    check_id_token_type({})
    check_id_token_type({"typ": "JWT"})
    for typ in ("at+jwt", "application/at+jwt", "logout+jwt"):
        with pytest.raises(InvalidToken):
            check_id_token_type({"typ": typ})


def test_token_types_setting() -> None:
    assert settings().token_types == {"at+jwt"}
    assert settings(token_types=["JWT", "absent"]).token_types == {"jwt", "absent"}
    assert settings(token_types=["application/AT+JWT"]).token_types == {"at+jwt"}
    for bad in ("at+jwt", [], ["not a type"], [7]):
        with pytest.raises(ConfigError, match="token_types"):
            settings(token_types=bad)
