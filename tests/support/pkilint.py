"""pkilint as an independent checker: JSON output parsed, exit code cross-checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.profiles import Level

BIN = Path(sys.executable).parent

# STANDARDS.md §5: pkilint 0.13 predates the validity-assured exemption, so a short-term
# certificate without CRL DP and OCSP gets exactly these two ERRORs, and nothing else.
SHORT_TERM_FINDINGS = sorted(
    [
        "etsi.en_319_412_2.gen-4.3.11-2.crldp_extension_missing",
        "etsi.en_319_412_2.gen-4.4.1-8.ocsp_aia_access_method_absent",
    ]
)

# pkilint 0.13 has ETSI types for QCP-n-qscd and for NCP natural/legal persons only; QCP-n
# (no QSCD) and every legal-person seal are therefore linted with the NCP rules (which is
# also what its auto-detection picks).
ETSI_TYPES = {
    ("natural", Level.QES): "QCP-N-QSCD-EIDAS-FINAL-CERTIFICATE",
    ("natural", Level.QUALIFIED): "NCP-NATURAL-PERSON-CERTIFICATE",
    ("natural", Level.ADVANCED): "NCP-NATURAL-PERSON-CERTIFICATE",
    ("legal", Level.QES): "NCP-LEGAL-PERSON-CERTIFICATE",
    ("legal", Level.QUALIFIED): "NCP-LEGAL-PERSON-CERTIFICATE",
    ("legal", Level.ADVANCED): "NCP-LEGAL-PERSON-CERTIFICATE",
}


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} not installed next to the test interpreter (pkilint)"
    return str(path)


def write_pem(directory: Path, name: str, cert: x509.Certificate) -> Path:
    path = directory / name
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def lint_together(*calls: tuple[str | Path, ...]) -> list[tuple[list[str], str]]:
    """:func:`lint` for each ``(tool, *args)`` at once (one pkilint process per core: most of
    a run is its start-up), results in the order of ``calls``."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda call: lint(str(call[0]), *call[1:]), calls))


def lint(tool: str, *args: str | Path) -> tuple[list[str], str]:
    """Run a pkilint CLI with JSON output; return (sorted finding codes, stderr)."""
    proc = subprocess.run(
        [_tool(tool), "lint", "-f", "JSON", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{tool} did not produce JSON: {proc.stdout!r} {proc.stderr!r}")
    codes = sorted(
        finding["code"]
        for result in report["results"]
        for finding in result["finding_descriptions"]
    )
    # The exit code is the number of findings at the threshold: a cross-check of the parse.
    assert proc.returncode == len(codes), (proc.returncode, codes, proc.stderr)
    return codes, proc.stderr
