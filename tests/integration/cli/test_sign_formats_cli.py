"""`qes sign --format cades|pades` against a running `qes serve`: only digests leave the machine;
the outputs are accepted by OpenSSL and pyHanko (STANDARDS.md §5)."""

from __future__ import annotations

import os
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.integration.cli.test_cli import qes, token_file
from tests.support.idp import RunningIdp
from tests.support.pdfs import multi_page_pdf
from tests.support.service import SignerProcess
from tests.support.verify import run

PYHANKO = str(Path(sys.executable).parent / "pyhanko")


def root_pem(signer: SignerProcess, folder: Path) -> Path:
    with urllib.request.urlopen(f"{signer.url}/ca/root.cer", timeout=10) as resp:  # noqa: S310
        root = x509.load_der_x509_certificate(resp.read())
    path = folder / "root.pem"
    path.write_bytes(root.public_bytes(Encoding.PEM))
    return path


async def test_cades_writes_p7s_per_file(
    signer: SignerProcess, idp: RunningIdp, tmp_path: Path
) -> None:
    token = await token_file(idp, "demo-batch", tmp_path / "batch.token")
    files = []
    for i in range(3):
        f = tmp_path / f"report-{i}.csv"
        f.write_bytes(os.urandom(3000 + i))
        files.append(f)
    done = qes("sign", *files, "--format", "cades", "--token-file", token, "--url", signer.url)
    assert done.returncode == 0, done.stderr
    assert "signed 3 file(s)" in done.stdout and "qes verify" in done.stdout
    assert "3/3" in done.stderr
    root = root_pem(signer, tmp_path)
    for f in files:
        p7s = f.with_name(f.name + ".p7s")
        verify = [
            "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", p7s, "-content", f,
            "-CAfile", root, "-purpose", "any", "-cades", "-out", "/dev/null",
        ]  # fmt: skip
        ok = run(*verify)
        assert ok.returncode == 0 and "Verification successful" in ok.stderr, ok.stderr
        assert not f.with_name(f.name + ".sig").exists()
    files[0].write_bytes(files[0].read_bytes() + b"\n")
    changed = run(
        "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
        files[0].with_name(files[0].name + ".p7s"), "-content", files[0], "-CAfile", root,
        "-purpose", "any", "-cades", "-out", "/dev/null",
    )  # fmt: skip
    assert changed.returncode != 0


async def test_cades_b_lt_writes_p7s_that_verifies_offline(
    signer: SignerProcess, idp: RunningIdp, tmp_path: Path
) -> None:
    """``--format cades-b-lt``: NAME.p7s carrying its validation data; ``qes verify`` names
    the form a year later with the root and issuing CA as trust (EN 319 122-1 §6.3)."""
    token = await token_file(idp, "demo-batch", tmp_path / "batch.token")
    document = tmp_path / "ledger.csv"
    document.write_bytes(os.urandom(4000))
    done = qes(
        "sign", document, "--format", "cades-b-lt", "--token-file", token, "--url", signer.url
    )
    assert done.returncode == 0, done.stderr
    signature = document.with_name("ledger.csv.p7s")
    root = root_pem(signer, tmp_path)
    with urllib.request.urlopen(f"{signer.url}/ca/issuing.cer", timeout=10) as resp:  # noqa: S310
        issuing = x509.load_der_x509_certificate(resp.read())
    bundle = tmp_path / "trust.pem"
    bundle.write_bytes(root.read_bytes() + issuing.public_bytes(Encoding.PEM))
    later = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    checked = qes("verify", document, signature, "--trust", bundle, "--at", later)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("VALID  CAdES-B-LT  ledger.csv / ledger.csv.p7s")


async def test_pades_signs_pdfs_locally_prepared(
    signer: SignerProcess, idp: RunningIdp, tmp_path: Path
) -> None:
    token = await token_file(idp, "demo-batch", tmp_path / "batch.token")
    pdfs = []
    for i in range(2):
        f = tmp_path / f"contract-{i}.pdf"
        f.write_bytes(multi_page_pdf(2 + i))
        pdfs.append(f)
    done = qes("sign", *pdfs, "--format", "pades", "--token-file", token, "--url", signer.url)
    assert done.returncode == 0, done.stderr
    root = root_pem(signer, tmp_path)
    for f in pdfs:
        signed = f.with_name(f"{f.stem}.signed.pdf")
        validated = run(
            PYHANKO, "sign", "validate", "--trust", root, "--trust-replace",
            "--no-revocation-check", "--executive-summary", signed,
        )  # fmt: skip
        assert validated.returncode == 0, validated.stdout + validated.stderr
        assert validated.stdout.strip().endswith(":VALID"), validated.stdout
    # signing an already signed PDF again adds a second field (an incremental update)
    again = qes(
        "sign", pdfs[0].with_name("contract-0.signed.pdf"), "--format", "pades",
        "--token-file", token, "--url", signer.url,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    twice = tmp_path / "contract-0.signed.signed.pdf"
    listed = run(PYHANKO, "sign", "validate", "--trust", root, "--trust-replace",
                 "--no-revocation-check", "--executive-summary", twice)  # fmt: skip
    assert listed.stdout.count(":VALID") == 2, listed.stdout


async def test_pades_refuses_a_file_that_is_not_a_pdf(
    signer: SignerProcess, idp: RunningIdp, tmp_path: Path
) -> None:
    token = await token_file(idp, "demo-batch", tmp_path / "batch.token")
    text = tmp_path / "notes.txt"
    text.write_text("not a pdf")
    done = qes("sign", text, "--format", "pades", "--token-file", token, "--url", signer.url)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "not a PDF" in done.stderr
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\nnothing else")
    done = qes("sign", broken, "--format", "pades", "--token-file", token, "--url", signer.url)
    assert done.returncode == 1 and "broken.pdf" in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0
