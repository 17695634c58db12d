"""Issue 18: token attacks from a second, trusted but attacker-controlled OpenID Provider.

A second real IdP process (npm oidc-provider, its own keys) is trusted by the signer as the
issuer ``partner`` (and ``partner_once``, its ``require_jti`` entry), configured only for batch
signing: no ``grants_roles``. Every attack class of the penetration test is sent to the signer
over HTTP; each is refused, and no certificate, record or HSM key is made (the ``aclient``
fixture checks the HSM after each test, :func:`records` the database).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from joserfc import jws
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from tests.support.idp import (
    DEMO_SECRETS,
    FakeClock,
    RunningIdp,
    compact,
    new_signing_key,
    sign_jwt,
    start_idp,
)
from tests.support.leaks import record
from tests.support.service import (
    DEV_CONFIG,
    SignerTestServer,
    api_headers,
    assert_hsm_clean,
    free_port,
    raw_request,
    service_env,
    sign_random,
)
from tests.support.softhsm import SoftHsmToken

ROLES = ["qes-auditor", "seal-approvers", "qes-admin"]
NONE_HEADER = b'{"alg":"None","typ":"at+jwt"}'
CRIT_HEADER = b'{"alg":"ES256","typ":"at+jwt","kid":"KID","crit":["http://example.com/x"]}'
ORG = {
    "identity_type": "organisation",
    "org_name": "Partner Logistics AG",
    "org_id": "NTRDE-HRB424242",
    "organizationIdentifier": "NTRDE-HRB424242",
    "country": "DE",
}


def partner_client(client_id: str, **claims: Any) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "client_secret": f"partner-only-{client_id}-secret",
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "scope": "sign",
        "claims": {**ORG, **claims},
    }


# The relying party whose client_id equals the API's audience: its ID tokens carry aud
# "urn:qes-signer" (the configuration the penetration test found accepted).
AUDIENCE_RP = {
    "client_id": "urn:qes-signer",
    "token_endpoint_auth_method": "none",  # a public client (PKCE): ":" rules out HTTP Basic
    "grant_types": ["authorization_code"],
    "response_types": ["code"],
    "redirect_uris": ["http://127.0.0.1:9/callback"],
    "scope": "openid profile email",
}
MALLORY = {
    "username": "mallory",
    "password": "partner-only-mallory",
    "sub": "mallory",
    "claims": {
        "given_name": "Mallory",
        "family_name": "Partner",
        "name": "Mallory Partner",
        "email": "mallory@partner.example",
        "email_verified": True,
        "country": "DE",
        "pno": "PNODE-6660001111",
        "roles": ROLES,
        "groups": ROLES,
        **ORG,
    },
}
PARTNER_CLIENTS = [
    partner_client("partner-batch", roles=ROLES, groups=ROLES),
    partner_client("partner-once", single_use=True),
    AUDIENCE_RP,
]
UI_SECRET = "partner-only-ui-secret"


def ui_clients(port: int) -> list[dict[str, Any]]:
    """The signer's audit and approvals UIs as clients of the partner IdP (issue 18: their
    pages, logged in through an issuer without grants_roles)."""
    return [
        {
            "client_id": f"partner-{ui}-ui",
            "client_secret": UI_SECRET,
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "redirect_uris": [f"http://127.0.0.1:{port}/{ui}/callback"],
            "scope": "openid profile email roles",
        }
        for ui in ("audit", "approvals")
    ]


def partner_env(issuer: str, rotating: str) -> dict[str, str]:
    """``partner_once`` (single-use ``jti``, selected by ``single_use``) before ``partner``;
    ``rotating`` is a third IdP that the rotation test starts and restarts with a new key.
    Both UIs log in at the partner."""
    env: dict[str, str] = {
        "QES__AUDIT__UI_CLIENT_ID": '"partner-audit-ui"',
        "QES__AUDIT__UI_ISSUER": '"partner"',
        "QES_AUDIT_UI_CLIENT_SECRET": UI_SECRET,
        "QES__APPROVALS__UI_CLIENT_ID": '"partner-approvals-ui"',
        "QES__APPROVALS__UI_ISSUER": '"partner"',
        "QES_APPROVALS_UI_CLIENT_SECRET": UI_SECRET,
    }
    legal = {
        "SUBJECT_TYPE": '"legal"',
        "SUBJECT__COMMON_NAME": '"{org_name}"',
        "SUBJECT__ORGANIZATION": '"{org_name}"',
        "SUBJECT__ORGANIZATION_IDENTIFIER": '"{org_id}"',
        "SUBJECT__COUNTRY": '"{country}"',
    }
    natural = {
        "SUBJECT_TYPE": '"natural"',
        "SUBJECT__COMMON_NAME": '"{name}"',
        "SUBJECT__COUNTRY": '"{country}"',
    }
    org = '{ identity_type = "organisation" }'
    for name, url, extra in (
        (
            "PARTNER_ONCE",
            issuer,
            {**legal, "MATCH_CLAIMS": "{ single_use = true }", "REQUIRE_JTI": "true"},
        ),
        ("PARTNER", issuer, {**legal, "MATCH_CLAIMS": org}),
        ("PARTNER_PEOPLE", issuer, natural),  # mallory, at the UIs
        # The rotation test presents one token for several signing operations (its cached
        # verification is the point), so this issuer does not spend jti per operation.
        ("ROTATING", rotating, {**legal, "REQUIRE_JTI": "false"}),
    ):
        prefix = f"QES__ISSUERS__{name}__"
        env |= {
            f"{prefix}ISSUER": f'"{url}"',
            f"{prefix}AUDIENCE": '"urn:qes-signer"',
            f"{prefix}PROFILES": '["qualified", "advanced"]',
            **{prefix + k: v for k, v in extra.items()},
        }
    return env


@pytest.fixture(scope="module")
def partner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("partner-idp")


@pytest.fixture(scope="module")
def attack_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def rotating_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def partner(partner_dir: Path, attack_port: int) -> Iterator[RunningIdp]:
    clients = [*PARTNER_CLIENTS, *ui_clients(attack_port)]
    with start_idp(partner_dir, clients=clients, users=[MALLORY]) as running:
        yield running


@pytest.fixture(scope="module")
def attack_env(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    partner: RunningIdp,
    attack_port: int,
    rotating_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    return service_env(
        token=softhsm_token,
        database_url=database_url,
        idp=idp,
        port=attack_port,
        data_dir=tmp_path_factory.mktemp("attack-data"),
        **partner_env(partner.issuer, f"http://127.0.0.1:{rotating_port}"),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def aclient(
    aiohttp_client: Any,
    attack_env: dict[str, str],
    attack_port: int,
    ca_ready: None,
    clock: FakeClock,
) -> AsyncIterator[TestClient[Any, Any]]:
    from signer.app import create_app
    from signer.settings.config import load_settings

    app = create_app(load_settings(DEV_CONFIG, env=attack_env), clock=clock)
    server = SignerTestServer(app, host="127.0.0.1", port=attack_port)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    yield client
    await assert_hsm_clean(app)


async def records(database_url: str) -> int:
    """Certificates issued (signing records), of any issuer: a refused token names the issuer
    it claims, and a record under another one would be a failure too."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM signing_records"))
    finally:
        await conn.close()


