"""Every bad request gets a clear RFC 9457 problem, and no key and no certificate is made.

Tokens come from the real IdP, or are minted with its real signing key (joserfc) to carry
deliberately bad claims; forgeries use other keys or none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization

from tests.support.idp import DEMO_PASSWORDS, RunningIdp, compact, new_signing_key, sign_jwt

DIGEST = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
GOOD_BODY = {"hash_algorithm": "sha256", "hashes": [DIGEST]}


def org_claims(idp: RunningIdp, **overrides: Any) -> dict[str, Any]:
    """Claims of a demo-batch token, as the IdP issues them."""
    return idp.claims(identity_type="organisation", org_id="NTRDE-HRB12345", **overrides)


async def expect_problem(
    client: TestClient,
    records: Callable[[], Any],
    status: int,
    slug: str,
    *,
    token: str | None = None,
    body: Any = GOOD_BODY,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    before = await records()
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else json.dumps(body).encode()
    resp = await client.post("/api/v1/signatures", data=data, headers=headers)
    problem = await resp.json(content_type=None)
    assert resp.status == status, problem
    assert resp.content_type == "application/problem+json"
    assert problem["type"] == f"/problems/{slug}", problem
    assert problem["status"] == status and problem["title"] and problem["request_id"]
    assert problem["request_id"] == resp.headers["X-Request-Id"]
    assert await records() == before, "a certificate was issued for a refused request"
    return problem


# ------------------------------------------------------------------ tokens


async def test_missing_token(client: TestClient, records: Callable[[], Any]) -> None:
    await expect_problem(client, records, 401, "invalid-token")


@pytest.mark.parametrize(
    ("case", "detail"),
    [
        ("expired", "expired"),
        ("not_yet_valid", "not valid yet"),
        ("wrong_audience", "not meant for this service"),
        ("wrong_issuer", "issuer is not trusted"),
    ],
)
async def test_bad_claims_signed_by_the_real_key(
    client: TestClient, idp: RunningIdp, records: Callable[[], Any], case: str, detail: str
) -> None:
    now = int(time.time())
    overrides = {
        "expired": {"iat": now - 1200, "exp": now - 600},
        "not_yet_valid": {"nbf": now + 600},
        "wrong_audience": {"aud": "urn:someone-else"},
        "wrong_issuer": {"iss": "https://idp.example.com"},
    }[case]
    token = sign_jwt(idp.signing_key, org_claims(idp, **overrides))
    problem = await expect_problem(client, records, 401, "invalid-token", token=token)
    assert detail in problem["detail"]


async def test_alg_none(client: TestClient, idp: RunningIdp, records: Callable[[], Any]) -> None:
    token = compact({"alg": "none", "typ": "at+jwt"}, org_claims(idp))
    await expect_problem(client, records, 401, "invalid-token", token=token)


async def test_hs256_with_the_issuers_public_key(
    client: TestClient, idp: RunningIdp, records: Callable[[], Any]
) -> None:
    public = idp.signing_key.as_der(private=False)
    pem = serialization.load_der_public_key(public).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unsigned = compact(
        {"alg": "HS256", "typ": "at+jwt", "kid": idp.signing_key.kid}, org_claims(idp)
    ).rsplit(".", 1)[0]
    mac = hmac.new(pem, unsigned.encode(), hashlib.sha256).digest()
    token = unsigned + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    await expect_problem(client, records, 401, "invalid-token", token=token)


async def test_unknown_kid(client: TestClient, idp: RunningIdp, records: Callable[[], Any]) -> None:
    token = sign_jwt(new_signing_key(), org_claims(idp))
    problem = await expect_problem(client, records, 401, "invalid-token", token=token)
    assert "key is unknown" in problem["detail"]


async def test_tampered_signature(
    client: TestClient, batch_token: str, records: Callable[[], Any]
) -> None:
    head, payload, sig = batch_token.split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    await expect_problem(client, records, 401, "invalid-token", token=f"{head}.{payload}.{flipped}")


async def test_tampered_claims(
    client: TestClient, batch_token: str, records: Callable[[], Any]
) -> None:
    head, payload, sig = batch_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["org_name"] = "Someone Else AG"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    await expect_problem(client, records, 401, "invalid-token", token=f"{head}.{forged}.{sig}")


async def test_identity_failing_required_claims(
    client: TestClient, idp: RunningIdp, records: Callable[[], Any]
) -> None:
    bob = await idp.user_token("bob", DEMO_PASSWORDS["bob"], "demo-web")  # email not verified
    await expect_problem(client, records, 403, "identity-not-allowed", token=bob)


async def test_identity_not_allowed_the_profile(
    aiohttp_client: Any, settings: Any, ca_ready: None, batch_token: str, records: Callable[[], Any]
) -> None:
    import dataclasses

    from signer.app import create_app

    orgs = dataclasses.replace(
        settings.issuers[0], profiles=("advanced",), default_profile="advanced"
    )
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, issuers=(orgs, *settings.issuers[1:])))
    )
    body = {**GOOD_BODY, "profile": "qes"}
    await expect_problem(client, records, 403, "profile-not-allowed", token=batch_token, body=body)


async def test_replayed_jti_when_required(
    aiohttp_client: Any, settings: Any, ca_ready: None, batch_token: str, records: Callable[[], Any]
) -> None:
    import dataclasses

    from signer.app import create_app

    orgs = dataclasses.replace(settings.issuers[0], require_jti=True)
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, issuers=(orgs, *settings.issuers[1:])))
    )
    headers = {"Authorization": f"Bearer {batch_token}"}
    first = await client.post("/api/v1/signatures", json=GOOD_BODY, headers=headers)
    assert first.status == 201, await first.text()
    await expect_problem(client, records, 401, "token-replayed", token=batch_token)


# ------------------------------------------------------------------ bodies


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        (
            {"hash_algorithm": "sha256", "hashes": [base64.b64encode(b"short").decode()]},
            422,
            "wrong-digest-length",
        ),
        ({"hash_algorithm": "sha384", "hashes": [DIGEST]}, 422, "wrong-digest-length"),
        ({"hash_algorithm": "sha256", "hashes": []}, 422, "no-digests"),
        ({"hash_algorithm": "sha256", "hashes": [DIGEST] * 1001}, 422, "too-many-digests"),
        ({"hash_algorithm": "md5", "hashes": [DIGEST]}, 422, "unsupported-hash-algorithm"),
        ({"hash_algorithm": "sha256", "hashes": ["***"]}, 422, "invalid-request"),
        ({"hash_algorithm": "sha256", "hashes": DIGEST}, 422, "invalid-request"),
        ({"hash_algorithm": "sha256", "hashes": [DIGEST], "extra": 1}, 422, "invalid-request"),
        ([1, 2, 3], 422, "invalid-request"),
    ],
)
async def test_invalid_bodies(
    client: TestClient,
    batch_token: str,
    records: Callable[[], Any],
    body: Any,
    status: int,
    slug: str,
) -> None:
    await expect_problem(client, records, status, slug, token=batch_token, body=body)


async def test_malformed_json(
    client: TestClient, batch_token: str, records: Callable[[], Any]
) -> None:
    await expect_problem(
        client,
        records,
        400,
        "malformed-json",
        token=batch_token,
        raw=b'{"hash_algorithm": "sha256", "hashes": [',
    )


async def test_wrong_content_type(
    client: TestClient, batch_token: str, records: Callable[[], Any]
) -> None:
    await expect_problem(
        client, records, 415, "unsupported-media-type", token=batch_token, content_type="text/plain"
    )


async def test_body_over_the_limit(
    client: TestClient, batch_token: str, records: Callable[[], Any]
) -> None:
    huge = json.dumps({"hash_algorithm": "sha256", "hashes": [DIGEST] * 40_000}).encode()
    assert len(huge) > 1_048_576
    await expect_problem(client, records, 413, "body-too-large", token=batch_token, raw=huge)


async def test_unknown_route_and_method(client: TestClient) -> None:
    resp = await client.get("/api/v1/nothing-here")
    assert resp.status == 404
    assert (await resp.json(content_type=None))["type"] == "/problems/not-found"
    resp = await client.get("/api/v1/signatures")
    assert resp.status == 405
    assert (await resp.json(content_type=None))["type"] == "/problems/method-not-allowed"
