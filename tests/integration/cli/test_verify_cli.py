"""`qes verify` as a process: exit codes 0 / 1 / 2, the readable summary, ``--json``.

The signatures are real CAdES / PAdES B-T made with the production formats and the test PKI;
whether each verdict is right is established against pyHanko in
``tests/unit/signer/test_verify.py``; here the command line's contract is checked, and, end to
end, that what the running service returns verifies a year later with its own chain as trust.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509

from tests.support.pdfs import multi_page_pdf
from tests.support.pki import NOW, make_pki, pem
from tests.support.service import api_headers
from tests.support.service import qes as run_qes_child
from tests.unit.signer.test_formats import DOCUMENT, flip_last_byte
from tests.unit.signer.test_verify import LATE, Case, make_case

YEARS_LATER = (NOW + timedelta(days=2 * 365)).strftime("%Y-%m-%dT%H:%M:%SZ")


def qes(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`qes verify ARGS` as a child process."""
    return run_qes_child("verify", *args)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Case, Path]:
    pki = make_pki()
    signer = pki.signer()
    directory = tmp_path_factory.mktemp("verify-cli")
    bundle = directory / "trust.pem"
    bundle.write_bytes(pem(pki.chain.root) + pem(pki.chain.issuing) + pem(pki.tsa_certificate))
    good = make_case(pki, signer, directory / "good")
    late = make_case(pki, signer, directory / "late", tsa_delay=LATE)
    return good, late, bundle


def test_valid_cades_prints_the_summary_and_exits_0(signed: tuple[Case, Case, Path]) -> None:
    good, _, bundle = signed
    done = qes(good.document, good.cades, "--trust", bundle, "--at", YEARS_LATER)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "VALID  CAdES-B-T  doc.bin / doc.bin.p7s"
    assert lines[1].startswith("  signed by   CN=Erika Mustermann,")
    assert lines[1].endswith("(natural person, signature)")
    assert lines[2].startswith("  level       QES (QCP-n-qscd), certificate serial ")
    assert any(line.startswith("  time-stamp  2026-03-01T12:00:00Z by CN=") for line in lines)
    chain = "valid at the time-stamp 2026-03-01T12:00:00Z: leaf -> issuing CA -> root (trusted)"
    assert f"  chain       {chain}" in lines
    assert any(line.startswith("  revocation  not checked: short-term") for line in lines)
    assert done.stderr == ""


def test_valid_pdf_as_json(signed: tuple[Case, Case, Path]) -> None:
    good, _, bundle = signed
    done = qes(good.pdf, "--trust", bundle, "--at", YEARS_LATER, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    assert report["valid"] is True and report["failed"] == []
    assert report["form"] == "PAdES-B-T"
    assert report["label"] == "doc.pdf: field Signature1"
    assert report["level"] == "QES"
    assert report["time_stamp"]["gen_time"] == "2026-03-01T12:00:00Z"


def test_changed_document_exits_1_naming_the_check(
    signed: tuple[Case, Case, Path], tmp_path: Path
) -> None:
    good, _, bundle = signed
    changed = tmp_path / "doc.bin"
    changed.write_bytes(flip_last_byte(DOCUMENT))
    done = qes(changed, good.cades, "--trust", bundle, "--at", YEARS_LATER)
    assert done.returncode == 1
    assert done.stdout.startswith("INVALID  CAdES-B-T")
    failed = [line for line in done.stdout.splitlines() if "FAILED" in line]
    assert failed == ["  FAILED      message-digest: does not match the document digest"]


def test_late_time_stamp_exits_1_naming_the_chain(signed: tuple[Case, Case, Path]) -> None:
    _, late, bundle = signed
    done = qes(late.pdf, "--trust", bundle, "--at", YEARS_LATER, "--json")
    assert done.returncode == 1
    (report,) = json.loads(done.stdout)
    assert report["failed"] == ["signer-chain"]
    (check,) = [c for c in report["checks"] if not c["ok"]]
    assert "not valid at the time-stamp 2026-03-01T12:30:00Z (notAfter" in check["detail"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.pdf"], "missing.pdf: No such file or directory"),
        (["{doc}"], "not a PDF; give the detached SIGNATURE file too"),
        (["{doc}", "{doc}"], "signature: not a DER CMS SignedData"),
        (["{doc}", "{sig}", "--trust", "{doc}"], "trust bundle: no PEM certificate in it"),
        (["{doc}", "{sig}", "--at", "yesterday"], "--at yesterday: not an ISO 8601 time"),
    ],
)
def test_unusable_input_is_one_line_and_exit_2(
    signed: tuple[Case, Case, Path], args: list[str], message: str
) -> None:
    good, _, bundle = signed
    values = {"doc": str(good.document), "sig": str(good.cades)}
    argv = [a.format(**values) for a in args]
    if "--trust" not in argv:
        argv += ["--trust", str(bundle)]
    done = qes(*argv)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qes: ") and message in lines[0], lines


