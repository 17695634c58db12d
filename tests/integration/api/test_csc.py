"""CSC API (issue 6): credentials/list -> info -> authorize -> signHash in one process, with v1
and v2 field names; every refusal leaves nothing signed and the key where it should be; an
expired unused credential's key is destroyed by the sweeper and its record says so.

Signatures are checked by OpenSSL (chain and signature over the signed content); the key's
state by a separate process listing the token (plain python-pkcs11).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.logentry import SUPPRESSED_REASON, entry_fields
from signer.keys.credential import CREDENTIAL_PREFIX
from signer.storage.csc import CredentialAuthorization
from tests.support.idp import DEMO_PASSWORDS, DEMO_SECRETS, RunningIdp
from tests.support.service import DEV_CONFIG, run_qes
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_verify_chain, openssl_verify_signature, run

ECDSA_SHA256 = "1.2.840.10045.4.3.2"
SHA256 = "2.16.840.1.101.3.4.2.1"
SHA384 = "2.16.840.1.101.3.4.2.2"
# The credential's certificate ends validity_seconds - backdate_seconds (600 - 30) after it
# is made; the dev IdP's tokens live 600 s: this is past the one and before the other.
PAST_CREDENTIAL_EXPIRY = timedelta(seconds=575)


class Clock:
    """The service's injected clock: real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Csc:
    client: TestClient
    clock: Clock
    app: web.Application
    pool: asyncpg.Pool

    async def call(
        self, method: str, token: str | None, body: dict[str, Any], version: str = "v1"
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = await self.client.post(f"/csc/{version}/{method}", json=body, headers=headers)
        return resp.status, await resp.json()

    async def new_credential(self, token: str, version: str = "v1") -> str:
        """A credential with its key: ``list`` reserves the ID, ``info`` makes the key."""
        status, body = await self.call("credentials/list", token, {}, version)
        assert status == 200, body
        (credential_id,) = body["credentialIDs"]
        status, body = await self.call("credentials/info", token, {"credentialID": credential_id})
        assert status == 200, body
        return str(credential_id)

    async def authorize(self, token: str, credential_id: str, digests: list[bytes]) -> str:
        status, body = await self.call(
            "credentials/authorize",
            token,
            {"credentialID": credential_id, "numSignatures": len(digests), "hash": b64s(digests)},
        )
        assert status == 200, body
        assert 0 < body["expiresIn"] <= 300
        return str(body["SAD"])

    async def sign(
        self, token: str, credential_id: str, sad: str | None, digests: list[bytes], **extra: Any
    ) -> tuple[int, Any]:
        body = {
            "credentialID": credential_id,
            "hashAlgo": SHA256,
            "signAlgo": ECDSA_SHA256,
            "hash": b64s(digests),
            **({"SAD": sad} if sad is not None else {}),
            **extra,
        }
        return await self.call("signatures/signHash", token, body)

    async def record(self, credential_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(
            "SELECT c.state, c.end_reason, r.status, r.serial, r.signed_count, r.destruction,"
            " r.failure, r.digests, r.hash_algorithm, r.certificate, r.id"
            " FROM csc_credentials c JOIN signing_records r ON r.id = c.record_id"
            " WHERE c.id = $1",
            credential_id,
        )
        assert row is not None
        return row

    async def log_size(self) -> int:
        return int(await self.pool.fetchval("SELECT size FROM log_state WHERE id = 1"))

    async def entries_since(self, size: int) -> list[tuple[str, dict[str, bytes]]]:
        """The entries from log index ``size`` on, but the aggregates of refusal windows that
        close meanwhile (reason refusals-suppressed): the database is the session's, so a
        window other tests filled may close during a test; this app's own limits are never
        reached, so each refusal of the test is an entry of its own."""
        rows = await self.pool.fetch(
            "SELECT kind, entry FROM log_entries WHERE idx >= $1 ORDER BY idx", size
        )
        entries = [(r["kind"], dict(entry_fields(bytes(r["entry"]))[1])) for r in rows]
        return [(k, f) for k, f in entries if f.get("reason") != SUPPRESSED_REASON.encode()]


def b64s(items: list[bytes]) -> list[str]:
    return [base64.b64encode(i).decode() for i in items]


def digest_of(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()


@pytest.fixture
async def csc(
    aiohttp_client: Callable[..., Any],
    settings: Any,
    ca_ready: None,
    database_url: str,
    softhsm_token: SoftHsmToken,
) -> AsyncIterator[Csc]:
    from signer.app import create_app
    from signer.http.kit.state import SERVICES

    clock = Clock()
    # Refusals refused at the edge are logged under a per-address rate limit shared by every
    # test in the window; these tests count entries, so their app logs every one.
    unlimited = dataclasses.replace(settings.log, refusals_per_source=10**6, refusals_total=10**6)
    app = create_app(dataclasses.replace(settings, log=unlimited), clock=clock)
    client = await aiohttp_client(app)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield Csc(client, clock, app, pool)
    finally:
        await pool.close()
    services = app[SERVICES]
    keys = await services.hsm.run(lambda s: s.credential_labels())
    assert keys == set(), f"CSC credential keys left in the HSM: {keys}"
    leftover = await services.hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
    assert leftover == [], f"session objects left in the HSM: {leftover}"


@pytest.fixture
async def carol_token(idp: RunningIdp) -> str:
    return await idp.user_token("carol", DEMO_PASSWORDS["carol"], "demo-web")


def token_labels(token: SoftHsmToken) -> set[str]:
    """Credential key labels as a separate process sees the token."""
    return {o.label for o in token.list_objects() if o.label.startswith(CREDENTIAL_PREFIX)}


async def test_info_advertises_both_versions(csc: Csc) -> None:
    status, v1 = await csc.call("info", None, {})
    assert status == 200
    assert v1["specs"] == "1.0.4.0"
    assert {"credentials/list", "credentials/info", "credentials/authorize"} <= set(v1["methods"])
    assert {"signatures/signHash", "signatures/timestamp"} <= set(v1["methods"])
    status, v2 = await csc.call("info", None, {"lang": "en-US"}, version="v2")
    assert status == 200
    assert v2["specs"].startswith("2.")
    # No OAuth2 credential flow without web signing (tests/e2e/test_csc_oauth2.py has it on).
    assert "oauth2Issuer" not in v2 and "oauth2" not in v1 and v1["authType"] == ["external"]
    assert ECDSA_SHA256 in v2["signAlgorithms"]["algos"]
    resp = await csc.client.get("/csc/v2/info")
    assert resp.status == 200 and (await resp.json())["specs"] == v2["specs"]
    doc = await (await csc.client.get("/openapi.json")).json()
    for version in ("v1", "v2"):
        for method in v1["methods"]:
            assert f"/csc/{version}/{method}" in doc["paths"], method


async def test_credentials_list_never_makes_a_key(
    csc: Csc, batch_token: str, softhsm_token: SoftHsmToken, idp: RunningIdp
) -> None:
    """Issue 17 item 9: list N times, the token's objects are unchanged and the ID is the same
    reservation; the first info makes one key pair, later ones none; authorize of a fresh
    reservation makes its key too."""
    before = len(softhsm_token.list_objects())
    listed = set()
    for _ in range(5):
        status, body = await csc.call("credentials/list", batch_token, {}, "v2")
        assert status == 200, body
        listed.update(body["credentialIDs"])
    status, body = await csc.call("credentials/list", batch_token, {"credentialInfo": True}, "v2")
    assert status == 200 and body["credentialInfos"][0]["key"]["status"] == "disabled", body
    assert body["credentialInfos"][0]["cert"]["certificates"] == []
    assert len(softhsm_token.list_objects()) == before
    (credential_id,) = listed | set(body["credentialIDs"])
    for _ in range(2):
        asked = {"credentialID": credential_id}
        status, info = await csc.call("credentials/info", batch_token, asked)
        assert status == 200 and info["key"]["status"] == "enabled", info
        assert len(softhsm_token.list_objects()) == before + 2  # one key pair, made once
    other = await another_token(idp)  # making a credential spends its token's jti
    status, body = await csc.call("credentials/list", other, {})
    (second,) = body["credentialIDs"]
    assert second != credential_id and len(softhsm_token.list_objects()) == before + 2
    digest = digest_of(b"authorised first")
    await csc.authorize(other, second, [digest])  # no info before: authorize makes it
    assert len(softhsm_token.list_objects()) == before + 4
    for used in (credential_id, second):
        await _use_up(csc, batch_token, used)
    assert len(softhsm_token.list_objects()) == before


async def test_concurrent_first_reads_make_one_credential(
    csc: Csc, batch_token: str, softhsm_token: SoftHsmToken
) -> None:
    """Three credentials/info at once on a fresh reservation: one key pair stays, all three
    answer with its certificate (the losers' keys are destroyed)."""
    before = len(softhsm_token.list_objects())
    status, body = await csc.call("credentials/list", batch_token, {})
    assert status == 200, body
    (credential_id,) = body["credentialIDs"]
    asked = {"credentialID": credential_id}
    answers = await asyncio.gather(
        *(csc.call("credentials/info", batch_token, asked) for _ in range(3))
    )
    assert [status for status, _ in answers] == [200, 200, 200], answers
    assert len({info["cert"]["certificates"][0] for _, info in answers}) == 1
    assert len(softhsm_token.list_objects()) == before + 2
    await _use_up(csc, batch_token, credential_id)
    assert len(softhsm_token.list_objects()) == before


async def test_v1_flow_signs_once_and_destroys_the_key(
    csc: Csc, batch_token: str, softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    credential_id = await csc.new_credential(batch_token)
    assert any(credential_id in label for label in token_labels(softhsm_token))
    status, info = await csc.call(
        "credentials/info",
        batch_token,
        {"credentialID": credential_id, "certificates": "chain", "certInfo": True},
    )
    assert status == 200, info
    assert info["key"]["status"] == "enabled" and ECDSA_SHA256 in info["key"]["algo"]
    assert info["SCAL"] == "2" and isinstance(info["multisign"], int)
    assert (info["key"]["len"], info["key"]["curve"]) == (256, "1.2.840.10045.3.1.7")
    leaf, issuing, root = (
        x509.load_der_x509_certificate(base64.b64decode(c)) for c in info["cert"]["certificates"]
    )
    assert info["cert"]["serialNumber"] == format(leaf.serial_number, "x")
    before = await csc.record(credential_id)
    assert (before["state"], before["status"]) == ("active", "issued")

    contents = [b"first document", b"second document"]
    digests = [digest_of(c) for c in contents]
    size = await csc.log_size()
    sad = await csc.authorize(batch_token, credential_id, digests)
    # the hashes in another order than authorized: signatures still follow the input order
    status, signed = await csc.sign(batch_token, credential_id, sad, digests[::-1])
    assert status == 200, signed
    signatures = [base64.b64decode(s) for s in signed["signatures"]][::-1]

    paths = {}
    for name, cert in (("leaf", leaf), ("issuing", issuing), ("root", root)):
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(Encoding.PEM))
    openssl_verify_chain(paths["root"], paths["issuing"], paths["leaf"])
    for i, (content, signature) in enumerate(zip(contents, signatures, strict=True)):
        doc, sig = tmp_path / f"doc{i}", tmp_path / f"doc{i}.sig"
        doc.write_bytes(content)
        sig.write_bytes(signature)
        verified = openssl_verify_signature(paths["leaf"], sig, doc, "sha256")
        assert verified.returncode == 0 and "Verified OK" in verified.stdout, verified.stderr

    after = await csc.record(credential_id)
    assert (after["state"], after["end_reason"], after["status"]) == (
        "destroyed",
        "signed",
        "completed",
    )
    assert after["signed_count"] == 2 and after["hash_algorithm"] == "sha256"
    assert [bytes(d) for d in after["digests"]] == digests[::-1]
    assert '"confirmed_absent": true' in after["destruction"]
    assert not any(credential_id in label for label in token_labels(softhsm_token))
    (kind, fields), *_ = await csc.entries_since(size)
    assert kind == "issuance" and fields["outcome"] == b"completed"
    assert fields["certificate_serial"].hex().lstrip("0") == format(leaf.serial_number, "x")

    # The key is gone: the credential cannot be authorized again.
    status, again = await csc.call(
        "credentials/authorize",
        batch_token,
        {"credentialID": credential_id, "numSignatures": 1, "hash": b64s(digests[:1])},
    )
    assert status == 400 and again["error"] == "invalid_request", again


async def test_v2_field_names(csc: Csc, batch_token: str) -> None:
    credential_id = await csc.new_credential(batch_token, version="v2")
    status, listed = await csc.call(
        "credentials/info", batch_token, {"credentialID": credential_id}, version="v2"
    )
    assert status == 200 and len(listed["cert"]["certificates"]) == 1
    digest = hashlib.sha384(b"v2 document").digest()
    status, auth = await csc.call(
        "credentials/authorize",
        batch_token,
        {
            "credentialID": credential_id,
            "numSignatures": 1,
            "hashes": b64s([digest]),
            "hashAlgorithmOID": SHA384,
        },
        version="v2",
    )
    assert status == 200, auth
    status, signed = await csc.call(
        "signatures/signHash",
        batch_token,
        {
            "credentialID": credential_id,
            "SAD": auth["SAD"],
            "hashes": b64s([digest]),
            "hashAlgorithmOID": SHA384,
            "signAlgo": "1.2.840.10045.2.1",
            "operationMode": "S",
        },
        version="v2",
    )
    assert status == 200, signed
    leaf = x509.load_der_x509_certificate(bytes((await csc.record(credential_id))["certificate"]))
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(
        base64.b64decode(signed["signatures"][0]), digest, ec.ECDSA(Prehashed(hashes.SHA384()))
    )


async def test_refusals_sign_nothing(
    csc: Csc, batch_token: str, alice_token: str, carol_token: str
) -> None:
    """SAD used twice; hashes not authorized; more signatures than authorized; another user's
    credential; unsupported signAlgo; missing SAD: each refused with CSC's error body, the
    record still 'issued' (or, after the one good use, 'completed' once), each refusal logged
    (by the service with the requester, or by the edge when refused before the service)."""
    one, two = digest_of(b"authorized"), digest_of(b"never authorized")
    credential_id = await csc.new_credential(alice_token)
    sad = await csc.authorize(alice_token, credential_id, [one])
    size = await csc.log_size()

    cases: list[tuple[str, str, str | None, list[bytes], dict[str, Any], str]] = [
        ("hashes not authorized", alice_token, sad, [two], {}, "csc-hashes-not-authorized"),
        ("more signatures", alice_token, sad, [one, one], {}, "csc-too-many-signatures"),
        ("another user", carol_token, sad, [one], {}, "csc-credential-not-found"),
        (
            "unsupported signAlgo",
            alice_token,
            sad,
            [one],
            {"signAlgo": "1.2.840.113549.1.1.11"},
            "csc-unsupported-sign-algo",
        ),
        ("no SAD", alice_token, None, [one], {}, "csc-sad-missing"),
        ("unknown SAD", alice_token, "qcsc_not-a-sad", [one], {}, "csc-invalid-sad"),
    ]
    logged = []
    for what, token, given_sad, digests, extra, reason in cases:
        status, body = await csc.sign(token, credential_id, given_sad, digests, **extra)
        assert status == 400, (what, body)
        assert body["error"] == "invalid_request" and body["error_description"], (what, body)
        record = await csc.record(credential_id)
        assert (record["state"], record["status"]) == ("active", "issued"), what
        logged.append(reason)
    refusals = [f["reason"].decode() for k, f in await csc.entries_since(size) if k == "refusal"]
    assert refusals == logged

    # carol can neither see nor authorize alice's credential
    status, body = await csc.call("credentials/info", carol_token, {"credentialID": credential_id})
    assert status == 400 and body["error_description"] == "Invalid parameter credentialID"

    # the SAD still works once for exactly what it authorizes ...
    status, body = await csc.sign(alice_token, credential_id, sad, [one])
    assert status == 200, body
    # ... and never again
    status, body = await csc.sign(alice_token, credential_id, sad, [one])
    assert status == 400 and body["error_description"] == "The SAD has already been used"
    record = await csc.record(credential_id)
    assert (record["status"], record["signed_count"]) == ("completed", 1)

    # a batch token cannot use alice's SAD either (and its own credential is untouched)
    other = await csc.new_credential(batch_token)
    status, body = await csc.sign(batch_token, other, sad, [one])
    assert status == 400, body
    assert (await csc.record(other))["state"] == "active"
    await _use_up(csc, batch_token, other)


async def another_token(idp: RunningIdp) -> str:
    """A second demo-batch token: each one-shot credential is one signing operation, which
    spends the token's jti (where the credential is made: the first info or authorize)."""
    return await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])


async def test_a_token_makes_one_credential(
    csc: Csc, batch_token: str, softhsm_token: SoftHsmToken
) -> None:
    """A jti starts one signing operation: making a second credential with it is refused and
    makes no key (listing only reserves an ID and spends nothing), while info on the
    credential it made spends nothing."""
    first = await csc.new_credential(batch_token)
    before = len(softhsm_token.list_objects())
    status, body = await csc.call("credentials/list", batch_token, {})
    assert status == 200, body
    (reserved,) = body["credentialIDs"]
    size = await csc.log_size()
    status, body = await csc.call("credentials/info", batch_token, {"credentialID": reserved})
    assert (status, body["error"]) == (401, "invalid_token"), body
    assert len(softhsm_token.list_objects()) == before
    # the replayed jti is a refusal entry, as at the batch API (signer.http.kit.refused)
    logged = await csc.entries_since(size)
    assert [(kind, f["reason"]) for kind, f in logged] == [("refusal", b"token.replayed")]
    for _ in range(2):
        status, body = await csc.call("credentials/info", batch_token, {"credentialID": first})
        assert status == 200, body
    await _use_up(csc, batch_token, first)


async def test_credential_token_only_for_its_credential(
    csc: Csc, batch_token: str, idp: RunningIdp
) -> None:
    """A v2 credential token (the bearer is the secret, no SAD) works for the credential it
    was made for and is refused for another one, even of the same owner."""
    from signer.http.csc.api import CSC

    service = csc.app[CSC]
    first = await csc.new_credential(batch_token)
    second = await csc.new_credential(await another_token(idp))
    owner = await csc.record(first)
    row = await csc.pool.fetchrow(
        "SELECT token_issuer, token_subject FROM csc_credentials WHERE id=$1", first
    )
    digest = digest_of(b"credential token")
    token = await service.create_authorization(
        CredentialAuthorization(
            credential_id=first,
            token_issuer=row["token_issuer"],
            token_subject=row["token_subject"],
            hash_algorithm=SHA256,
            digests=(digest,),
            count=1,
            expires_at=datetime.now(UTC) + timedelta(minutes=2),
        )
    )
    assert token.startswith("qcsc_")
    stored = await csc.pool.fetchval("SELECT count(*) FROM csc_authorizations WHERE secret_hash=$1",
                                     hashlib.sha256(token.encode()).digest())  # fmt: skip
    assert stored == 1  # only the hash is kept

    size = await csc.log_size()
    status, body = await csc.sign(token, second, None, [digest])
    assert status == 400, body
    assert body["error_description"] == "The credential token does not authorize this credential"
    (kind, fields), *_ = await csc.entries_since(size)  # logged as the token owner's refusal
    assert (kind, fields["reason"]) == ("refusal", b"csc-credential-token-mismatch")
    assert fields["token_issuer"].decode() == row["token_issuer"]
    assert (await csc.record(second))["state"] == "active"
    status, body = await csc.sign(token, first, "also-a-sad", [digest])
    assert status == 400, body  # a credential token and a SAD: which one was meant?
    # not accepted as an access token elsewhere
    status, body = await csc.call("credentials/info", token, {"credentialID": first})
    assert status == 401 and body["error"] == "invalid_token"

    status, body = await csc.sign(token, first, None, [digest])
    assert status == 200, body
    assert (await csc.record(first))["status"] == "completed"
    assert owner["status"] == "issued"
    await _use_up(csc, batch_token, second)


async def test_expired_credential_is_refused_and_swept(
    csc: Csc, batch_token: str, softhsm_token: SoftHsmToken, idp: RunningIdp
) -> None:
    from signer.http.csc.api import CSC

    digest = digest_of(b"too late")
    used_late = await csc.new_credential(batch_token)
    sad = await csc.authorize(batch_token, used_late, [digest])
    unused = await csc.new_credential(await another_token(idp))
    size = await csc.log_size()

    csc.clock.offset = PAST_CREDENTIAL_EXPIRY
    status, body = await csc.sign(batch_token, used_late, sad, [digest])
    assert status == 400 and body["error_description"] in (
        "The credential has expired",
        "The SAD has expired",
    ), body
    status, body = await csc.call(
        "credentials/authorize",
        batch_token,
        {"credentialID": unused, "numSignatures": 1, "hash": b64s([digest])},
    )
    assert status == 400 and body["error_description"] == "The credential has expired", body
    status, body = await csc.call("credentials/info", batch_token, {"credentialID": unused})
    assert body["cert"]["status"] == "expired" and body["key"]["status"] == "disabled"

    await csc.app[CSC].sweep()  # the background sweeper may have been first: either is fine
    for credential_id in (used_late, unused):
        record = await csc.record(credential_id)
        assert (record["state"], record["end_reason"]) == ("destroyed", "expired-unused")
        assert (record["status"], record["failure"]) == ("failed", "csc-credential-expired-unused")
        assert record["signed_count"] == 0
        assert '"confirmed_absent": true' in record["destruction"]
    assert not (token_labels(softhsm_token) & {f"{CREDENTIAL_PREFIX}{used_late}"})
    assert not any(used_late in lb or unused in lb for lb in token_labels(softhsm_token))
    outcomes = [
        (k, f.get("failure", f.get("reason", b"")).decode())
        for k, f in await csc.entries_since(size)
    ]
    assert outcomes.count(("issuance", "csc-credential-expired-unused")) == 2
    assert ("refusal", "csc-credential-expired") in outcomes
    assert await csc.app[CSC].sweep() == 0  # a second sweep (another replica) ends nothing


async def test_bad_requests_get_csc_errors(csc: Csc, batch_token: str) -> None:
    status, body = await csc.call("credentials/list", None, {})
    assert status == 401 and body["error"] == "invalid_token"
    status, body = await csc.call("credentials/list", "not-a-jwt", {})
    assert status == 401 and body["error"] == "invalid_token"
    resp = await csc.client.post(
        "/csc/v1/credentials/info",
        data=b"{not json",
        headers={"Authorization": f"Bearer {batch_token}", "Content-Type": "application/json"},
    )
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"
    for body_in, param in (
        ({}, "credentialID"),
        ({"credentialID": 5}, "credentialID"),
        (
            {"credentialID": "x", "numSignatures": 2, "hash": b64s([os.urandom(32)])},
            "numSignatures",
        ),
        ({"credentialID": "x", "numSignatures": 1, "hash": ["%%%"]}, "hash"),
        ({"credentialID": "x", "numSignatures": 1, "hash": b64s([b"short"])}, "hash"),
    ):
        status, body = await csc.call("credentials/authorize", batch_token, body_in)
        assert status == 400, body
        assert body["error_description"] == f"Invalid parameter {param}", (body_in, body)
    status, body = await csc.call(
        "credentials/authorize", batch_token, {"credentialID": "x", "numSignatures": 1}, "v2"
    )
    assert status == 400 and body["error_description"] == "Invalid parameter hashes", body


async def test_refusals_before_the_service_are_logged(csc: Csc, batch_token: str) -> None:
    """Issue 5, "every refused request": a CSC call that creates, authorizes or uses a key and
    is refused at the edge (no or bad token, bad parameters) is a refusal entry; reading
    ``info`` is not a signing request and is not logged."""
    size = await csc.log_size()
    assert (await csc.call("credentials/list", None, {}))[0] == 401
    bad_count = {"credentialID": "x", "numSignatures": 2, "hash": b64s([os.urandom(32)])}
    sign = {**bad_count, "SAD": "x", "signAlgo": "1.2.840.10045.4.3.2"}
    assert (await csc.call("signatures/signHash", "not-a-jwt", sign))[0] == 401
    assert (await csc.call("credentials/authorize", batch_token, bad_count))[0] == 400
    assert (await csc.call("credentials/info", None, {"credentialID": "x"}))[0] == 401
    logged = await csc.entries_since(size)
    assert [(kind, f["reason"].decode()) for kind, f in logged] == [
        ("refusal", "csc-invalid-token"),
        ("refusal", "token.malformed"),
        ("refusal", "csc-invalid-parameter"),
    ]


async def _use_up(csc: Csc, token: str, credential_id: str) -> None:
    """Sign once with a credential so its key is destroyed (tests leave no key behind)."""
    digest = digest_of(credential_id.encode())
    sad = await csc.authorize(token, credential_id, [digest])
    status, body = await csc.sign(token, credential_id, sad, [digest])
    assert status == 200, body


async def test_a_sad_used_twice_at_once_signs_once(csc: Csc, batch_token: str) -> None:
    """Two signHash calls with one SAD at the same moment: the row locks let one sign."""
    digest = digest_of(b"raced")
    credential_id = await csc.new_credential(batch_token)
    sad = await csc.authorize(batch_token, credential_id, [digest])
    results = await asyncio.gather(
        *(csc.sign(batch_token, credential_id, sad, [digest]) for _ in range(4))
    )
    assert sorted(status for status, _ in results) == [200, 400, 400, 400], results
    record = await csc.record(credential_id)
    assert (record["status"], record["signed_count"]) == ("completed", 1)


async def test_time_stamp_from_the_built_in_tsa(csc: Csc, batch_token: str, tmp_path: Path) -> None:
    content = b"time-stamp me"
    digest = digest_of(content)
    status, body = await csc.call(
        "signatures/timestamp",
        batch_token,
        {"hash": b64s([digest])[0], "hashAlgo": SHA256, "nonce": "0badc0ffee"},
    )
    assert status == 200, body
    token = base64.b64decode(body["timestamp"])
    info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    assert info["nonce"].native == 0x0BADC0FFEE
    assert info["message_imprint"]["hashed_message"].native == digest
    resp = await csc.client.get("/api/v1/trust-bundle")
    bundle = await resp.json()
    (tmp_path / "root.pem").write_text(bundle["root"])
    (tmp_path / "issuing.pem").write_text(bundle["issuing_ca"])
    (tmp_path / "token.der").write_bytes(token)
    verified = run(
        "openssl", "ts", "-verify", "-token_in", "-in", tmp_path / "token.der",
        "-digest", digest.hex(), "-CAfile", tmp_path / "root.pem",
        "-untrusted", tmp_path / "issuing.pem",
    )  # fmt: skip
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout + verified.stderr
    for bad, param in (
        ({"hash": b64s([digest])[0], "hashAlgo": "1.2.3"}, "Unsupported hash algorithm"),
        (
            {"hash": b64s([digest])[0], "hashAlgo": SHA256, "nonce": "xyz"},
            "Invalid parameter nonce",
        ),
        ({"hash": b64s([digest])[0], "hashAlgo": SHA384}, "Invalid parameter hash"),
    ):
        status, body = await csc.call("signatures/timestamp", batch_token, bad)
        assert status == 400 and body["error_description"] == param, body
    status, body = await csc.call("signatures/timestamp", None, {"hash": b64s([digest])[0]})
    assert status == 401


async def test_sweeper_destroys_orphan_keys(csc: Csc, softhsm_token: SoftHsmToken) -> None:
    """A key whose credential row was never committed (a crash in between) is found by its
    label's expiry and destroyed; one whose label has not expired is left alone."""
    from signer.http.csc.api import CSC
    from signer.http.kit.state import SERVICES
    from signer.keys.credential import credential_label

    hsm = csc.app[SERVICES].hsm
    now = datetime.now(UTC)
    stale = credential_label("orphan-stale", now - timedelta(minutes=2))
    fresh = credential_label("orphan-fresh", now + timedelta(minutes=5))
    for label in (stale, fresh):
        await hsm.run(lambda s, lb=label: s.generate_credential_key(lb))
    await csc.app[CSC].sweep()
    assert stale not in token_labels(softhsm_token)
    assert fresh in token_labels(softhsm_token)
    csc.clock.offset = timedelta(minutes=7)
    await csc.app[CSC].sweep()
    assert fresh not in token_labels(softhsm_token)


async def test_audit_verify_accepts_csc_records(
    csc: Csc, batch_token: str, auditor_token: str, signer_env: dict[str, str], idp: RunningIdp
) -> None:
    """A CSC signature and an expired unused credential are records and log entries like any
    other: `qes audit verify` rebuilds their entries from the records and accepts the log."""
    from signer.http.csc.api import CSC

    credential_id = await csc.new_credential(batch_token)
    await _use_up(csc, batch_token, credential_id)
    await csc.new_credential(await another_token(idp))
    csc.clock.offset = PAST_CREDENTIAL_EXPIRY
    await csc.app[CSC].sweep()
    csc.clock.offset = timedelta(0)
    resp = await csc.client.post(
        "/api/v1/log/checkpoints", headers={"Authorization": f"Bearer {auditor_token}"}
    )
    assert resp.status in (200, 201), await resp.text()
    status, out, err = await run_qes("audit", "verify", "--config", str(DEV_CONFIG), env=signer_env)
    assert status == 0, out + err
    record = await csc.record(credential_id)
    resp = await csc.client.get(
        f"/api/v1/certificates/{record['serial']}",
        headers={"Authorization": f"Bearer {auditor_token}"},
    )
    shown = await resp.json()
    assert resp.status == 200 and shown["status"] == "completed", shown


async def test_sweeper_ends_a_credential_whose_signer_died(
    csc: Csc, batch_token: str, softhsm_token: SoftHsmToken
) -> None:
    """A credential left 'signing' (its process died after consuming the SAD) is left to its
    signer for a grace period after expiry, then its key is destroyed and its record fails
    with csc-signing-interrupted; nothing was released, so nothing is completed."""
    from signer.http.csc.api import CSC
    from signer.signing.csc import SIGNING_GRACE

    credential_id = await csc.new_credential(batch_token)
    await csc.pool.execute("UPDATE csc_credentials SET state='signing' WHERE id=$1", credential_id)
    csc.clock.offset = PAST_CREDENTIAL_EXPIRY
    await csc.app[CSC].sweep()
    assert (await csc.record(credential_id))["state"] == "signing"  # within the grace
    csc.clock.offset = PAST_CREDENTIAL_EXPIRY + SIGNING_GRACE
    await csc.app[CSC].sweep()
    record = await csc.record(credential_id)
    assert (record["state"], record["end_reason"]) == ("destroyed", "failed")
    assert (record["status"], record["failure"]) == ("failed", "csc-signing-interrupted")
    assert not any(credential_id in label for label in token_labels(softhsm_token))


async def test_ended_credentials_are_pruned_after_a_day_and_their_records_stay(
    csc: Csc, batch_token: str
) -> None:
    """Data minimisation: the credential and SAD rows of a credential that ended more than
    KEEP_ENDED ago are deleted by the sweeper; the signing record (the audit trail) stays."""
    from signer.http.csc.api import CSC
    from signer.signing.csc import KEEP_ENDED

    credential_id = await csc.new_credential(batch_token)
    await _use_up(csc, batch_token, credential_id)
    record_id = (await csc.record(credential_id))["id"]
    await csc.app[CSC].sweep_logged()
    assert await csc.pool.fetchval(
        "SELECT count(*) FROM csc_credentials WHERE id=$1", credential_id
    )
    csc.clock.offset = KEEP_ENDED + timedelta(seconds=1)
    await csc.app[CSC].sweep_logged()
    for table in ("csc_credentials", "csc_authorizations"):
        column = "id" if table == "csc_credentials" else "credential_id"
        left = await csc.pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE {column}=$1",  # noqa: S608 - fixed names
            credential_id,
        )
        assert left == 0, table
    status = await csc.pool.fetchval("SELECT status FROM signing_records WHERE id=$1", record_id)
    assert status == "completed"
