"""verify_bearer against real tokens from the development IdP, and forged ones signed with
its real key. Claims are checked against the IdP's JWT payloads, not against our code."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from idp_adapter import IdentityNotAllowed, InvalidToken
from tests.support.idp import (
    DEMO_PASSWORDS,
    DEMO_SECRETS,
    FakeClock,
    MakeRegistry,
    MemoryReplayGuard,
    RunningIdp,
    compact,
    legal_settings,
    natural_settings,
    new_signing_key,
    sign_jwt,
)


async def batch_token(idp: RunningIdp, client_id: str = "demo-batch") -> str:
    return await idp.client_token(client_id, DEMO_SECRETS[client_id])


async def expect_reason(registry_call: object, reason: str) -> None:
    assert asyncio.iscoroutine(registry_call)
    with pytest.raises(InvalidToken) as info:
        await registry_call
    assert info.value.reason == reason, str(info.value)


async def test_client_credentials_token_maps_to_principal(
    idp: RunningIdp, make_registry: MakeRegistry
) -> None:
    registry = make_registry(legal_settings(idp, grants_roles=["qes-batch"]))
    before = time.time()
    p = await registry.verify_bearer(await batch_token(idp))
    assert (p.issuer, p.issuer_name, p.subject, p.client_id) == (
        idp.issuer,
        "dev",
        "demo-batch",
        "demo-batch",
    )
    assert p.subject_type == "legal"
    assert dict(p.attributes) == {
        "common_name": "Demo Manufacturing GmbH",
        "organization_name": "Demo Manufacturing GmbH",
        "organization_identifier": "NTRDE-HRB12345",
        "country": "DE",
    }
    assert p.profiles == ("qualified", "advanced") and p.default_profile == "qualified"
    assert p.roles == {"qes-batch"}
    assert p.token_id and len(p.token_id) > 16
    assert abs(p.expires_at.timestamp() - (before + 600)) < 5
    assert p.expires_at.tzinfo is not None


async def test_auditor_client_carries_its_role(
    idp: RunningIdp, make_registry: MakeRegistry
) -> None:
    subject = {"common_name": "{org_name}", "country": "{country}"}
    settings = legal_settings(idp, subject=subject, grants_roles=["qes-auditor"])
    p = await make_registry(settings).verify_bearer(await batch_token(idp, "demo-auditor"))
    assert p.roles == {"qes-auditor"}
    # Issue 18: the same token from an issuer not trusted to grant roles carries none.
    ignored: list[tuple[str, str, frozenset[str]]] = []
    plain = make_registry(
        legal_settings(idp, subject=subject), on_ignored_roles=lambda *a: ignored.append(a)
    )
    p = await plain.verify_bearer(await batch_token(idp, "demo-auditor"))
    assert p.roles == frozenset()
    assert ignored == [("dev", "demo-auditor", frozenset({"qes-auditor"}))]


async def test_user_token_from_auth_code_flow(idp: RunningIdp, make_registry: MakeRegistry) -> None:
    registry = make_registry(natural_settings(idp))
    token = await idp.user_token("alice", DEMO_PASSWORDS["alice"], "demo-web")
    p = await registry.verify_bearer(token)
    assert (p.subject, p.client_id, p.subject_type) == ("alice", "demo-web", "natural")
    assert dict(p.attributes) == {
        "common_name": "Alice Example",
        "given_name": "Alice",
        "surname": "Example",
        "country": "DE",
        "serial_number": "PNODE-1234567890",
    }
    assert p.acr == "urn:qes-signer:dev-idp:pwd" and p.amr == ("pwd",)
    assert p.auth_time is not None and abs(p.auth_time.timestamp() - time.time()) < 60


async def test_required_claims_refuse_unverified_email(
    idp: RunningIdp, make_registry: MakeRegistry
) -> None:
    token = await idp.user_token("bob", DEMO_PASSWORDS["bob"], "demo-web")
    with pytest.raises(IdentityNotAllowed, match="email_verified"):
        await make_registry(natural_settings(idp)).verify_bearer(token)


async def test_mapping_needs_its_claims(idp: RunningIdp, make_registry: MakeRegistry) -> None:
    # a batch token has no `pno`: the natural-person mapping cannot be rendered
    settings = natural_settings(idp, required_claims={})
    with pytest.raises(IdentityNotAllowed, match="'name'"):
        await make_registry(settings).verify_bearer(await batch_token(idp))


async def test_expired_real_token(
    idp: RunningIdp, make_registry: MakeRegistry, clock: FakeClock
) -> None:
    registry = make_registry(legal_settings(idp))
    token = await batch_token(idp)
    await registry.verify_bearer(token)
    clock.advance(600 + 31)  # past exp (600 s TTL) and the 30 s leeway
    await expect_reason(registry.verify_bearer(token), "expired")


async def test_time_claims_with_real_key(idp: RunningIdp, make_registry: MakeRegistry) -> None:
    registry = make_registry(legal_settings(idp))
    now = int(time.time())
    await expect_reason(registry.verify_bearer(idp.mint(exp=now - 120)), "expired")
    await registry.verify_bearer(idp.mint(exp=now - 10))  # within the leeway
    await expect_reason(registry.verify_bearer(idp.mint(nbf=now + 300)), "not_yet_valid")
    await expect_reason(registry.verify_bearer(idp.mint(iat=now + 300)), "issued_in_future")
    await expect_reason(registry.verify_bearer(idp.mint(exp=None)), "missing_claim")
    await expect_reason(registry.verify_bearer(idp.mint(exp="soon")), "malformed")


async def test_audience_and_issuer(idp: RunningIdp, make_registry: MakeRegistry) -> None:
    registry = make_registry(legal_settings(idp))
    await expect_reason(registry.verify_bearer(idp.mint(aud="urn:other")), "bad_audience")
    both = idp.mint(aud=["urn:other", idp.resource])
    assert (await registry.verify_bearer(both)).subject == "demo-batch"
    other = make_registry(legal_settings(idp, audience="urn:other"))
    await expect_reason(other.verify_bearer(await batch_token(idp)), "bad_audience")
    await expect_reason(
        registry.verify_bearer(idp.mint(iss="http://127.0.0.1:1")), "unknown_issuer"
    )
    await expect_reason(registry.verify_bearer(idp.mint(iss=None)), "unknown_issuer")


async def test_alg_none_and_hmac_are_refused_before_any_fetch(
    idp: RunningIdp, make_registry: MakeRegistry
) -> None:
    registry = make_registry(legal_settings(idp))
    claims = idp.claims()
    kid = idp.signing_key.kid
    none = compact({"alg": "none", "typ": "JWT"}, claims)
    await expect_reason(registry.verify_bearer(none), "alg_not_allowed")
    secret = idp.signing_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    unsigned = compact(header, claims).rsplit(".", 1)[0]
    mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    await expect_reason(registry.verify_bearer(compact(header, claims, mac)), "alg_not_allowed")
    assert registry.jwks_fetches("dev") == 0


async def test_alg_outside_the_issuer_allow_list(
    idp: RunningIdp, make_registry: MakeRegistry
) -> None:
    registry = make_registry(legal_settings(idp, algorithms=("RS256",)))
    await expect_reason(registry.verify_bearer(await batch_token(idp)), "alg_not_allowed")


async def test_unknown_kid_refetch_is_rate_limited(
    idp: RunningIdp, make_registry: MakeRegistry, clock: FakeClock
) -> None:
    registry = make_registry(legal_settings(idp))
    rogue = new_signing_key("rogue")
    forged = sign_jwt(rogue, idp.claims())
    served = idp.jwks_fetches()
    await expect_reason(registry.verify_bearer(forged), "unknown_kid")
    await expect_reason(registry.verify_bearer(forged), "unknown_kid")
    assert idp.jwks_fetches() - served == 1  # the initial fetch; no refetch within 10 s
    clock.advance(11)
    await expect_reason(registry.verify_bearer(forged), "unknown_kid")
    await expect_reason(registry.verify_bearer(forged), "unknown_kid")
    assert idp.jwks_fetches() - served == 2  # one refetch after the interval, then none
    assert registry.jwks_fetches("dev") == 2


async def test_forged_signature_with_the_real_kid(
    idp: RunningIdp, make_registry: MakeRegistry
) -> None:
    registry = make_registry(legal_settings(idp))
    forged = sign_jwt(new_signing_key(), idp.claims(), {"kid": idp.signing_key.kid})
    await expect_reason(registry.verify_bearer(forged), "bad_signature")


async def test_tampered_token(idp: RunningIdp, make_registry: MakeRegistry) -> None:
    registry = make_registry(legal_settings(idp))
    header, payload, signature = (await batch_token(idp)).split(".")
    flipped = ("B" if signature[5] == "A" else "A").join([signature[:5], signature[6:]])
    await expect_reason(registry.verify_bearer(f"{header}.{payload}.{flipped}"), "bad_signature")
    other_payload = idp.mint().split(".")[1]
    await expect_reason(
        registry.verify_bearer(f"{header}.{other_payload}.{signature}"), "bad_signature"
    )


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d.e",
        "!!.??.##",
        "e30.e30.",
        "W10.e30.e30",
        "e30." + "W1tb" * 3000 + ".AA",
    ],
)
async def test_garbage_is_malformed(
    idp: RunningIdp, make_registry: MakeRegistry, token: str
) -> None:
    await expect_reason(make_registry(legal_settings(idp)).verify_bearer(token), "malformed")


async def test_duplicate_claims_are_malformed(idp: RunningIdp, make_registry: MakeRegistry) -> None:
    import base64

    payload = b'{"iss":"x","iss":"' + idp.issuer.encode() + b'"}'
    token = "eyJhbGciOiJFUzI1NiJ9." + base64.urlsafe_b64encode(payload).decode().rstrip("=")
    await expect_reason(
        make_registry(legal_settings(idp)).verify_bearer(token + ".AA"), "malformed"
    )


async def test_replayed_jti(idp: RunningIdp, make_registry: MakeRegistry) -> None:
    """A jti starts one operation; verifying (polling, listing) never spends it."""
    guard = MemoryReplayGuard()
    registry = make_registry(legal_settings(idp), replay=guard)  # require_jti on by default
    token = await batch_token(idp)
    first = await registry.verify_bearer(token)
    assert (await registry.verify_bearer(token)) == first
    assert guard.seen == {}
    await registry.start_operation(first, None)
    assert guard.seen[(idp.issuer, first.token_id or "")] == first.expires_at
    await expect_reason(registry.start_operation(first, None), "replayed")
    await registry.start_operation(first, "idempotency-key-1")  # a keyed operation: allowed
    # a token without jti passes, unless the issuer says "always"
    bare = await registry.verify_bearer(idp.mint(jti=None))
    await registry.start_operation(bare, None)
    await registry.start_operation(bare, None)
    strict = make_registry(legal_settings(idp, require_jti="always"), replay=guard)
    bare = await strict.verify_bearer(idp.mint(jti=None))
    await expect_reason(strict.start_operation(bare, None), "missing_claim")
    # a refused token does not consume its jti
    bad = idp.mint(aud="urn:other", jti="once")
    await expect_reason(registry.verify_bearer(bad), "bad_audience")
    once = await registry.verify_bearer(idp.mint(jti="once"))
    await registry.start_operation(once, None)


async def test_concurrent_first_use_shares_one_fetch(
    idp: RunningIdp, make_registry: MakeRegistry
) -> None:
    registry = make_registry(legal_settings(idp))
    tokens = [idp.mint() for _ in range(25)]
    served = idp.jwks_fetches()
    principals = await asyncio.gather(*(registry.verify_bearer(t) for t in tokens))
    assert {p.token_id for p in principals} == {t for t in (p.token_id for p in principals)}
    assert len({p.token_id for p in principals}) == 25
    assert idp.jwks_fetches() - served == 1


async def test_expiry_uses_injected_clock_not_wall_clock(
    idp: RunningIdp, make_registry: MakeRegistry, clock: FakeClock
) -> None:
    clock.advance(-3600)
    token = idp.mint(iat=int(time.time()) - 3600, exp=int(time.time()) - 3000)
    p = await make_registry(legal_settings(idp)).verify_bearer(token)
    assert p.expires_at < datetime.now(UTC)


async def test_id_token_from_auth_code_flow(
    idp: RunningIdp, make_registry: MakeRegistry, clock: FakeClock
) -> None:
    registry = make_registry(natural_settings(idp))
    result = await idp.user_login("alice", DEMO_PASSWORDS["alice"], "demo-web")
    id_token, nonce = result["id_token"], result["nonce"]
    p = await registry.verify_id_token(id_token, client_id="demo-web", nonce=nonce)
    assert (p.subject, p.acr, p.amr) == ("alice", "urn:qes-signer:dev-idp:pwd", ("pwd",))
    assert p.attributes["serial_number"] == "PNODE-1234567890"
    await expect_reason(
        registry.verify_id_token(id_token, client_id="demo-web", nonce="other"), "bad_nonce"
    )
    await expect_reason(
        registry.verify_id_token(id_token, client_id="demo-batch", nonce=nonce), "bad_audience"
    )
    # an ID token is not an access token for the API
    await expect_reason(registry.verify_bearer(id_token), "bad_audience")
    fresh = timedelta(minutes=5)
    await registry.verify_id_token(id_token, client_id="demo-web", nonce=nonce, max_age=fresh)
    clock.advance(5 * 60 + 31)
    await expect_reason(
        registry.verify_id_token(id_token, client_id="demo-web", nonce=nonce, max_age=fresh),
        "stale_auth",
    )
