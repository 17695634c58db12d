"""Upgrading a CA made when the issuing CA had one stored OCSP responder certificate (label
``<ocsp>@issuing``) to one per issuing CA generation (``<ocsp>@issuing:<key id>``): nothing
is lost. The old certificate still answers for the generation that issued it (`openssl ocsp`
verifies a "good" about the TSA), `qes init` keeps it while it is fresh, and a new issuing CA
generation imported from the key ceremony gets its own at once, so the root says "good"
about it and it answers in its own name while the old one goes on answering for its TSA.

Own database and key labels: the session's service keeps its CA."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.integration.tsa.test_rollover import _issuing_ceremony, ocsp_status, pem_files
from tests.support.idp import RunningIdp
from tests.support.pg import sql
from tests.support.service import SignerProcess, own_ca, qes_init
from tests.support.softhsm import SoftHsmToken


@dataclass(frozen=True)
class Upgraded:
    env: dict[str, str]
    port: int
    work: Path
    legacy: str  # the label a CA made before per-generation responders stored it under
    before: bytes  # its DER, as `qes init` made it then


async def _rows(url: str, pattern: str) -> dict[str, bytes]:
    query = "SELECT label, certificate FROM ca_certificates WHERE label LIKE $1"
    return {r["label"]: bytes(r["certificate"]) for r in await sql(url, query, pattern)}


async def _as_before(url: str, legacy: str) -> bytes:
    """The stored responder certificates as a CA made before this change has them: the
    issuing CA's one under ``legacy``; its DER."""
    (done,) = await sql(
        url,
        "UPDATE ca_certificates SET label = $1 WHERE label LIKE $1 || ':%' RETURNING certificate",
        legacy,
    )
    return bytes(done["certificate"])


@pytest.fixture(scope="module")
def upgraded(
    softhsm_token: SoftHsmToken,
    pg_admin: str,
    idp: RunningIdp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Upgraded]:
    work = tmp_path_factory.mktemp("ocsp-upgrade")
    with own_ca(softhsm_token, pg_admin, idp, work, "upg") as (env, port):
        legacy = f"{env['QES__CA__OCSP_LABEL']}@issuing"
        before = asyncio.run(_as_before(env["QES_DATABASE_URL"], legacy))
        yield Upgraded(env, port, work, legacy, before)


def test_the_old_responder_certificate_still_answers_after_the_upgrade(
    upgraded: Upgraded, tmp_path: Path
) -> None:
    url = upgraded.env["QES_DATABASE_URL"]
    done = qes_init(upgraded.env)  # nothing due: the old certificate is kept, not renewed
    assert done.returncode == 0, done.stderr
    assert "OCSP responder already present" in done.stdout, done.stdout
    stored = asyncio.run(_rows(url, f"{upgraded.legacy}%"))
    assert stored == {upgraded.legacy: upgraded.before}
    signer = SignerProcess(upgraded.env, upgraded.port, tmp_path / "serve.log").start()
    try:
        files = pem_files(signer.url, tmp_path)
        assert ocsp_status(signer.url, files["issuing1"], files["tsa1"], files["root"]) == "good"
        made = _issuing_ceremony(upgraded.env, upgraded.work, "issuing-g2")
        assert "pending: issuing g2" in made
        signer.stop()
        signer.start()  # takes in the pending generation
        files = pem_files(signer.url, tmp_path)
        issuing2 = x509.load_pem_x509_certificate(files["issuing2"].read_bytes())
        stored = asyncio.run(_rows(url, f"{upgraded.legacy}%"))
        assert upgraded.legacy in stored and len(stored) == 2
        (own,) = [x509.load_der_x509_certificate(d) for k, d in stored.items() if ":" in k]
        own.verify_directly_issued_by(issuing2)
        for issuer, cert in (("root", "issuing1"), ("root", "issuing2"), ("issuing1", "tsa1")):
            assert ocsp_status(signer.url, files[issuer], files[cert], files["root"]) == "good"
        assert ocsp_status(signer.url, files["issuing2"], files["tsa1"], files["root"]) == "unknown"
    finally:
        signer.stop()
