"""`qes ltv extend` against the service (SoftHSM2 keys, built-in TSA, CRLs from PostgreSQL):
a PDF signed at B-T by ``POST /api/v1/signatures/pdf`` gets the service's validation data and
an archive time-stamp from its public ``/tsa``, twice, and ``qes verify --at`` a year later
and pyHanko's AdES validation with revocation checking accept the result."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signer.formats.ltv import document_time_stamps
from tests.support.pdfs import multi_page_pdf
from tests.support.service import api_headers, run_qes

PYHANKO = str(Path(sys.executable).parent / "pyhanko")


async def test_extend_what_the_service_signed(
    client: TestClient, batch_token: str, tmp_path: Path
) -> None:
    resp = await client.post(
        "/api/v1/signatures/pdf",
        data=multi_page_pdf(2),
        headers={**api_headers(batch_token), "Content-Type": "application/pdf"},
    )
    assert resp.status == 201, await resp.text()
    signed = tmp_path / "upload.pdf"
    original = await resp.read()
    signed.write_bytes(original)
    url = str(client.make_url("")).rstrip("/")

    code, out, err = await run_qes("ltv", "extend", str(signed), "--url", url)
    assert code == 0, err
    assert out.startswith(f"{signed}: archive time-stamp 1 at "), out
    extended = tmp_path / "upload.2.pdf"
    code, out, err = await run_qes(
        "ltv", "extend", str(signed), "--out", str(extended), "--url", url
    )
    assert code == 0, err
    assert "archive time-stamp 2 at " in out
    data = extended.read_bytes()
    assert data.startswith(signed.read_bytes()) and signed.read_bytes().startswith(original)
    assert len(document_time_stamps(data)) == 2

    resp = await client.get("/ca/root.cer")
    root = x509.load_der_x509_certificate(await resp.read())
    resp = await client.get("/ca/issuing.cer")
    issuing = x509.load_der_x509_certificate(await resp.read())
    bundle = tmp_path / "trust.pem"
    bundle.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in (root, issuing)))
    later = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, out, err = await run_qes(
        "verify", str(extended), "--trust", str(bundle), "--at", later, "--json"
    )
    assert code == 0, out + err
    (report,) = json.loads(out)
    assert report["form"] == "PAdES-B-LTA" and report["valid"], report

    (tmp_path / "root.pem").write_bytes(root.public_bytes(Encoding.PEM))
    judged = subprocess.run(
        [PYHANKO, "sign", "adesverify", "--trust", str(tmp_path / "root.pem"), "--trust-replace",
         "--executive-summary", str(extended)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert judged.returncode == 0 and judged.stdout.strip().endswith(":VALID"), judged.stdout
