"""CAdES and PAdES B-T from ``POST /api/v1/signatures`` on the real service (SoftHSM2 keys, the
built-in TSA, PostgreSQL), each accepted by OpenSSL and pyHanko and rejected by them after a
one-byte change (STANDARDS.md §2, §4, §5)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.dss import DocumentSecurityStore

from signer.formats.cms import signature_time_stamp
from signer.formats.pdf import embed, prepare
from signer.signing.timestamping import gen_time
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.pdfs import multi_page_pdf
from tests.support.service import api_headers

PYHANKO = str(Path(sys.executable).parent / "pyhanko")


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=False, timeout=120
    )


async def sign(
    client: TestClient, token: str, fmt: str, digests: list[bytes], algorithm: str = "sha256"
) -> dict[str, Any]:
    resp = await client.post(
        "/api/v1/signatures",
        json={
            "hash_algorithm": algorithm,
            "hashes": [base64.b64encode(d).decode() for d in digests],
            "format": fmt,
        },
        headers=api_headers(token),
    )
    assert resp.status == 201, await resp.text()
    payload: dict[str, Any] = await resp.json()
    assert payload["format"] == fmt
    return payload


def root_pem(payload: dict[str, Any], folder: Path) -> Path:
    *_, root = x509.load_pem_x509_certificates(payload["chain"].encode())
    path = folder / "root.pem"
    path.write_bytes(root.public_bytes(Encoding.PEM))
    return path


def signer_info(signature: bytes) -> cms.SignerInfo:
    (info,) = cms.ContentInfo.load(signature)["content"]["signer_infos"]
    return info


def flip(data: bytes, at: int = -1) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


async def test_cades_b_t_per_digest_verified_by_openssl_and_pyhanko(
    client: TestClient, batch_token: str, auditor_token: str, database_url: str, tmp_path: Path
) -> None:
    documents = [secrets.token_bytes(2000), b"second document\n" * 50]
    payload = await sign(
        client, batch_token, "cades", [hashlib.sha384(d).digest() for d in documents], "sha384"
    )
    assert len(payload["signatures"]) == 2
    root = root_pem(payload, tmp_path)
    tokens = []
    for n, (document, b64) in enumerate(zip(documents, payload["signatures"], strict=True)):
        signature = base64.b64decode(b64)
        info = signer_info(signature)
        signed = sorted(a["type"].native for a in info["signed_attrs"])
        assert signed == [
            "content_type",
            "message_digest",
            "signing_certificate_v2",
            "signing_time",
        ]
        sig_path, doc_path = tmp_path / f"doc{n}.p7s", tmp_path / f"doc{n}.bin"
        sig_path.write_bytes(signature)
        doc_path.write_bytes(document)
        token = signature_time_stamp(signature)
        tokens.append(token)
        at = str(int(gen_time(token).timestamp()))
        verify = [
            "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sig_path,
            "-CAfile", root, "-purpose", "any", "-cades", "-attime", at, "-out", "/dev/null",
            "-content",
        ]  # fmt: skip
        done = run(*verify, doc_path)
        assert done.returncode == 0 and "Verification successful" in done.stderr, done.stderr
        token_path = tmp_path / f"token{n}.der"
        token_path.write_bytes(token)
        imprint = hashlib.sha384(info["signature"].native).hexdigest()
        ts = run(
            "openssl", "ts", "-verify", "-token_in", "-in", token_path, "-digest", imprint,
            "-CAfile", root,
        )  # fmt: skip
        assert ts.returncode == 0 and "Verification: OK" in ts.stdout, ts.stdout + ts.stderr
        validate = [
            PYHANKO, "sign", "validate", "--detached", sig_path, "--trust", root,
            "--trust-replace", "--no-revocation-check", "--pretty-print",
        ]  # fmt: skip
        done = run(*validate, doc_path)
        assert "The signature is judged VALID." in done.stdout, done.stdout + done.stderr
        changed = tmp_path / f"changed{n}.bin"
        changed.write_bytes(flip(document))
        assert run(*verify, changed).returncode != 0
        rejected = run(*validate, changed)
        assert rejected.returncode != 0
        assert "The signature is judged VALID." not in rejected.stdout
    # the record keeps every signature's time-stamp token, in order
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch(
            "SELECT t.token FROM signature_time_stamps t JOIN signing_records r"
            " ON r.id = t.record_id WHERE r.serial = $1 ORDER BY t.position",
            payload["serial"],
        )
        fmt = await conn.fetchval(
            "SELECT signature_format FROM signing_records WHERE serial=$1", payload["serial"]
        )
    finally:
        await conn.close()
    assert [bytes(r["token"]) for r in stored] == tokens
    assert fmt == "cades"
    resp = await client.get(
        f"/api/v1/certificates/{payload['serial']}", headers=api_headers(auditor_token)
    )
    assert resp.status == 200, await resp.text()
    record = await resp.json()
    assert record["signature_format"] == "cades"
    assert [base64.b64decode(t["token"]) for t in record["time_stamps"]] == tokens
    assert [t["gen_time"] for t in record["time_stamps"]] == [
        gen_time(t).isoformat() for t in tokens
    ]


async def test_cades_b_lt_carries_the_validation_data(
    client: TestClient, batch_token: str, database_url: str, tmp_path: Path
) -> None:
    """``"format": "cades-b-lt"``: the CAdES B-T with the TSA and OCSP responder certificates,
    the service's two CRLs and its OCSP answer about the TSA in the SignedData (EN 319 122-1
    §6.3). OpenSSL still verifies the signature, the CRLs
    taken from the CMS show the TSA certificate unrevoked (``openssl verify -crl_check_all``),
    and ``qes verify`` names the form, a year later."""
    from signer.formats.verify import load_trust_bundle, verify_cades

    document = b"long-lived record\n" * 80
    payload = await sign(client, batch_token, "cades-b-lt", [hashlib.sha256(document).digest()])
    signature = base64.b64decode(payload["signatures"][0])
    signed_data = cms.ContentInfo.load(signature)["content"]
    # the two CRLs and the OCSP answer about the TSA (RFC 5940: SignedData version 5)
    assert sorted(c.name for c in signed_data["crls"]) == ["crl", "crl", "other"]
    assert signed_data["version"].native == "v5"
    crls = [c.chosen for c in signed_data["crls"] if c.name == "crl"]
    root = root_pem(payload, tmp_path)
    sig_path, doc_path = tmp_path / "doc.p7s", tmp_path / "doc.bin"
    sig_path.write_bytes(signature)
    doc_path.write_bytes(document)
    at = str(int(gen_time(signature_time_stamp(signature)).timestamp()))
    done = run(
        "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sig_path, "-content",
        doc_path, "-CAfile", root, "-purpose", "any", "-cades", "-attime", at, "-out", "/dev/null",
    )  # fmt: skip
    assert done.returncode == 0 and "Verification successful" in done.stderr, done.stderr
    certs = {c.chosen.subject.human_friendly: c.chosen for c in signed_data["certificates"]}
    eku = "extended_key_usage"
    tsa = next(c for c in certs.values() if eku in c.critical_extensions)  # timeStamping
    issuing = next(c for c in certs.values() if c.subject == tsa.issuer)
    files = {"tsa": tsa.dump(), "issuing": issuing.dump()}
    for name, der in files.items():
        (tmp_path / f"{name}.pem").write_bytes(
            x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)
        )
    (tmp_path / "crls.pem").write_bytes(
        b"".join(x509.load_der_x509_crl(c.dump()).public_bytes(Encoding.PEM) for c in crls)
    )
    checked = run(
        "openssl", "verify", "-crl_check_all", "-CAfile", root, "-untrusted",
        tmp_path / "issuing.pem", "-CRLfile", tmp_path / "crls.pem", "-purpose", "any",
        tmp_path / "tsa.pem",
    )  # fmt: skip
    assert checked.returncode == 0 and ": OK" in checked.stdout, checked.stdout + checked.stderr
    bundle = load_trust_bundle(payload["chain"].encode())
    later = datetime.now(UTC) + timedelta(days=365)
    report = await asyncio.to_thread(verify_cades, document, signature, bundle, now=later)
    assert report.valid and report.form == "CAdES-B-LT", report.failures
    conn = await asyncpg.connect(database_url)
    try:
        fmt = await conn.fetchval(
            "SELECT signature_format FROM signing_records WHERE serial=$1", payload["serial"]
        )
    finally:
        await conn.close()
    assert fmt == "cades-b-lt"


async def test_pades_b_t_for_a_prepared_pdf(
    client: TestClient, batch_token: str, tmp_path: Path
) -> None:
    """The client prepares the field and sends only the byte-range digest; the returned CMS
    embeds into a PDF that pyHanko validates now and, with adesverify, a year later."""
    prepared = prepare(multi_page_pdf(3), "Signature1", datetime.now(UTC))
    payload = await sign(client, batch_token, "pades", [prepared.digest])
    (b64,) = payload["signatures"]
    signed = tmp_path / "contract.signed.pdf"
    signed.write_bytes(embed(prepared, base64.b64decode(b64)))
    root = root_pem(payload, tmp_path)

    (embedded,) = PdfFileReader(BytesIO(signed.read_bytes())).embedded_signatures
    assert embedded.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    assert embedded.sig_object["/M"]
    attrs = sorted(a["type"].native for a in embedded.signer_info["signed_attrs"])
    assert attrs == ["content_type", "message_digest", "signing_certificate_v2"]
    unsigned = [a["type"].dotted for a in embedded.signer_info["unsigned_attrs"]]
    assert unsigned == ["1.2.840.113549.1.9.16.2.14"]

    data = signed.read_bytes()
    at = data.index(b"(Page 2 of 3)")
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(data[: at + 6] + b"3" + data[at + 7 :])
    later = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for command in (
        [PYHANKO, "sign", "validate", "--trust", root, "--trust-replace",
         "--no-revocation-check", "--executive-summary"],
        [PYHANKO, "sign", "adesverify", "--trust", root, "--trust-replace",
         "--no-revocation-check", "--validation-time", later, "--executive-summary"],
    ):  # fmt: skip
        done = run(*command, signed)
        assert done.returncode == 0 and done.stdout.strip().endswith(":VALID"), done.stdout
        rejected = run(*command, tampered)
        assert rejected.returncode != 0 and not rejected.stdout.strip().endswith(":VALID")

    # OpenSSL on the same signature: the CMS over the signed byte range (ISO 32000-2 §12.8.1),
    # at the token's genTime, and the signature-time-stamp token on its own.
    cms_der = base64.b64decode(b64)
    token = signature_time_stamp(cms_der)
    (cms_path, token_path) = (tmp_path / "pades.p7s", tmp_path / "pades-token.der")
    cms_path.write_bytes(cms_der)
    token_path.write_bytes(token)
    start, end = prepared.reserved_start, prepared.reserved_end
    for name, pdf in (("signed", data), ("tampered", tampered.read_bytes())):
        content = tmp_path / f"{name}.byterange"
        content.write_bytes(pdf[:start] + pdf[end:])
        done = run(
            "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", cms_path,
            "-content", content, "-CAfile", root, "-purpose", "any", "-cades",
            "-attime", str(int(gen_time(token).timestamp())), "-out", "/dev/null",
        )  # fmt: skip
        if name == "signed":
            assert done.returncode == 0 and "Verification successful" in done.stderr, done.stderr
        else:
            assert done.returncode != 0
    imprint = hashlib.sha256(signer_info(cms_der)["signature"].native).hexdigest()
    ts = run(
        "openssl", "ts", "-verify", "-token_in", "-in", token_path, "-digest", imprint,
        "-CAfile", root,
    )  # fmt: skip
    assert ts.returncode == 0 and "Verification: OK" in ts.stdout, ts.stdout + ts.stderr


async def test_unknown_format_is_a_problem(client: TestClient, batch_token: str) -> None:
    resp = await client.post(
        "/api/v1/signatures",
        json={
            "hash_algorithm": "sha256",
            "hashes": [base64.b64encode(bytes(32)).decode()],
            "format": "xades",
        },
        headers=api_headers(batch_token),
    )
    assert resp.status == 422
    problem = await resp.json()
    assert resp.content_type == "application/problem+json"
    assert problem["type"] == "/problems/unsupported-signature-format"
    assert "raw, cades, cades-b-lt or pades" in problem["title"]


async def record_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM signing_records"))
    finally:
        await conn.close()


def _root_pem(embedded: Any, directory: Path) -> Path:
    """The self-signed root among a PDF signature's certificates, written as PEM."""
    certificates = [
        x509.load_der_x509_certificate(c.chosen.dump())
        for c in embedded.signed_data["certificates"]
    ]
    (root,) = [c for c in certificates if c.subject == c.issuer]
    path = directory / "root.pem"
    path.write_bytes(root.public_bytes(Encoding.PEM))
    return path


