"""POST /api/v1/signatures end to end: a real IdP token, the real HSM, the real database, and
every certificate and signature checked by OpenSSL and pkilint."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.profiles import Level
from tests.support.pkilint import ETSI_TYPES, SHORT_TERM_FINDINGS, lint
from tests.support.service import api_headers
from tests.support.verify import openssl_verify_chain, openssl_verify_signature


def documents(n: int, algorithm: str = "sha256") -> list[tuple[bytes, bytes]]:
    docs = [f"document {i} of {n}\n".encode() * (i + 1) for i in range(n)]
    return [(d, hashlib.new(algorithm, d).digest()) for d in docs]


async def sign(
    client: TestClient, token: str, digests: list[bytes], algorithm: str = "sha256", **extra: Any
) -> dict[str, Any]:
    body = {
        "hash_algorithm": algorithm,
        "hashes": [base64.b64encode(d).decode() for d in digests],
        **extra,
    }
    resp = await client.post("/api/v1/signatures", json=body, headers=api_headers(token))
    payload = await resp.json()
    assert resp.status == 201, payload
    return payload


def write_chain(tmp: Path, result: dict[str, Any]) -> tuple[Path, Path, Path]:
    """The response's chain split into leaf, issuing CA and root PEM files."""
    certs = x509.load_pem_x509_certificates(result["chain"].encode())
    assert len(certs) == 3
    paths = []
    for name, cert in zip(("leaf", "issuing", "root"), certs, strict=True):
        path = tmp / f"{name}.pem"
        path.write_bytes(cert.public_bytes(Encoding.PEM))
        paths.append(path)
    return paths[0], paths[1], paths[2]


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
async def test_batch_signatures_verify_with_openssl(
    client: TestClient, batch_token: str, tmp_path: Path, algorithm: str
) -> None:
    docs = documents(3, algorithm)
    result = await sign(client, batch_token, [d for _, d in docs], algorithm)
    leaf, issuing, root = write_chain(tmp_path, result)
    openssl_verify_chain(root, issuing, leaf)
    assert len(result["signatures"]) == 3
    for i, ((data, _), sig) in enumerate(zip(docs, result["signatures"], strict=True)):
        (tmp_path / f"doc{i}").write_bytes(data)
        (tmp_path / f"doc{i}.sig").write_bytes(base64.b64decode(sig))
        done = openssl_verify_signature(
            leaf, tmp_path / f"doc{i}.sig", tmp_path / f"doc{i}", algorithm
        )
        assert done.returncode == 0 and "Verified OK" in done.stdout, done.stdout + done.stderr
    # input order: signature 0 does not verify document 1
    wrong = openssl_verify_signature(leaf, tmp_path / "doc0.sig", tmp_path / "doc1", algorithm)
    assert wrong.returncode != 0


async def test_certificate_is_ten_minutes_and_matches_response(
    client: TestClient, batch_token: str
) -> None:
    result = await sign(client, batch_token, [d for _, d in documents(1)])
    cert = x509.load_pem_x509_certificate(result["certificate"].encode())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(minutes=10)
    assert int(result["serial"], 16) == cert.serial_number and len(result["serial"]) % 2 == 0
    assert result["record_url"].endswith(f"/api/v1/certificates/{result['serial']}")
    assert result["key"]["destruction"] == {
        "private_destroyed": True,
        "public_destroyed": True,
        "confirmed_absent": True,
    }
    assert all(
        result["key"]["evidence"][k]
        for k in ("local", "never_extractable", "always_sensitive", "sensitive")
    )
    assert not result["key"]["evidence"]["extractable"]


@pytest.mark.parametrize("level", [Level.QES, Level.QUALIFIED, Level.ADVANCED])
@pytest.mark.parametrize("who", ["legal", "natural"])
async def test_issued_certificates_pass_pkilint(
    client: TestClient, batch_token: str, alice_token: str, tmp_path: Path, level: Level, who: str
) -> None:
    token = batch_token if who == "legal" else alice_token
    result = await sign(client, token, [d for _, d in documents(1)], profile=level.value)
    leaf, issuing, root = write_chain(tmp_path, result)
    openssl_verify_chain(root, issuing, leaf)
    etsi, _ = lint("lint_etsi_cert", "-t", ETSI_TYPES[(who, level)], "-s", "WARNING", leaf)
    assert etsi == SHORT_TERM_FINDINGS
    detected, _ = lint("lint_etsi_cert", "-d", "-o", "-s", "WARNING", leaf)
    assert detected == SHORT_TERM_FINDINGS
    pkix, _ = lint("lint_pkix_cert", "-s", "WARNING", leaf)
    assert pkix == []
    pair, _ = lint("lint_pkix_signer_signee_cert_chain", "-s", "WARNING", issuing, leaf)
    assert pair == []
