"""Independent verification: OpenSSL and pkilint as subprocesses, never our own code."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)


def openssl_verify_chain(root: Path, issuing: Path, leaf: Path) -> None:
    done = run("openssl", "verify", "-CAfile", root, "-untrusted", issuing, leaf)
    assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stderr


def openssl_verify_signature(
    cert_pem: Path, signature: Path, data: Path, algorithm: str
) -> subprocess.CompletedProcess[str]:
    pub = cert_pem.with_suffix(".pub.pem")
    extracted = run("openssl", "x509", "-in", cert_pem, "-pubkey", "-noout", "-out", pub)
    assert extracted.returncode == 0, extracted.stderr
    return run("openssl", "dgst", f"-{algorithm}", "-verify", pub, "-signature", signature, data)


def openssl_ocsp(url: str, issuer: Path, cert: Path, trust: Path, *options: str) -> str:
    """What ``openssl ocsp`` prints of the service's answer at ``url``/ocsp about ``cert``
    (``issuer`` names the CertID, RFC 6960 §4.1.1), given ``options`` (``-resp_text``,
    ``-no_nonce``); fails the test unless the answer verifies against ``trust`` alone (the
    delegated responder's certificate and its CA come in it)."""
    done = run(
        "openssl", "ocsp", "-issuer", issuer, "-cert", cert, "-url", f"{url}/ocsp",
        "-CAfile", trust, *options,
    )  # fmt: skip
    assert done.returncode == 0 and "Response verify OK" in done.stderr, done.stdout + done.stderr
    return done.stdout