async def test_what_the_service_signs_verifies_a_year_later(
    client: TestClient, batch_token: str, tmp_path: Path
) -> None:
    """CAdES from ``POST /api/v1/signatures`` and a PDF from ``POST /api/v1/signatures/pdf``
    (SoftHSM2 keys, built-in TSA), verified by ``qes verify`` with the returned chain as the
    trust bundle, after the 10-minute certificate has long expired; pyHanko agrees."""
    document = b"order 4711\n" * 100
    resp = await client.post(
        "/api/v1/signatures",
        json={
            "hash_algorithm": "sha256",
            "hashes": [base64.b64encode(hashlib.sha256(document).digest()).decode()],
            "format": "cades",
        },
        headers=api_headers(batch_token),
    )
    assert resp.status == 201, await resp.text()
    payload = await resp.json()
    bundle, doc, sig = tmp_path / "trust.pem", tmp_path / "order.txt", tmp_path / "order.p7s"
    bundle.write_text(payload["chain"])
    doc.write_bytes(document)
    sig.write_bytes(base64.b64decode(payload["signatures"][0]))
    resp = await client.post(
        "/api/v1/signatures/pdf?field=Approval",
        data=multi_page_pdf(2),
        headers={**api_headers(batch_token), "Content-Type": "application/pdf"},
    )
    assert resp.status == 201, await resp.text()
    pdf = tmp_path / "upload.signed.pdf"
    pdf.write_bytes(await resp.read())

    later = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cades = qes(doc, sig, "--trust", bundle, "--at", later, "--json")
    pades = qes(pdf, "--trust", bundle, "--at", later, "--json")
    for done in (cades, pades):
        assert done.returncode == 0, done.stdout + done.stderr
    (cades_report,) = json.loads(cades.stdout)
    (pades_report,) = json.loads(pades.stdout)
    assert cades_report["form"] == "CAdES-B-T" and pades_report["form"] == "PAdES-B-T"
    assert cades_report["serial"] == format(int(payload["serial"], 16), "x")
    assert pades_report["label"] == "upload.signed.pdf: field Approval"
    for report in (cades_report, pades_report):
        assert report["level"] in ("QES", "qualified (AdES/QC)", "advanced")
        assert report["revocation"].startswith("not checked: short-term certificate")
    root = tmp_path / "root.pem"
    root.write_bytes(pem(_root_of(payload["chain"])))
    judged = subprocess.run(
        [str(Path(sys.executable).parent / "pyhanko"), "sign", "adesverify", "--trust", str(root),
         "--trust-replace", "--no-revocation-check", "--validation-time", later,
         "--executive-summary", str(pdf)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert judged.returncode == 0 and judged.stdout.strip().endswith(":VALID"), judged.stdout
    doc.write_bytes(document + b"!")
    changed = qes(doc, sig, "--trust", bundle, "--at", later, "--json")
    assert changed.returncode == 1
    assert json.loads(changed.stdout)[0]["failed"] == ["message-digest"]


def _root_of(chain_pem: str) -> x509.Certificate:
    (root,) = [
        c for c in x509.load_pem_x509_certificates(chain_pem.encode()) if c.subject == c.issuer
    ]
    return root
