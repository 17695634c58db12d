"""``POST /tsa``, ``GET /ca/issuing.crl`` and ``GET /api/v1/trust-bundle`` on the real service
(SoftHSM2 TSA key, PostgreSQL), judged by ``openssl ts``, rfc3161-client, ``openssl verify``
and pkilint (STANDARDS.md §3, §5)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimestampRequestBuilder,
    VerifierBuilder,
    decode_timestamp_response,
)

from tests.support.pkilint import lint

QUERY = {"Content-Type": "application/timestamp-query"}


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=False, timeout=60
    )


@pytest.fixture
async def bundle(client: TestClient, tmp_path: Path) -> dict[str, Path]:
    """root.pem, issuing.pem, tsa.pem from the trust bundle's JSON form."""
    resp = await client.get("/api/v1/trust-bundle")
    assert resp.status == 200 and resp.content_type == "application/json"
    body = await resp.json()
    assert len(body["tsa"]) == 1
    files = {name: tmp_path / f"{name}.pem" for name in ("root", "issuing", "tsa")}
    files["root"].write_text(body["root"])
    files["issuing"].write_text(body["issuing_ca"])
    files["tsa"].write_text(body["tsa"][0])
    assert body["pem"] == body["root"] + body["issuing_ca"] + body["tsa"][0]
    return files


async def post_query(client: TestClient, query: bytes) -> bytes:
    resp = await client.post("/tsa", data=query, headers=QUERY)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/timestamp-reply"
    return await resp.read()