async def test_pdf_upload_comes_back_signed(
    client: TestClient, batch_token: str, tmp_path: Path
) -> None:
    resp = await client.post(
        "/api/v1/signatures/pdf?field=Approval",
        data=multi_page_pdf(2),
        headers={**api_headers(batch_token), "Content-Type": "application/pdf"},
    )
    assert resp.status == 201, await resp.text()
    assert resp.content_type == "application/pdf"
    serial = resp.headers["Qes-Certificate-Serial"]
    assert f"/api/v1/certificates/{serial}>" in resp.headers["Link"]
    signed = tmp_path / "upload.signed.pdf"
    signed.write_bytes(await resp.read())
    (embedded,) = PdfFileReader(BytesIO(signed.read_bytes())).embedded_signatures
    assert embedded.field_name == "Approval"
    assert embedded.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    root_path = _root_pem(embedded, tmp_path)
    done = run(
        PYHANKO, "sign", "validate", "--trust", root_path, "--trust-replace",
        "--no-revocation-check", "--executive-summary", signed,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith(":VALID"), done.stdout


async def test_pdf_upload_at_b_lta_validates_from_the_pdf_alone(
    client: TestClient, idp: RunningIdp, tmp_path: Path
) -> None:
    """``?level=b-lta``: DSS with the service's own CRLs, then a document time-stamp
    (EN 319 142-1 §6.3). pyHanko's AdES validator with revocation checking on (the CRL URLs
    are not served to it) accepts it; the B-T answer to the same request fails for want of the
    issuing CA's revocation data. B-LT and B-LTA carry the same published CRLs: the replica
    signs one per CA, not one per request, and one OCSP answer about its TSA per 10 minutes."""
    files = {}
    for level in ("b-t", "b-lt", "b-lta"):
        batch_token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
        resp = await client.post(
            f"/api/v1/signatures/pdf?level={level}",
            data=multi_page_pdf(1),
            headers={**api_headers(batch_token), "Content-Type": "application/pdf"},
        )
        assert resp.status == 201, await resp.text()
        files[level] = tmp_path / f"{level}.pdf"
        files[level].write_bytes(await resp.read())
    reader = PdfFileReader(BytesIO(files["b-lta"].read_bytes()))
    assert [s.field_name for s in reader.embedded_signatures] == ["Signature1", "DocTimeStamp1"]
    assert "/DSS" in reader.root
    (embedded, _) = reader.embedded_signatures
    root_path = _root_pem(embedded, tmp_path)
    crls = {
        level: sorted(c.get_object().data for c in DocumentSecurityStore.read_dss(
            PdfFileReader(BytesIO(files[level].read_bytes()))).crls)
        for level in ("b-lt", "b-lta")
    }  # fmt: skip
    assert len(crls["b-lt"]) == 2 and crls["b-lt"] == crls["b-lta"]
    answers = {
        level: [o.get_object().data for o in DocumentSecurityStore.read_dss(
            PdfFileReader(BytesIO(files[level].read_bytes()))).ocsps]
        for level in ("b-lt", "b-lta")
    }  # fmt: skip
    assert len(answers["b-lt"]) == 1 and answers["b-lt"] == answers["b-lta"]
    outcome = {}
    for level, pdf in ((level, files[level]) for level in ("b-t", "b-lta")):
        done = run(
            PYHANKO, "sign", "adesverify", "--trust", root_path, "--trust-replace",
            "--executive-summary", pdf,
        )  # fmt: skip
        outcome[level] = (done.returncode, done.stdout.strip(), done.stderr)
    assert outcome["b-lta"][0] == 0 and outcome["b-lta"][1].endswith(":VALID"), outcome
    assert outcome["b-t"][0] != 0 and outcome["b-t"][1].endswith(":INVALID"), outcome
    assert "no revocation information could be found for intermediate" in outcome["b-t"][2]
    batch_token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    bad = await client.post(
        "/api/v1/signatures/pdf?level=b-lt-plus",
        data=multi_page_pdf(1),
        headers={**api_headers(batch_token), "Content-Type": "application/pdf"},
    )
    assert bad.status == 422


async def test_pdf_upload_refusals_create_no_certificate(
    client: TestClient, batch_token: str, database_url: str
) -> None:
    before = await record_count(database_url)
    pdf_headers = {**api_headers(batch_token), "Content-Type": "application/pdf"}
    cases = [
        (b"%PDF-1.7 this is not a PDF", pdf_headers, 422, "/problems/unusable-pdf"),
        (multi_page_pdf(1), api_headers(batch_token), 415, "/problems/unsupported-media-type"),
        (multi_page_pdf(1), {**pdf_headers, "Authorization": "Bearer x"}, 401, None),
    ]
    for body, headers, status, kind in cases:
        resp = await client.post("/api/v1/signatures/pdf", data=body, headers=headers)
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/problem+json"
        if kind:
            assert (await resp.json())["type"] == kind
    bad_field = await client.post(
        "/api/v1/signatures/pdf?field=a.b", data=multi_page_pdf(1), headers=pdf_headers
    )
    assert bad_field.status == 422
    assert await record_count(database_url) == before


async def test_pdf_upload_over_the_limit_is_413(
    aiohttp_client: Any, settings: Any, ca_ready: None, batch_token: str
) -> None:
    from signer.app import create_app

    small = dataclasses.replace(settings.server, max_pdf_bytes=4096)
    client = await aiohttp_client(create_app(dataclasses.replace(settings, server=small)))
    resp = await client.post(
        "/api/v1/signatures/pdf",
        data=multi_page_pdf(1) + b"%" + b"x" * 8192,
        headers={**api_headers(batch_token), "Content-Type": "application/pdf"},
    )
    assert resp.status == 413
    assert (await resp.json())["type"] == "/problems/body-too-large"
