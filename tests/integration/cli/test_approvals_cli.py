"""`qes approvals list|show|approve|deny` and `qes sign --wait-approval` against a running
`qes serve` with the development policy (deploy/dev/policy.toml): the seal job's files are
signed once two approvers have approved with the CLI; the signature verifies with OpenSSL;
refusals are one line on stderr and a non-zero exit."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
from pathlib import Path

from tests.support.approvals import SEAL_CLIENT, commitment
from tests.support.idp import DEMO_PASSWORDS, DEMO_SECRETS, RunningIdp
from tests.support.service import ROOT, SignerProcess
from tests.support.verify import openssl_verify_chain, openssl_verify_signature

END = "-----END CERTIFICATE-----"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ID = re.compile(f"request ({UUID})")


async def qes(*args: str | Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signer", *map(str, args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env=dict(os.environ),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def user_token_file(idp: RunningIdp, user: str, folder: Path) -> Path:
    path = folder / f"{user}.token"
    path.write_text(await idp.user_token(user, DEMO_PASSWORDS[user], "demo-web") + "\n")
    return path


async def listed(signer: SignerProcess, token: Path) -> set[str]:
    code, out, err = await qes("approvals", "list", "--token-file", token, "--url", signer.url)
    assert code == 0, err
    return set(re.findall(f"^({UUID}) ", out, re.MULTILINE))


async def new_request(signer: SignerProcess, token: Path, known: set[str]) -> str:
    """The id of the one request `qes approvals list` shows that is not in ``known`` (polled
    until the sign call has made it; other tests' requests may be pending too)."""
    for _ in range(100):
        fresh = await listed(signer, token) - known
        if fresh:
            (found,) = fresh
            return found
        await asyncio.sleep(0.2)
    raise AssertionError("the held request never showed up")


async def test_sign_waits_for_two_cli_approvals(
    signer: SignerProcess, idp: RunningIdp, tmp_path: Path
) -> None:
    seal = tmp_path / "seal.token"
    seal.write_text(await idp.client_token(SEAL_CLIENT, DEMO_SECRETS[SEAL_CLIENT]) + "\n")
    dana, erik, alice = [await user_token_file(idp, u, tmp_path) for u in ("dana", "erik", "alice")]
    document = tmp_path / "statement.txt"
    document.write_bytes(b"annual statement\n" + os.urandom(500))
    digest = hashlib.sha256(document.read_bytes()).digest()

    # Without waiting: one line naming the request, nothing written.
    code, _, err = await qes("sign", document, "--token-file", seal, "--url", signer.url)
    assert code == 1 and "held for approval (2 of seal-approvers)" in err
    assert len(err.strip().splitlines()) == 1
    assert not document.with_name("statement.txt.sig").exists()
    first = ID.search(err)
    assert first is not None

    known = await listed(signer, dana)
    assert first[1] in known
    code, out, _ = await qes("approvals", "deny", first[1], "--token-file", dana,
                             "--url", signer.url)  # fmt: skip
    assert code == 0 and "is denied" in out
    signing = asyncio.create_task(
        qes("sign", document, "--token-file", seal, "--url", signer.url,
            "--wait-approval", "120")
    )  # fmt: skip
    request_id = await new_request(signer, dana, known)

    code, out, err = await qes("approvals", "show", request_id, "--token-file", erik,
                               "--url", signer.url)  # fmt: skip
    assert code == 0, err
    assert digest.hex() in out and commitment([digest]) in out and SEAL_CLIENT in out

    # Refusals: one line each, non-zero exit.
    code, _, err = await qes("approvals", "approve", request_id, "--token-file", alice,
                             "--url", signer.url)  # fmt: skip
    # (a non-member may not even see it: the CLI's GET before deciding is 404 for her)
    assert code == 1 and "HTTP 404" in err and len(err.strip().splitlines()) == 1
    code, _, err = await qes("approvals", "approve", request_id, "--token-file", dana,
                             "--url", signer.url, "--commitment", "0" * 64)  # fmt: skip
    assert code == 1 and "digest commitment does not match" in err

    for token in (dana, erik):
        code, out, err = await qes("approvals", "approve", request_id, "--token-file", token,
                                   "--url", signer.url)  # fmt: skip
        assert code == 0, err
    assert "is completed (2 of 2 approvals)" in out
    code, out, err = await signing
    assert code == 0, err
    assert "signed 1 file(s) with certificate" in out
    parts = document.with_name("statement.txt.chain.pem").read_text().split(END)
    leaf, issuing, root = (tmp_path / n for n in ("leaf.pem", "issuing.pem", "root.pem"))
    for path, text in zip((leaf, issuing, root), parts, strict=False):
        path.write_text(text.strip() + "\n" + END + "\n")
    openssl_verify_chain(root, issuing, leaf)
    verified = openssl_verify_signature(
        leaf, document.with_name("statement.txt.sig"), document, "sha256"
    )
    assert verified.returncode == 0 and "Verified OK" in verified.stdout, verified.stderr

    code, _, err = await qes("approvals", "approve", request_id, "--token-file", erik,
                             "--url", signer.url)  # fmt: skip
    assert code == 1 and "already been decided" in err