@pytest.mark.parametrize(
    ("algorithm", "nonce"), [("sha256", True), ("sha384", True), ("sha512", False)]
)
async def test_openssl_query_reply_verify_round_trip(
    client: TestClient, bundle: dict[str, Path], tmp_path: Path, algorithm: str, nonce: bool
) -> None:
    data, query, reply = tmp_path / "data.bin", tmp_path / "q.tsq", tmp_path / "r.tsr"
    data.write_bytes(secrets.token_bytes(3000))
    made = run(
        "openssl", "ts", "-query", "-data", data, f"-{algorithm}", "-cert",
        *([] if nonce else ["-no_nonce"]), "-out", query,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    reply.write_bytes(await post_query(client, query.read_bytes()))

    text = run("openssl", "ts", "-reply", "-in", reply, "-text")
    assert text.returncode == 0 and "Status: Granted." in text.stdout, text.stdout + text.stderr
    assert ("Nonce: 0x" in text.stdout) is nonce, text.stdout
    chain = ["-CAfile", bundle["root"], "-untrusted", bundle["issuing"]]
    for source in (["-data", data], ["-queryfile", query]):
        done = run("openssl", "ts", "-verify", *source, "-in", reply, *chain)
        assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stdout + done.stderr

    changed = tmp_path / "changed.bin"
    changed.write_bytes(data.read_bytes()[:-1] + bytes([data.read_bytes()[-1] ^ 1]))
    refused = run("openssl", "ts", "-verify", "-data", changed, "-in", reply, *chain)
    assert refused.returncode != 0 and "Verification: FAILED" in refused.stdout
    other_root = run("openssl", "ts", "-verify", "-data", data, "-in", reply,
                     "-CAfile", bundle["issuing"], "-untrusted", bundle["issuing"])  # fmt: skip
    assert other_root.returncode != 0  # the issuing CA is not a trust anchor on its own


@pytest.mark.parametrize("algorithm", [HashAlgorithm.SHA256, HashAlgorithm.SHA512])
async def test_rfc3161_client_verifies_the_reply(
    client: TestClient, bundle: dict[str, Path], algorithm: HashAlgorithm
) -> None:
    message = secrets.token_bytes(500)
    request = (
        TimestampRequestBuilder()
        .data(message)
        .hash_algorithm(algorithm)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    response = decode_timestamp_response(await post_query(client, request.as_bytes()))
    assert response.status == PKIStatus.GRANTED
    assert response.tst_info.nonce == request.nonce
    root = x509.load_pem_x509_certificate(bundle["root"].read_bytes())
    issuing = x509.load_pem_x509_certificate(bundle["issuing"].read_bytes())
    verifier = (
        VerifierBuilder.from_request(request)
        .add_root_certificate(root)
        .add_intermediate_certificate(issuing)
        .build()
    )
    assert verifier.verify_message(response, message)
    with pytest.raises(Exception, match="Mismatch between messages"):
        verifier.verify_message(response, message + b"!")


async def test_garbage_gets_an_rfc3161_rejection(client: TestClient, tmp_path: Path) -> None:
    reply = tmp_path / "r.tsr"
    reply.write_bytes(await post_query(client, b"\x30\x03\x02\x01\x07 not a request"))
    text = run("openssl", "ts", "-reply", "-in", reply, "-text")
    assert text.returncode == 0, text.stderr
    assert "Status: Rejected." in text.stdout, text.stdout
    assert "the data submitted has the wrong format" in text.stdout, text.stdout
    assert "TST info:\nNot included." in text.stdout, text.stdout


async def test_wrong_media_type_is_415(client: TestClient, tmp_path: Path) -> None:
    query = tmp_path / "q.tsq"
    made = run("openssl", "ts", "-query", "-digest", "ab" * 32, "-sha256", "-out", query)
    assert made.returncode == 0, made.stderr
    for content_type in ("application/octet-stream", "application/json", None):
        headers = {"Content-Type": content_type} if content_type else {}
        resp = await client.post("/tsa", data=query.read_bytes(), headers=headers)
        assert resp.status == 415
        assert resp.content_type == "application/problem+json"
        problem = await resp.json()
        assert problem["type"] == "/problems/timestamp-query-expected"
        assert problem["status"] == 415


async def test_oversized_query_is_413(client: TestClient) -> None:
    big = b"\x30" + secrets.token_bytes(4096)
    resp = await client.post("/tsa", data=big, headers=QUERY)
    assert resp.status == 413 and resp.content_type == "application/problem+json"
    assert (await resp.json())["type"] == "/problems/body-too-large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(64):
            yield secrets.token_bytes(1024)

    resp = await client.post("/tsa", data=chunks(), headers=QUERY)
    assert resp.status == 413 and (await resp.json())["type"] == "/problems/body-too-large"
    exact = await client.post("/tsa", data=b"\x00" * 4096, headers=QUERY)
    assert exact.status == 200  # at the limit: read, and rejected the RFC 3161 way


async def test_tsa_certificate_profile_chain_and_crls(
    client: TestClient, bundle: dict[str, Path], tmp_path: Path
) -> None:
    tsa = x509.load_pem_x509_certificate(bundle["tsa"].read_bytes())
    eku = tsa.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    findings, stderr = lint("lint_pkix_cert", "-s", "WARNING", bundle["tsa"])
    assert findings == [], stderr

    crls = {}
    for name in ("root", "issuing"):
        resp = await client.get(f"/ca/{name}.crl")
        assert resp.status == 200 and resp.content_type == "application/pkix-crl"
        crls[name] = tmp_path / f"{name}.crl"
        crls[name].write_bytes(await resp.read())
        again = await client.get(f"/ca/{name}.crl")
        assert await again.read() == crls[name].read_bytes()  # cached, not re-signed
    issuing_crl = x509.load_der_x509_crl(crls["issuing"].read_bytes())
    assert issuing_crl.issuer == tsa.issuer
    (dp,) = tsa.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dp.full_name is not None
    aki = tsa.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    own = f"/issuing/{aki.key_identifier.hex()}.crl"  # the issuing CA generation's own CRL
    assert dp.full_name[0].value.endswith(own)
    resp = await client.get(f"/ca{own}")
    assert resp.status == 200 and resp.content_type == "application/pkix-crl"
    assert x509.load_der_x509_crl(await resp.read()).issuer == tsa.issuer

    checked = run(
        "openssl", "verify", "-purpose", "timestampsign", "-crl_check_all",
        "-CAfile", bundle["root"], "-untrusted", bundle["issuing"],
        "-CRLfile", crls["root"], "-CRLfile", crls["issuing"], bundle["tsa"],
    )  # fmt: skip
    assert checked.returncode == 0 and ": OK" in checked.stdout, checked.stdout + checked.stderr
    no_crl = run(
        "openssl", "verify", "-crl_check_all", "-CAfile", bundle["root"],
        "-untrusted", bundle["issuing"], "-CRLfile", crls["root"], bundle["tsa"],
    )  # fmt: skip
    assert no_crl.returncode != 0  # the issuing CRL is really the one that covers the TSA


async def test_trust_bundle_as_pem_chain(client: TestClient, bundle: dict[str, Path]) -> None:
    resp = await client.get(
        "/api/v1/trust-bundle", headers={"Accept": "application/pem-certificate-chain"}
    )
    assert resp.status == 200 and resp.content_type == "application/pem-certificate-chain"
    certs = x509.load_pem_x509_certificates(await resp.read())
    expected = [
        x509.load_pem_x509_certificate(bundle[name].read_bytes())
        for name in ("root", "issuing", "tsa")
    ]
    assert certs == expected
    root = await client.get("/ca/root.cer")
    assert x509.load_der_x509_certificate(await root.read()) == certs[0]
