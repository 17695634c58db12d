"""The development IdP itself: passwords are checked, ID tokens carry acr/amr/auth_time,
access tokens are RFC 9068 JWTs. Verified with joserfc directly, not with idp_adapter."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.idp import DEMO_PASSWORDS, DEMO_SECRETS, RunningIdp


def public(idp: RunningIdp) -> KeySet:
    return KeySet.import_key_set(idp.private_jwks.as_dict(private=False))


async def test_id_token_carries_authentication_context(idp: RunningIdp) -> None:
    result = await idp.user_login("alice", DEMO_PASSWORDS["alice"], "demo-web")
    token = jwt.decode(result["id_token"], public(idp), algorithms=["ES256"])
    claims = token.claims
    assert claims["iss"] == idp.issuer and claims["aud"] == "demo-web"
    assert claims["nonce"] == result["nonce"]
    assert claims["acr"] == "urn:qes-signer:dev-idp:pwd" and claims["amr"] == ["pwd"]
    assert abs(claims["auth_time"] - time.time()) < 60
    assert claims["pno"] == "PNODE-1234567890" and claims["email_verified"] is True


async def test_access_tokens_are_rfc9068_jwts(idp: RunningIdp) -> None:
    value = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    token = jwt.decode(value, public(idp), algorithms=["ES256"])
    assert token.header["typ"] == "at+jwt"
    c = token.claims
    assert {"iss", "sub", "aud", "exp", "iat", "jti", "client_id"} <= set(c)
    assert (c["aud"], c["sub"], c["organizationIdentifier"]) == (
        idp.resource,
        "demo-batch",
        "NTRDE-HRB12345",
    )


async def test_wrong_password_is_refused(idp: RunningIdp) -> None:
    with pytest.raises(RuntimeError, match="401"):
        await idp.user_login("alice", "wrong", "demo-web")


async def test_wrong_client_secret_is_refused(idp: RunningIdp) -> None:
    with pytest.raises(RuntimeError, match="invalid_client"):
        await idp.client_token("demo-batch", "wrong")
