"""`qes sign` with one token for many chunks (a jti per operation, an Idempotency-Key per
chunk) and with DPoP (RFC 9449): a token fetched from the real IdP bound to a key made for the
run, or to ``--dpop-key FILE``, against a `qes serve` whose batch issuer is marked ``dpop``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.cli.test_cli import qes, token_file
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.service import SignerProcess, running_signer
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_verify_signature


@pytest.fixture(scope="module")
def dpop_signer(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SignerProcess]:
    work = tmp_path_factory.mktemp("dpop-signer")
    with running_signer(
        token=softhsm_token,
        database_url=database_url,
        idp=idp,
        work=work,
        QES__ISSUERS__DEMO_ORGANISATIONS__SENDER_CONSTRAINT='"dpop"',
    ) as process:
        yield process


def _documents(folder: Path, n: int) -> list[Path]:
    files = []
    for i in range(n):
        f = folder / f"doc-{i}.txt"
        f.write_text(f"document {i}")
        files.append(f)
    return files


def _verify(files: list[Path], folder: Path) -> None:
    for f in files:
        chain = f.with_name(f.name + ".chain.pem").read_text()
        leaf = folder / "leaf.pem"
        leaf.write_text(
            chain.split("-----END CERTIFICATE-----\n")[0] + "-----END CERTIFICATE-----\n"
        )
        verified = openssl_verify_signature(leaf, f.with_name(f.name + ".sig"), f, "sha256")
        assert "Verified OK" in verified.stdout, verified.stdout + verified.stderr


async def test_one_token_signs_in_chunks(
    signer: SignerProcess, idp: RunningIdp, tmp_path: Path
) -> None:
    """require_jti is on (the default) and the IdP puts jti in its tokens: three chunks, three
    operations, one token."""
    token = await token_file(idp, "demo-batch", tmp_path / "batch.token")
    files = _documents(tmp_path, 3)
    done = qes("sign", *files, "--token-file", token, "--url", signer.url, "--batch-size", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("signed 1 file(s)") == 3
    _verify(files, tmp_path)


def _secret_file(folder: Path) -> Path:
    path = folder / "client.secret"
    path.write_text(DEMO_SECRETS["demo-batch"] + "\n")
    return path


async def test_sign_fetches_a_dpop_bound_token_and_sends_proofs(
    dpop_signer: SignerProcess, idp: RunningIdp, tmp_path: Path
) -> None:
    files = _documents(tmp_path, 2)
    fetch = ("--token-url", f"{idp.issuer}/token", "--client-id", "demo-batch")
    secret = ("--client-secret-file", str(_secret_file(tmp_path)), "--resource", idp.resource)
    args = ("--url", dpop_signer.url, "--batch-size", "1", *fetch, *secret)
    done = qes("sign", *files, *args)  # a key made for this run
    assert done.returncode == 0, done.stderr
    _verify(files, tmp_path)
    key = tmp_path / "dpop.pem"
    private = ec.generate_private_key(ec.SECP256R1())
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    done = qes("sign", *files[:1], *args, "--dpop-key", key)
    assert done.returncode == 0, done.stderr


async def test_a_plain_bearer_token_is_refused_by_a_dpop_issuer(
    dpop_signer: SignerProcess, idp: RunningIdp, tmp_path: Path
) -> None:
    token = await token_file(idp, "demo-batch", tmp_path / "batch.token")
    done = qes("sign", *_documents(tmp_path, 1), "--token-file", token, "--url", dpop_signer.url)
    assert done.returncode == 1
    assert "HTTP 401" in done.stderr and "bound to a key" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