async def partner_token(partner: RunningIdp, client_id: str = "partner-batch") -> str:
    return await partner.client_token(client_id, f"partner-only-{client_id}-secret")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(key: Any, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A JWS with exactly this protected header (joserfc adds nothing), recorded as sent."""
    return record(jws.serialize_compact(header, json.dumps(claims).encode(), key))


def forged_claims(partner: RunningIdp, **overrides: Any) -> dict[str, Any]:
    return partner.claims(sub="partner-batch", client_id="partner-batch", **{**ORG, **overrides})


def _signature(key: ECKey, signing_input: str) -> str:
    """The ES256 signature segment over an exact signing input (RFC 7515 §5.1 step 5)."""
    alg = jws.JWSRegistry.algorithms["ES256"]
    return b64(alg.sign(signing_input.encode(), key))


def attacks(partner: RunningIdp, idp: RunningIdp, real: str) -> dict[str, str]:
    """One token per attack class that already held before issue 18 (name -> token)."""
    key, now = partner.signing_key, time.time()
    attacker = new_signing_key(key.kid)  # same kid, the attacker's own key
    public = json.dumps(key.as_dict(private=False)).encode()
    rsa = RSAKey.generate_key(2048, {"kid": "rsa-1"}, private=True)
    h, p, s = real.split(".")
    kid = str(key.kid)
    claims = forged_claims(partner)
    dup = f'{{"alg":"ES256","typ":"at+jwt","kid":"{key.kid}","alg":"ES256"}}'.encode()
    dup_input = f"{b64(dup)}.{p}"
    crit_input = f"{b64(CRIT_HEADER.replace(b'KID', kid.encode()))}.{p}"
    dup_sig = _signature(key, dup_input)
    dup_claims = json.dumps(claims)[:-1] + ', "sub": "someone-else"}'
    dup_claims_input = f"{h}.{b64(dup_claims.encode())}"
    dup_claims_sig = _signature(key, dup_claims_input)
    return {
        "expired": sign_jwt(key, forged_claims(partner, iat=int(now) - 900, exp=int(now) - 300)),
        "not yet valid (nbf)": sign_jwt(key, forged_claims(partner, nbf=int(now) + 600)),
        "wrong audience": sign_jwt(key, forged_claims(partner, aud="urn:qes-signer-staging")),
        "another resource's token": sign_jwt(key, forged_claims(partner, aud="urn:payroll-api")),
        "unknown issuer": sign_jwt(key, forged_claims(partner, iss="http://127.0.0.1:1/evil")),
        "the other issuer's iss": sign_jwt(key, forged_claims(partner, iss=idp.issuer)),
        "alg none": compact({"alg": "none", "typ": "at+jwt"}, claims),
        "alg None, signature kept": record(f"{b64(NONE_HEADER)}.{p}.{s}"),
        "HS256 with the public key": record(
            jws.serialize_compact(
                {"alg": "HS256", "typ": "at+jwt", "kid": key.kid},
                json.dumps(claims).encode(),
                OctKey.import_key(public),
                algorithms=["HS256"],
            )
        ),
        "alg outside the allow-list": record(
            jws.serialize_compact(
                {"alg": "PS512", "typ": "at+jwt", "kid": "rsa-1"},
                json.dumps(claims).encode(),
                rsa,
                algorithms=["PS512"],
            )
        ),
        "unknown kid": sign_jwt(attacker, claims, {"kid": "no-such-key"}),
        "foreign kid (the other issuer's key)": sign_jwt(idp.signing_key, claims),
        "attacker key under the real kid": sign_jwt(attacker, claims),
        "tampered payload": record(f"{h}.{b64(json.dumps(claims).encode())}.{s}"),
        "stripped signature": record(f"{h}.{p}."),
        "jku to the attacker's keys": sign_jwt(
            attacker, claims, {"jku": "http://127.0.0.1:9/jwks.json"}
        ),
        "x5u to the attacker's certificate": sign_jwt(
            attacker, claims, {"x5u": "http://127.0.0.1:9/cert.pem"}
        ),
        "embedded jwk": sign_jwt(attacker, claims, {"jwk": attacker.as_dict(private=False)}),
        "x5c chain": sign_jwt(attacker, claims, {"x5c": [b64(b"not a certificate")]}),
        "crit header, real key": record(f"{crit_input}.{_signature(key, crit_input)}"),
        "duplicate header member, real key": record(f"{dup_input}.{dup_sig}"),
        "duplicate claim, real key": record(f"{dup_claims_input}.{dup_claims_sig}"),
    }


async def test_attacks_that_held_are_refused_and_make_nothing(
    aclient: TestClient[Any, Any], partner: RunningIdp, idp: RunningIdp, database_url: str
) -> None:
    real = await partner_token(partner)
    status, body = await sign_random(aclient, real)
    assert status == 201, body  # the partner is trusted to sign: the attacks are not trivial
    before = await records(database_url)
    for name, token in attacks(partner, idp, real).items():
        status, body = await sign_random(aclient, token)
        assert status == 401, (name, status, body)
        assert body["type"] == "/problems/invalid-token", (name, body)
    assert await records(database_url) == before


async def test_replay_is_refused_when_jti_is_required(
    aclient: TestClient[Any, Any], partner: RunningIdp, database_url: str
) -> None:
    once = await partner_token(partner, "partner-once")
    before = await records(database_url)
    assert (await sign_random(aclient, once, operation=False))[0] == 201
    status, body = await sign_random(aclient, once, operation=False)
    assert (status, body["type"]) == (401, "/problems/token-replayed")
    assert await records(database_url) == before + 1


async def test_id_tokens_are_not_access_tokens(
    aclient: TestClient[Any, Any], partner: RunningIdp, database_url: str
) -> None:
    """Fixed: an ID token whose ``aud`` is the API (its RP's client_id equals the API's
    audience) has ``nonce`` and no ``at+jwt`` typ: 401, whatever else it carries."""
    login = await partner.user_login(
        "mallory", "partner-only-mallory", "urn:qes-signer", scope="openid profile email"
    )
    id_token = login["id_token"]
    header, claims = (
        json.loads(base64.urlsafe_b64decode(x + "==")) for x in id_token.split(".")[:2]
    )
    assert claims["aud"] == "urn:qes-signer" and "nonce" in claims
    assert header.get("typ", "JWT").lower() != "at+jwt"
    key = partner.signing_key
    forged = {
        "the IdP's own ID token": id_token,
        "no typ": signed(key, {"alg": "ES256", "kid": key.kid}, forged_claims(partner)),
        "typ JWT": sign_jwt(key, forged_claims(partner), {"typ": "JWT"}),
        "at+jwt with a nonce": sign_jwt(key, forged_claims(partner, nonce="n-0S6_WzA2Mj")),
    }
    before = await records(database_url)
    for name, token in forged.items():
        status, body = await sign_random(aclient, token)
        assert (status, body["type"]) == (401, "/problems/invalid-token"), (name, body)
        assert "not an access token" in body["detail"], (name, body)
    assert await records(database_url) == before
    # The same claims typed as an access token sign: the refusals above are for the type alone.
    status, body = await sign_random(aclient, sign_jwt(key, forged_claims(partner)))
    assert status == 201, body


async def test_a_rotated_out_key_stops_at_once_even_for_a_token_used_before(
    aclient: TestClient[Any, Any],
    tmp_path: Path,
    rotating_port: int,
    clock: FakeClock,
    database_url: str,
) -> None:
    """Fixed: the IdP drops its key (emergency rotation); as soon as the signer has fetched
    the new key set, a token made with the old key is refused, also one that signed before
    (its verification was cached) and whose JWKS cache lifetime (300 s) has not run out."""
    old, new = new_signing_key(), new_signing_key()
    with start_idp(
        tmp_path / "before", port=rotating_port, clients=PARTNER_CLIENTS, private_jwks=KeySet([old])
    ) as before:
        used = await partner_token(before)
        unused = await partner_token(before)
        assert (await sign_random(aclient, used))[0] == 201
    assert (await sign_random(aclient, used))[0] == 201  # the cached verification, IdP down
    clock.advance(11)  # past the unknown-kid refetch rate limit (10 s), far inside max-age
    with start_idp(
        tmp_path / "after", port=rotating_port, clients=PARTNER_CLIENTS, private_jwks=KeySet([new])
    ) as after:
        fresh = await partner_token(after)
        assert (await sign_random(aclient, fresh))[0] == 201  # unknown kid: the new key set
        count = await records(database_url)
        for token in (used, unused):
            status, body = await sign_random(aclient, token)
            assert (status, body["type"]) == (401, "/problems/invalid-token"), body
        assert await records(database_url) == count
        assert (await sign_random(aclient, fresh))[0] == 201  # the new key's tokens still sign


async def test_bad_bytes_in_authorization_get_400_and_never_reach_a_log(
    aclient: TestClient[Any, Any], partner: RunningIdp, database_url: str, capsys: Any
) -> None:
    """Fixed: NUL, 0x01, DEL and bytes 0x80-0xff around a valid token give 400 problem+json
    whose body holds no part of it, and the log neither (here; the session scan checks every
    log of the run)."""
    token = await partner_token(partner)
    signature = token.rsplit(".", 1)[1]
    body = json.dumps({"hash_algorithm": "sha256", "hashes": [b64(b"\x01" * 32) + "="]}).encode()
    before = await records(database_url)
    capsys.readouterr()
    values = [
        token.encode() + b"\x00",
        token.encode() + b"\x01",
        token.encode()[:40] + b"\x00" + token.encode()[40:],
        token.encode() + b"\x7f",
        token.encode() + b"\x80\xff",
        b"\xff" + token.encode(),
        token.encode().replace(b".", b"\xc3\xa9", 1),
    ]
    for value in values:
        head = (
            b"POST /api/v1/signatures HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n"
            b"Authorization: Bearer " + value + b"\r\n"
        )
        status, answer = await raw_request(aclient, head, body)
        assert status == 400, (value, answer)
        problem = json.loads(answer)
        assert problem["status"] == 400 and problem["type"] in (
            "/problems/malformed-request",
            "/problems/malformed-authorization",
        ), problem
        assert signature.encode() not in answer and signature[:24].encode() not in answer
    out, err = capsys.readouterr()
    assert "http_request_unparsable" in out + err  # the logs of these requests were captured
    assert signature not in out + err and signature[:24] not in out + err
    assert await records(database_url) == before


async def held_request(aclient: TestClient[Any, Any], idp: RunningIdp) -> dict[str, Any]:
    """A batch request of the demo seal job, held for two seal approvers (dev policy)."""
    token = await idp.client_token("demo-seal-batch", DEMO_SECRETS["demo-seal-batch"])
    body = {"hash_algorithm": "sha256", "hashes": [b64(b"\x02" * 32) + "="]}
    resp = await aclient.post("/api/v1/signatures", json=body, headers=api_headers(token))
    assert resp.status == 202, await resp.text()
    held: dict[str, Any] = await resp.json()
    return held


async def test_roles_from_an_issuer_without_grants_roles_do_not_count_on_any_api(
    aclient: TestClient[Any, Any], partner: RunningIdp, idp: RunningIdp
) -> None:
    """Fixed: a partner token claiming auditor, seal-approvers and admin (roles and groups)
    gets 403 on the audit, approvals and admin APIs; the same roles from the demo issuer, which
    grants them, are honoured (so the refusals are for the issuer, not the roles)."""
    held = await held_request(aclient, idp)
    partner_bearer = api_headers(await partner_token(partner))
    for path in ("/api/v1/certificates", "/api/v1/log/entries", "/api/v1/admin/policy"):
        resp = await aclient.get(path, headers=partner_bearer)
        assert resp.status == 403, (path, resp.status, await resp.text())
    for verb in ("", "/resume"):
        resp = await aclient.post(
            f"/api/v1/admin/suspensions{verb}", json={}, headers=partner_bearer
        )
        assert resp.status == 403, await resp.text()
    resp = await aclient.get("/api/v1/approval-requests", headers=partner_bearer)
    assert resp.status == 200 and held["id"] not in {
        r["id"] for r in (await resp.json())["requests"]
    }
    resp = await aclient.get(f"/api/v1/approval-requests/{held['id']}", headers=partner_bearer)
    assert resp.status == 404  # a non-member does not learn that the request exists
    decision = {"digest_commitment": held["digest_commitment"]}
    resp = await aclient.post(
        f"/api/v1/approval-requests/{held['id']}/approve", json=decision, headers=partner_bearer
    )
    assert resp.status == 403, await resp.text()
    auditor = await idp.client_token("demo-auditor", DEMO_SECRETS["demo-auditor"])
    resp = await aclient.get("/api/v1/certificates", headers=api_headers(auditor))
    assert resp.status == 200, await resp.text()


async def ui_login(aclient: TestClient[Any, Any], partner: RunningIdp, ui: str) -> tuple[int, str]:
    """Log mallory in to a UI of the signer through the partner IdP, as a browser would;
    returns the status and page of the callback (the signer keeps its cookies in aclient)."""
    resp = await aclient.get(f"/{ui}/login", allow_redirects=False)
    assert resp.status == 303, await resp.text()
    authorize = resp.headers["Location"]
    callback = f"http://127.0.0.1:{aclient.port}/{ui}/callback"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        page = await RunningIdp._follow(http, "GET", authorize, None, callback)
        action = re.search(r'<form[^>]*action="([^"]+)"', page)
        assert action is not None, page
        form = {"username": "mallory", "password": "partner-only-mallory"}
        back = await RunningIdp._follow(http, "POST", urljoin(authorize, action[1]), form, callback)
    resp = await aclient.get(
        back.removeprefix(f"http://127.0.0.1:{aclient.port}"), allow_redirects=False
    )
    return resp.status, await resp.text()


async def test_roles_from_an_issuer_without_grants_roles_do_not_count_on_any_page(
    aclient: TestClient[Any, Any], partner: RunningIdp, idp: RunningIdp, capsys: Any
) -> None:
    """Fixed: mallory's ID token at the partner claims the auditor and seal-approver roles.
    The audit UI refuses her (403); the approvals UI lets her in but shows her no request,
    hides its page (404) and refuses her decision (403)."""
    held = await held_request(aclient, idp)
    status, page = await ui_login(aclient, partner, "audit")
    assert status == 403 and "does not have the auditor role" in page, page
    assert "role_claims_ignored" in "".join(capsys.readouterr())
    status, page = await ui_login(aclient, partner, "approvals")
    assert status == 303, page
    listing = await aclient.get("/approvals")
    text = await listing.text()
    assert listing.status == 200 and "Mallory" in text and held["id"] not in text
    csrf = re.search(r'name="csrf" value="([^"]+)"', text)
    assert csrf is not None
    detail = await aclient.get(f"/approvals/{held['id']}")
    assert detail.status == 404
    form = {"csrf": csrf[1], "digest_commitment": held["digest_commitment"], "decision": "approve"}
    decided = await aclient.post(
        f"/approvals/{held['id']}/decide", data=form, allow_redirects=False
    )
    assert decided.status == 403, await decided.text()
