"""`qes init` and the built-in TSA: created with the CA, kept on a second run, replaced with
--force, and added to an older install whose CA predates the TSA, without --force. Every TSA
certificate it stores chains to the stored CA for ``openssl verify -purpose timestampsign``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.pg import scratch_database
from tests.support.service import own_ca_labels, qes_init
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import run


@pytest.fixture
def tsa_env(softhsm_token: SoftHsmToken, pg_admin: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Own database and own labels (fresh per test: token keys outlive the test)."""
    with scratch_database(pg_admin) as url:
        yield {
            **softhsm_token.env(),
            "QES_HSM_PIN": softhsm_token.pin,
            "QES_DATABASE_URL": url,
            "QES__DATA_DIR": f'"{tmp_path}"',  # the ceremony's transcript, not the repo's .qes
            "QES__HSM__TOKEN_LABEL": softhsm_token.label,
            **own_ca_labels("tsa-test"),
        }


async def stored(env: dict[str, str]) -> dict[str, x509.Certificate]:
    conn = await asyncpg.connect(env["QES_DATABASE_URL"])
    try:
        rows = await conn.fetch("SELECT label, certificate FROM ca_certificates")
    finally:
        await conn.close()
    return {r["label"]: x509.load_der_x509_certificate(bytes(r["certificate"])) for r in rows}


def tsa_key_ids(token: SoftHsmToken, env: dict[str, str]) -> set[str]:
    return {o.id for o in token.list_objects() if o.label == env["QES__TSA__LABEL"]}


def assert_tsa_chains(certs: dict[str, x509.Certificate], env: dict[str, str], tmp: Path) -> None:
    files = {}
    for name, label in (("root", "ROOT"), ("issuing", "ISSUING")):
        files[name] = tmp / f"{name}.pem"
        files[name].write_bytes(certs[env[f"QES__CA__{label}_LABEL"]].public_bytes(Encoding.PEM))
    leaf = tmp / "tsa.pem"
    leaf.write_bytes(certs[env["QES__TSA__LABEL"]].public_bytes(Encoding.PEM))
    done = run(
        "openssl", "verify", "-purpose", "timestampsign", "-CAfile", files["root"],
        "-untrusted", files["issuing"], leaf,
    )  # fmt: skip
    assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stderr


async def test_init_creates_keeps_and_force_replaces_the_tsa(
    tsa_env: dict[str, str], softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    first = qes_init(tsa_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].startswith("CA created")
    assert first.stdout.splitlines()[1].startswith("TSA created: ")
    certs = await stored(tsa_env)
    tsa_cert = certs[tsa_env["QES__TSA__LABEL"]]
    assert_tsa_chains(certs, tsa_env, tmp_path)
    keys = tsa_key_ids(softhsm_token, tsa_env)
    assert len(keys) == 1  # one id for the private and public half

    again = qes_init(tsa_env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1].startswith("TSA already present: ")
    assert (await stored(tsa_env))[tsa_env["QES__TSA__LABEL"]] == tsa_cert
    assert tsa_key_ids(softhsm_token, tsa_env) == keys

    forced = qes_init(tsa_env, "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.splitlines()[1].startswith("TSA created: ")
    certs = await stored(tsa_env)
    replaced = certs[tsa_env["QES__TSA__LABEL"]]
    assert replaced.public_key() != tsa_cert.public_key()
    assert_tsa_chains(certs, tsa_env, tmp_path)
    objects = [o for o in softhsm_token.list_objects() if o.label == tsa_env["QES__TSA__LABEL"]]
    assert len(objects) == 2  # the old key pair is gone, one new pair
    # ... but not its certificate: the history (and so the trust bundle) keeps it, ended now
    conn = await asyncpg.connect(tsa_env["QES_DATABASE_URL"])
    try:
        rows = await conn.fetch(
            "SELECT generation, certificate, issued_from, issued_until FROM ca_generations"
            " WHERE role = 'tsa' ORDER BY generation"
        )
    finally:
        await conn.close()
    kept = [x509.load_der_x509_certificate(bytes(r["certificate"])) for r in rows]
    assert kept == [tsa_cert, replaced] and [r["generation"] for r in rows] == [1, 2]
    assert rows[0]["issued_until"] == rows[1]["issued_from"] and rows[1]["issued_until"] is None


async def test_init_adds_a_tsa_to_an_install_without_one(
    tsa_env: dict[str, str], softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    anchors = tmp_path / "external-root.pem"
    anchors.write_text("")  # init does not read it; only the service does
    older = {
        **tsa_env,
        "QES__TSA__URL": '"http://tsa.example.com/rfc3161"',
        "QES__TSA__TRUST_ANCHOR_FILE": f'"{anchors}"',
    }
    made = qes_init(older)  # a CA without a built-in TSA, as before the TSA existed
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[1] == "TSA: external, http://tsa.example.com/rfc3161"
    before = await stored(tsa_env)
    assert tsa_env["QES__TSA__LABEL"] not in before
    assert tsa_key_ids(softhsm_token, tsa_env) == set()

    added = qes_init(tsa_env)
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[0].startswith("CA already present")
    assert added.stdout.splitlines()[1].startswith("TSA created: ")
    after = await stored(tsa_env)
    for label in (tsa_env["QES__CA__ROOT_LABEL"], tsa_env["QES__CA__ISSUING_LABEL"]):
        assert after[label] == before[label]  # the CA is untouched
    assert_tsa_chains(after, tsa_env, tmp_path)
    assert len(tsa_key_ids(softhsm_token, tsa_env)) == 1
