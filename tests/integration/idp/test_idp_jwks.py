"""Discovery and JWKS caching against the real development IdP: Cache-Control, key rotation,
rate-limited refetch, and the IdP being down. Fetches are counted by the IdP itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from joserfc.jwk import KeySet

from idp_adapter import IdpUnavailable, InvalidToken, IssuerSettings
from tests.support.idp import (
    DEMO_SECRETS,
    RESOURCE,
    FakeClock,
    MakeRegistry,
    free_port,
    legal_settings,
    new_signing_key,
    sign_jwt,
    start_idp,
)


async def test_cache_control_max_age_is_honoured(
    tmp_path: Path, make_registry: MakeRegistry, clock: FakeClock
) -> None:
    with start_idp(tmp_path, jwks_max_age=120) as idp:
        registry = make_registry(legal_settings(idp))
        await registry.verify_bearer(idp.mint())
        assert idp.jwks_fetches() == 1
        clock.advance(119)
        await registry.verify_bearer(idp.mint(iat=int(clock().timestamp())))
        assert idp.jwks_fetches() == 1  # still fresh
        clock.advance(2)
        await registry.verify_bearer(idp.mint(iat=int(clock().timestamp())))
        assert idp.jwks_fetches() == 2  # stale after max-age=120: refetched once
        assert registry.jwks_fetches("dev") == 2


async def test_short_max_age_is_clamped_to_30s(
    tmp_path: Path, make_registry: MakeRegistry, clock: FakeClock
) -> None:
    with start_idp(tmp_path, jwks_max_age=1) as idp:
        registry = make_registry(legal_settings(idp))
        await registry.verify_bearer(idp.mint())
        clock.advance(20)
        await registry.verify_bearer(idp.mint())
        assert idp.jwks_fetches() == 1
        clock.advance(11)
        await registry.verify_bearer(idp.mint())
        assert idp.jwks_fetches() == 2


async def test_key_rotation_is_picked_up_on_unknown_kid(
    tmp_path: Path, make_registry: MakeRegistry, clock: FakeClock
) -> None:
    old, new = new_signing_key("old"), new_signing_key("new")
    port = free_port()
    with start_idp(tmp_path / "a", port=port, private_jwks=KeySet([old])) as idp:
        registry = make_registry(legal_settings(idp))
        await registry.verify_bearer(
            await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
        )
    # the IdP restarts with a new signing key first and the old one still published
    with start_idp(tmp_path / "b", port=port, private_jwks=KeySet([new, old])) as idp:
        token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
        assert token.count(".") == 2
        with pytest.raises(InvalidToken) as info:  # within the refetch interval
            await registry.verify_bearer(token)
        assert info.value.reason == "unknown_kid"
        clock.advance(11)
        p = await registry.verify_bearer(token)
        assert p.subject == "demo-batch"
        assert idp.jwks_fetches() == 1
        # tokens of the old key still verify from the refreshed cache
        await registry.verify_bearer(sign_jwt(old, idp.claims()))
        assert idp.jwks_fetches() == 1


async def test_idp_down_is_unavailable_then_recovers(
    tmp_path: Path, make_registry: MakeRegistry, clock: FakeClock
) -> None:
    with start_idp(tmp_path / "a", jwks_max_age=60) as idp:
        registry = make_registry(legal_settings(idp))
        token = idp.mint(exp=int(clock().timestamp()) + 3600)
        await registry.verify_bearer(token)
    # stopped: the cached keys still serve until max-age, then the IdP is unreachable
    await registry.verify_bearer(token)
    clock.advance(61)
    with pytest.raises(IdpUnavailable, match="ClientConnectorError"):
        await registry.verify_bearer(token)
    with start_idp(tmp_path / "b", port=idp.port, private_jwks=idp.private_jwks) as again:
        with pytest.raises(IdpUnavailable, match="recent fetch failed"):  # backing off
            await registry.verify_bearer(token)
        assert again.jwks_fetches() == 0
        clock.advance(11)
        assert (await registry.verify_bearer(token)).subject == "demo-batch"
        assert again.jwks_fetches() == 1


async def test_never_started_idp_is_unavailable(make_registry: MakeRegistry) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"
    settings = IssuerSettings(
        name="gone",
        issuer=issuer,
        audience=RESOURCE,
        subject_type="legal",
        subject={"common_name": "{sub}"},
        profiles=("advanced",),
        default_profile="advanced",
    )
    claims = {"iss": issuer, "sub": "x", "aud": RESOURCE, "iat": 1, "exp": 2**40}
    with pytest.raises(IdpUnavailable):
        await make_registry(settings).verify_bearer(sign_jwt(new_signing_key(), claims))


async def test_discovery_issuer_must_match_exactly(
    tmp_path: Path, make_registry: MakeRegistry
) -> None:
    with start_idp(tmp_path) as idp:
        alias = idp.issuer.replace("127.0.0.1", "localhost")
        registry = make_registry(legal_settings(idp, issuer=alias))
        with pytest.raises(IdpUnavailable, match="issuer mismatch"):
            await registry.verify_bearer(idp.mint(iss=alias))


async def test_configured_jwks_uri_skips_discovery(
    tmp_path: Path, make_registry: MakeRegistry
) -> None:
    with start_idp(tmp_path) as idp:
        registry = make_registry(legal_settings(idp, jwks_uri=f"{idp.issuer}/jwks"))
        assert (await registry.verify_bearer(idp.mint())).subject == "demo-batch"
        wrong = make_registry(legal_settings(idp, jwks_uri=f"{idp.issuer}/nope"))
        with pytest.raises(IdpUnavailable, match="HTTP 404"):
            await wrong.verify_bearer(idp.mint())
