"""Real answers of the running app match the response schemas of ``/openapi.json``, which come
from the models (issue 16 item 3): a signature, the certificate inventory, the trust bundle and
a problem, each checked with a JSON Schema 2020-12 validator against the served document."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator


def check(document: dict[str, Any], component: str, body: Any) -> None:
    root = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    errors = [e.message for e in Draft202012Validator(root).iter_errors(body)]
    assert errors == [], (component, errors)


async def test_answers_match_the_documented_schemas(
    client: TestClient, batch_token: str, auditor_token: str
) -> None:
    document = await (await client.get("/openapi.json")).json()
    digest = base64.b64encode(hashlib.sha256(b"response schemas").digest()).decode()
    signed = await client.post(
        "/api/v1/signatures",
        json={"hash_algorithm": "sha256", "hashes": [digest], "format": "cades"},
        headers={"Authorization": f"Bearer {batch_token}"},
    )
    assert signed.status == 201, await signed.text()
    result = await signed.json()
    check(document, "SignatureResponse", result)

    auditor = {"Authorization": f"Bearer {auditor_token}"}
    page = await client.get("/api/v1/certificates", params={"limit": "2"}, headers=auditor)
    assert page.status == 200
    check(document, "CertificatePage", await page.json())
    one = await client.get(f"/api/v1/certificates/{result['serial']}", headers=auditor)
    assert one.status == 200
    check(document, "CertificateRecord", await one.json())

    bundle = await client.get("/api/v1/trust-bundle")
    assert bundle.status == 200
    check(document, "TrustBundle", await bundle.json())

    refused = await client.post(
        "/api/v1/signatures",
        json={"hash_algorithm": [], "hashes": [digest]},
        headers={"Authorization": f"Bearer {batch_token}"},
    )
    assert refused.status == 422
    problem = await refused.json(content_type="application/problem+json")
    check(document, "Problem", problem)
    assert problem["detail"] == "/hash_algorithm: not one of the allowed values"
