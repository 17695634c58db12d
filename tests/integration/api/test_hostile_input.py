"""Hostile values at the edge (issue 17 item 1): each is a 400/422 problem with a stable type
(or CSC's 400 ``invalid_request``), never a 500 nor a 503 that blames the database, and nothing
is issued. Run against the real app: PostgreSQL, SoftHSM2 and the dev IdP's tokens."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

DIGEST = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
NUL = "a\x00b"
SURROGATE = "a\ud800b"
BATCH = {"hash_algorithm": "sha256", "hashes": [DIGEST]}
ORDER = {
    "documents": [{"label": "contract.pdf", "digest": DIGEST}],
    "redirect_uri": "https://rp.example.com/signed",
    "state": "s1",
}
#: Each time has no UTC instant in Python's range (PostgreSQL would be asked for year 10000).
OUT_OF_RANGE = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]


async def problem(resp: Any, status: int, slug: str) -> dict[str, Any]:
    body = await resp.json(content_type=None)
    assert resp.status == status, body
    assert resp.content_type == "application/problem+json"
    assert body["type"] == f"/problems/{slug}", body
    return dict(body)


def post_json(client: TestClient, path: str, body: Any, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.post(path, data=json.dumps(body).encode(), headers=headers)


@pytest.mark.parametrize(
    ("change", "status", "slug"),
    [
        ({"hash_algorithm": []}, 422, "unsupported-hash-algorithm"),
        ({"hash_algorithm": {}}, 422, "unsupported-hash-algorithm"),
        ({"format": []}, 422, "unsupported-signature-format"),
        ({"profile": SURROGATE}, 400, "unacceptable-text"),
        ({"profile": NUL}, 400, "unacceptable-text"),
        ({"profile": ["qes"]}, 422, "invalid-request"),
        ({"labels": [SURROGATE]}, 400, "unacceptable-text"),
        ({"hashes": [DIGEST, {}]}, 422, "invalid-request"),
        ({SURROGATE: 1}, 400, "unacceptable-text"),
    ],
)
async def test_batch_signatures_refuse_hostile_values(
    client: TestClient,
    batch_token: str,
    records: Callable[[], Any],
    change: dict[str, Any],
    status: int,
    slug: str,
) -> None:
    before = await records()
    resp = await post_json(client, "/api/v1/signatures", {**BATCH, **change}, batch_token)
    body = await problem(resp, status, slug)
    assert SURROGATE not in json.dumps(body) and "\\ud800" not in json.dumps(body)
    assert await records() == before


async def test_a_refusal_names_the_field_not_the_input(
    client: TestClient, batch_token: str
) -> None:
    resp = await post_json(client, "/api/v1/signatures", {**BATCH, "profile": NUL}, batch_token)
    body = await problem(resp, 400, "unacceptable-text")
    assert body["detail"] == "/profile: holds a NUL character or a lone surrogate"
    resp = await post_json(client, "/api/v1/signatures", {**BATCH, "hashes": [7]}, batch_token)
    body = await problem(resp, 422, "invalid-request")
    assert body["detail"] == "/hashes/0: must be a string"


@pytest.mark.parametrize(
    ("change", "status", "slug"),
    [
        ({"hash_algorithm": []}, 422, "invalid-request"),
        ({"hash_algorithm": {}}, 422, "invalid-request"),
        ({"profile": SURROGATE}, 400, "unacceptable-text"),
        ({"state": NUL}, 400, "unacceptable-text"),
        ({"documents": [{"label": SURROGATE, "digest": DIGEST}]}, 400, "unacceptable-text"),
        ({"signer": {"subject": NUL}}, 400, "unacceptable-text"),
        ({"signer": []}, 422, "invalid-request"),
    ],
)
async def test_signing_requests_refuse_hostile_values(
    web: TestClient, change: dict[str, Any], status: int, slug: str
) -> None:
    from signer.http.sign.api import RP_REGISTRY

    added = await web.app[RP_REGISTRY].add("Hostile", [ORDER["redirect_uri"]])
    basic = aiohttp.encode_basic_auth(added.client.client_id, added.secret)  # RP first (401)
    resp = await web.post(
        "/api/v1/signing-requests",
        data=json.dumps({**ORDER, **change}).encode(),
        headers={"Content-Type": "application/json", "Authorization": basic},
    )
    await problem(resp, status, slug)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/certificates?subject=a%00b",
        "/api/v1/certificates?serial=ab%00",
        "/api/v1/certificates?email=%00@example.com",
        "/api/v1/certificates/ab%00cd",
        "/api/v1/log/entries?subject=a%00b",
        "/api/v1/log/entries?issuer=%00",
        "/api/v1/log/entries?client_id=%00",
        "/api/v1/log/entries?%00=1",
        "/api/v1/log/entries/1%00",
    ],
)
async def test_nul_in_a_query_or_path_is_refused_before_storage(
    client: TestClient, auditor_token: str, path: str
) -> None:
    resp = await client.get(path, headers={"Authorization": f"Bearer {auditor_token}"})
    await problem(resp, 400, "unacceptable-text")


@pytest.mark.parametrize("when", OUT_OF_RANGE)
@pytest.mark.parametrize("name", ["since", "until"])
async def test_times_out_of_range_are_refused(
    client: TestClient, auditor_token: str, name: str, when: str
) -> None:
    resp = await client.get(
        "/api/v1/certificates",
        params={name: when},
        headers={"Authorization": f"Bearer {auditor_token}"},
    )
    await problem(resp, 422, "invalid-request")


@pytest.mark.parametrize(
    "cursor",
    [
        ["9999-12-31T23:59:59-14:00", "00000000-0000-0000-0000-000000000000"],
        ["2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"],
        [1, 2],
    ],
)
async def test_hostile_cursors_are_refused(
    client: TestClient, auditor_token: str, cursor: Any
) -> None:
    text = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()
    resp = await client.get(
        "/api/v1/certificates",
        params={"cursor": text},
        headers={"Authorization": f"Bearer {auditor_token}"},
    )
    await problem(resp, 422, "invalid-request")


async def test_a_deeply_nested_cursor_is_refused(client: TestClient, auditor_token: str) -> None:
    text = base64.urlsafe_b64encode(b"[" * 5000).decode()
    resp = await client.get(
        "/api/v1/certificates",
        params={"cursor": text},
        headers={"Authorization": f"Bearer {auditor_token}"},
    )
    await problem(resp, 422, "invalid-request")


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("method", "body", "parameter"),
    [
        ("credentials/info", {"credentialID": NUL}, "credentialID"),
        ("credentials/info", {"credentialID": SURROGATE}, "credentialID"),
        ("credentials/info", {"credentialID": ["x"]}, "credentialID"),
        ("credentials/info", {"credentialID": "c", "certInfo": "yes"}, "certInfo"),
        ("credentials/authorize", {"credentialID": "c", "hashes": [DIGEST], "numSignatures": []},
         "numSignatures"),
        ("signatures/signHash", {"credentialID": NUL, "signAlgo": "1.2.840.10045.4.3.2",
                                 "hashes": [DIGEST], "SAD": "x"}, "credentialID"),
        ("signatures/signHash", {"credentialID": "c", "signAlgo": {}, "hashes": [DIGEST]},
         "signAlgo"),
        ("signatures/timestamp", {"hash": DIGEST, "hashAlgo": [], "nonce": "1"}, "hashAlgo"),
        ("credentials/list", {"userID": NUL}, "userID"),
    ],
)  # fmt: skip
async def test_csc_refuses_hostile_parameters(
    client: TestClient,
    batch_token: str,
    version: str,
    method: str,
    body: dict[str, Any],
    parameter: str,
) -> None:
    resp = await post_json(client, f"/csc/{version}/{method}", body, batch_token)
    answer = await resp.json()
    assert resp.status == 400, answer
    assert answer == {
        "error": "invalid_request",
        "error_description": f"Invalid parameter {parameter}",
    }
