"""RFC 9449 §4.3 proof checks of :func:`idp_adapter.binding.check_proof`, one reason each, and
the stateless server nonces (§9). Proofs are signed with real keys (joserfc)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from idp_adapter.binding import NonceSource, access_token_hash, check_proof
from idp_adapter.errors import InvalidProof
from signer.cli.dpop import DpopKey

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
URL = "https://signer.example.com/api/v1/signatures"
TOKEN = "header.payload.signature"


def check(proof: str, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "algorithms": ("ES256",),
        "method": "POST",
        "url": URL,
        "access_token": TOKEN,
        "now": NOW,
        "max_age": timedelta(seconds=60),
        "leeway": timedelta(seconds=5),
    }
    return check_proof(proof, **{**args, **kw})


def handmade(header: dict[str, Any], claims: dict[str, Any], key: ECKey | None = None) -> str:
    key = key or ECKey.generate_key("P-256", private=True)
    full = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False), **header}
    base = {"jti": "j" * 22, "htm": "POST", "htu": URL, "iat": int(NOW.timestamp())}
    return jwt.encode(full, {**base, "ath": access_token_hash(TOKEN), **claims}, key)


def test_a_good_proof_gives_the_key_thumbprint() -> None:
    key = DpopKey.generate()
    proof = key.proof("POST", URL + "?x=1", access_token=TOKEN, issued_at=NOW.timestamp())
    checked = check(proof, url="HTTPS://Signer.Example.com:443/api/v1/signatures")
    assert checked.jkt == key.thumbprint and checked.nonce is None


@pytest.mark.parametrize(
    ("header", "claims", "kw", "reason"),
    [
        ({"typ": "JWT"}, {}, {}, "bad_type"),
        ({}, {}, {"algorithms": ("ES384",)}, "alg_not_allowed"),
        ({"jwk": {"kty": "oct", "k": "c2VjcmV0"}}, {}, {}, "bad_key"),
        ({}, {"htm": "GET"}, {}, "wrong_method"),
        ({}, {"htu": "https://signer.example.com/api/v1/certificates"}, {}, "wrong_url"),
        ({}, {"htu": "https://evil.example.com/api/v1/signatures"}, {}, "wrong_url"),
        ({}, {"iat": int(NOW.timestamp()) - 120}, {}, "stale"),
        ({}, {"iat": int(NOW.timestamp()) + 60}, {}, "stale"),
        ({}, {"ath": access_token_hash("another")}, {}, "bad_ath"),
        ({}, {"jti": ""}, {}, "malformed"),
    ],
)
def test_each_check_refuses_with_its_reason(
    header: dict[str, Any], claims: dict[str, Any], kw: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidProof) as info:
        check(handmade(header, claims), **kw)
    assert info.value.reason == reason


def test_a_private_jwk_or_another_key_is_refused() -> None:
    key = ECKey.generate_key("P-256", private=True)
    with pytest.raises(InvalidProof) as info:
        check(handmade({"jwk": key.as_dict(private=True)}, {}, key))
    assert info.value.reason == "bad_key"
    other = ECKey.generate_key("P-256", private=True)
    with pytest.raises(InvalidProof) as info:
        check(handmade({"jwk": other.as_dict(private=False)}, {}, key))
    assert info.value.reason == "bad_signature"


def test_server_nonces_last_two_slots_and_need_the_secret() -> None:
    now = [NOW]
    nonces = NonceSource(b"k" * 32, lambda: now[0], timedelta(minutes=5))
    nonce = nonces.issue()
    assert nonces.valid(nonce) and not nonces.valid(None) and not nonces.valid("x")
    assert not NonceSource(b"o" * 32, lambda: now[0]).valid(nonce)
    now[0] = NOW + timedelta(minutes=5)
    assert nonces.valid(nonce)
    now[0] = NOW + timedelta(minutes=10)
    assert not nonces.valid(nonce)
