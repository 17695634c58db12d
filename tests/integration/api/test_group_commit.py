"""Group commit: a burst of concurrent requests shares HSM hops and database round trips, but
every request still gets its own key, certificate, record and idempotent response."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from signer.signing import pipeline
from tests.support.service import api_headers
from tests.support.verify import openssl_verify_signature

BURST = 3 * pipeline.MAX_BATCH  # more than the lanes can take in one hop each


async def test_burst_gets_one_key_certificate_and_record_per_request(
    client: TestClient,
    batch_token: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hops: list[int] = []
    run = pipeline.SigningService._run

    async def counting_run(self: pipeline.SigningService, jobs: list) -> None:  # type: ignore[type-arg]
        hops.append(len(jobs))
        await run(self, jobs)

    monkeypatch.setattr(pipeline.SigningService, "_run", counting_run)
    documents = [[secrets.token_bytes(40) for _ in range(1 + i % 3)] for i in range(BURST)]
    keyed = {i: secrets.token_hex(8) for i in range(0, BURST, 4)}

    async def post(i: int) -> dict:  # type: ignore[type-arg]
        extra = {"Idempotency-Key": keyed[i]} if i in keyed else {}
        r = await client.post(
            "/api/v1/signatures",
            json={
                "hash_algorithm": "sha256",
                "hashes": [
                    base64.b64encode(hashlib.sha256(d).digest()).decode() for d in documents[i]
                ],
            },
            headers=api_headers(batch_token, **extra),
        )
        assert r.status == 201, await r.text()
        return await r.json()  # type: ignore[no-any-return]

    results = await asyncio.gather(*(post(i) for i in range(BURST)))
    assert sum(hops) == BURST and max(hops) > 1, f"no hop carried several requests: {hops}"

    serials = [r["serial"] for r in results]
    assert len(set(serials)) == BURST, "two requests shared a certificate"
    keys = {
        x509.load_pem_x509_certificate(r["certificate"].encode())
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        for r in results
    }
    assert len(keys) == BURST, "two requests shared a key"

    for i, result in enumerate(results):  # every signature, checked by OpenSSL
        assert len(result["signatures"]) == len(documents[i])
        cert = tmp_path / f"{i}.pem"
        cert.write_text(result["certificate"])
        for j, (doc, sig) in enumerate(zip(documents[i], result["signatures"], strict=True)):
            data, sig_file = tmp_path / f"{i}-{j}.bin", tmp_path / f"{i}-{j}.sig"
            data.write_bytes(doc)
            sig_file.write_bytes(base64.b64decode(sig))
            done = openssl_verify_signature(cert, sig_file, data, "sha256")
            assert done.returncode == 0 and "Verified OK" in done.stdout, done.stderr

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT serial, status, signed_count, destruction FROM signing_records"
            " WHERE serial = ANY($1::text[])",
            serials,
        )
        stored = await conn.fetch(
            "SELECT key, response->>'serial' AS serial FROM idempotency_keys"
            " WHERE key = ANY($1::text[])",
            list(keyed.values()),
        )
    finally:
        await conn.close()
    by_serial = {r["serial"]: r for r in rows}
    assert set(by_serial) == set(serials)
    for i, serial in enumerate(serials):
        row = by_serial[serial]
        assert row["status"] == "completed"
        assert row["signed_count"] == len(documents[i])
        assert '"confirmed_absent": true' in row["destruction"]
    assert {r["key"]: r["serial"] for r in stored} == {k: serials[i] for i, k in keyed.items()}
