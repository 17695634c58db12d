"""The `qes` command line against a running `qes serve`: sign, audit, and one-line failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.service import DEV_CONFIG, ROOT, SignerProcess, free_port
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_verify_chain, openssl_verify_signature, run


def qes(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=120,
    )


async def token_file(idp: RunningIdp, client: str, path: Path) -> Path:
    path.write_text(await idp.client_token(client, DEMO_SECRETS[client]) + "\n")
    return path


async def test_sign_files_and_verify_with_openssl(
    signer: SignerProcess, idp: RunningIdp, tmp_path: Path
) -> None:
    token = await token_file(idp, "demo-batch", tmp_path / "batch.token")
    files = []
    for i in range(3):
        f = tmp_path / f"invoice-{i}.pdf"
        f.write_bytes(os.urandom(2048 + i))
        files.append(f)
    done = qes("sign", *files, "--token-file", token, "--url", signer.url)
    assert done.returncode == 0, done.stderr
    assert "signed 3 file(s)" in done.stdout and "openssl dgst" in done.stdout
    assert "3/3" in done.stderr  # progress bar for many files
    for f in files:
        chain = f.with_name(f.name + ".chain.pem")
        parts = chain.read_text().split("-----END CERTIFICATE-----\n")
        leaf, issuing, root = (
            tmp_path / "leaf.pem",
            tmp_path / "issuing.pem",
            tmp_path / "root.pem",
        )
        for path, text in zip((leaf, issuing, root), parts, strict=False):
            path.write_text(text + "-----END CERTIFICATE-----\n")
        openssl_verify_chain(root, issuing, leaf)
        verified = openssl_verify_signature(leaf, f.with_name(f.name + ".sig"), f, "sha256")
        assert "Verified OK" in verified.stdout, verified.stdout + verified.stderr
    # The same command the CLI printed, run verbatim, verifies the first file.
    command = done.stdout.split("verify: ", 1)[1].strip()
    assert run("bash", "-c", command).returncode == 0


async def test_audit_list_and_show(signer: SignerProcess, idp: RunningIdp, tmp_path: Path) -> None:
    batch = await token_file(idp, "demo-batch", tmp_path / "batch.token")
    doc = tmp_path / "doc.txt"
    doc.write_text("audit me")
    signed = qes("sign", doc, "--token-file", batch, "--url", signer.url)
    assert signed.returncode == 0, signed.stderr
    serial = signed.stdout.split("certificate ", 1)[1].split()[0]
    auditor = await token_file(idp, "demo-auditor", tmp_path / "auditor.token")
    listed = qes(
        "audit",
        "list",
        "--token-file",
        auditor,
        "--url",
        signer.url,
        "--subject",
        "demo-batch",
        "--limit",
        "5",
    )
    assert listed.returncode == 0, listed.stderr
    assert serial in listed.stdout and "key destroyed" in listed.stdout.splitlines()[0]
    shown = qes("audit", "show", serial, "--token-file", auditor, "--url", signer.url)
    assert shown.returncode == 0, shown.stderr
    assert "completed" in shown.stdout and "yes (confirmed)" in shown.stdout
    refused = qes("audit", "list", "--token-file", batch, "--url", signer.url)
    assert refused.returncode == 1
    assert refused.stderr.startswith("qes: HTTP 403: This endpoint needs a token with the auditor")
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["missing-file", "empty-token", "bad-token", "unreachable"])
async def test_sign_failures_are_one_line(signer: SignerProcess, tmp_path: Path, case: str) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("x")
    token = tmp_path / "t"
    token.write_text("not-a-jwt")
    url = signer.url
    args: list[str | Path] = [doc]
    expected = {
        "missing-file": "not a readable file",
        "empty-token": "is empty",
        "bad-token": "HTTP 401: Missing or invalid bearer token",
        "unreachable": "cannot reach",
    }[case]
    if case == "missing-file":
        args = [tmp_path / "nope.txt"]
    elif case == "empty-token":
        token.write_text("")
    elif case == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    done = qes("sign", *args, "--token-file", token, "--url", url)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qes: ") and expected in lines[0], lines
    assert not (tmp_path / "doc.txt.sig").exists()


def test_bad_config_stops_with_the_key_named(tmp_path: Path) -> None:
    bad = tmp_path / "qes.toml"
    bad.write_text(
        DEV_CONFIG.read_text().replace("validity_seconds = 600", "validity_seconds = 900")
    )
    done = qes("serve", "--config", bad, env={"QES_HSM_PIN": "1"})
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "qes: ca.validity_seconds: must be between 60 and 600 (10 minutes)"
    )
    done = qes(
        "serve", "--config", DEV_CONFIG, env={"QES_HSM_PIN": "1", "QES__SERVER__PORT": "eighty"}
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "qes: server.port: expected an integer, got 'eighty'"


async def test_logs_are_json_with_request_ids_and_never_tokens(
    signer: SignerProcess, idp: RunningIdp, softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    token = await token_file(idp, "demo-batch", tmp_path / "batch.token")
    doc = tmp_path / "doc.txt"
    doc.write_text("log me")
    assert qes("sign", doc, "--token-file", token, "--url", signer.url).returncode == 0
    bad = tmp_path / "bad.token"
    bad.write_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
    assert qes("sign", doc, "--token-file", bad, "--url", signer.url).returncode == 1
    log = signer.log.read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    signed = [e for e in events if e.get("event") == "signed"]
    refused = [e for e in events if e.get("event") == "request_failed"]
    assert signed and all(e.get("request_id") for e in signed + refused)
    assert refused and refused[-1]["kind"] == "invalid-token"
    for secret in (
        token.read_text().strip(),
        bad.read_text().strip(),
        token.read_text().split(".")[2],
        softhsm_token.pin,
    ):
        assert secret not in log
