"""Issue 15 item 1, the two-machine key ceremony: the root key lives in a token of its own, in
a SoftHSM directory the online side never sees, and `qes serve` runs without its PIN.

The offline side (its own token directory and config: no online HSM PIN, no database) creates
the root and signs what the online side (the session's token, its own database and labels,
no root PIN) requests: the issuing CA, the root's OCSP responder certificate and the root's
CRL. Files and the transcript travel in ``carry/``. OpenSSL judges every certificate and CRL
the service accepts; the transcript's chain verifies, a changed one is refused, importing it
is idempotent and `qes audit verify` rebuilds its steps."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from asn1crypto import cms
from cryptography import x509

from tests.integration.api.test_policy_web_signing import qes
from tests.integration.log.test_log_admin_acts import _integrated
from tests.integration.tsa.test_revocation import _fetch
from tests.integration.tsa.test_rollover import _token
from tests.support.idp import RunningIdp
from tests.support.pg import scratch_database
from tests.support.service import (
    SignerProcess,
    api_headers,
    free_port,
    own_ca_labels,
    run_qes,
    service_env,
)
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import run

ROOT_ONLY = ("QES_ROOT_PIN", "QES__OFFLINE__TOKEN_LABEL")


@dataclass(frozen=True)
class Ceremony:
    online: dict[str, str]  # no root PIN
    offline: dict[str, str]  # its own SoftHSM directory; no online PIN, no database
    offline_token: SoftHsmToken
    carry: Path  # what travels between the machines, the transcript among it
    database_url: str
    said: dict[str, str]
    root_label: str


def _qes(env: dict[str, str], *args: str, carry: Path) -> str:
    done = qes(env, *args, "--actor", "ceremony-olga", "--transcript", str(carry / "t.jsonl"))
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


def _sides(
    token: SoftHsmToken, url: str, idp: RunningIdp, work: Path
) -> tuple[dict[str, str], dict[str, str], SoftHsmToken, str]:
    labels = own_ca_labels("cer")
    online = service_env(
        token=token, database_url=url, idp=idp, port=free_port(), data_dir=work / "online", **labels
    )
    online = {k: v for k, v in online.items() if k not in ROOT_ONLY}
    online["SOFTHSM2_CONF"] = str(token.conf)
    offline_token = SoftHsmToken.create(work / "offline-hsm", "ceremony-root")
    offline = {
        "SOFTHSM2_CONF": str(offline_token.conf),
        "QES_ROOT_PIN": offline_token.pin,
        "QES__OFFLINE__TOKEN_LABEL": offline_token.label,
        "QES__DATA_DIR": f'"{work / "offline"}"',
        "QES__CA__ROOT_LABEL": labels["QES__CA__ROOT_LABEL"],
        "QES_HSM_PIN": "",
        "QES_DATABASE_URL": "",
    }
    return online, offline, offline_token, labels["QES__CA__ROOT_LABEL"]


def _walk(online: dict[str, str], offline: dict[str, str], carry: Path) -> dict[str, str]:
    """Every ceremony step in the order the README gives, then `qes init` online (TSA, the
    issuing CA's responder, log key) without the root; what each command printed."""
    said = {"root create": _qes(offline, "ca", "root", "create", carry=carry)}
    root_pem = Path(offline["QES__DATA_DIR"].strip('"')) / "ceremony" / "root.pem"
    (carry / "root.pem").write_bytes(root_pem.read_bytes())
    said["import root"] = _qes(online, "ca", "import", str(carry / "root.pem"), carry=carry)
    for role in ("issuing", "ocsp-root"):
        csr, cert = carry / f"{role}.csr", carry / f"{role}.pem"
        said[f"request {role}"] = _qes(
            online, "ca", "request", role, "--out", str(csr), carry=carry
        )
        _qes(
            offline, "ca", "root", "sign", str(csr), "--role", role, "--out", str(cert), carry=carry
        )
        said[f"import {role}"] = _qes(online, "ca", "import", str(cert), carry=carry)
    _crl_ceremony(online, offline, carry, days=60)
    init = qes(online, "init")
    assert init.returncode == 0, init.stderr
    said["init"] = init.stdout
    return said


def _crl_ceremony(online: dict[str, str], offline: dict[str, str], carry: Path, days: int) -> None:
    request, crl = carry / "crl-request.json", carry / "root.crl"
    _qes(online, "ca", "request", "crl", "--out", str(request), carry=carry)
    _qes(offline, "ca", "root", "crl", str(request), "--out", str(crl),
         "--next-update-days", str(days), carry=carry)  # fmt: skip
    _qes(online, "ca", "import", str(crl), carry=carry)


@pytest.fixture(scope="module")
def ceremony(
    softhsm_token: SoftHsmToken,
    pg_admin: str,
    idp: RunningIdp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Ceremony]:
    work = tmp_path_factory.mktemp("ceremony")
    carry = work / "carry"
    carry.mkdir()
    with scratch_database(pg_admin) as url:
        online, offline, offline_token, root_label = _sides(softhsm_token, url, idp, work)
        said = _walk(online, offline, carry)
        yield Ceremony(online, offline, offline_token, carry, url, said, root_label)


def _openssl_ok(*args: str | Path) -> str:
    done = run("openssl", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_root_key_is_only_in_the_offline_token(
    ceremony: Ceremony, softhsm_token: SoftHsmToken
) -> None:
    online = [o.label for o in softhsm_token.list_objects()]  # a separate process lists them
    offline = [o.label for o in ceremony.offline_token.list_objects()]
    assert ceremony.root_label not in online and "qes-root-ca" not in online
    assert sorted(offline) == [ceremony.root_label] * 2  # the root's key pair, nothing else
    assert "CA already present" in ceremony.said["init"]  # the ceremony made it
    assert "waiting for the offline root" not in ceremony.said["init"]
    assert "stored as current" in ceremony.said["import issuing"]
    assert "OCSP responder certificate (root) stored" in ceremony.said["import ocsp-root"]


def test_openssl_accepts_what_the_root_signed(ceremony: Ceremony) -> None:
    carry = ceremony.carry
    _openssl_ok("verify", "-CAfile", carry / "root.pem", carry / "issuing.pem")
    _openssl_ok("verify", "-CAfile", carry / "root.pem", "-purpose", "ocsphelper",
                carry / "ocsp-root.pem")  # fmt: skip
    text = _openssl_ok("crl", "-inform", "DER", "-in", carry / "root.crl", "-CAfile",
                       carry / "root.pem", "-noout", "-text")  # fmt: skip
    assert "verify OK" in text and "No Revoked Certificates" in text
    crl = x509.load_der_x509_crl((carry / "root.crl").read_bytes())
    assert crl.next_update_utc == crl.last_update_utc + timedelta(days=60)


def test_refusals(ceremony: Ceremony, tmp_path: Path) -> None:
    """A request whose signature does not verify is not signed; a certificate from another
    root, or a CRL not from the stored root, is not imported; a second root is refused."""
    carry = ceremony.carry
    csr = bytearray((carry / "issuing.csr").read_bytes())
    csr[-5] ^= 0x01  # inside the signature
    (tmp_path / "bad.csr").write_bytes(bytes(csr))
    bad = qes(ceremony.offline, "ca", "root", "sign", str(tmp_path / "bad.csr"),
              "--role", "issuing", "--out", str(tmp_path / "x.pem"))  # fmt: skip
    assert bad.returncode == 1 and "does not verify" in bad.stderr, bad.stderr
    other = SoftHsmToken.create(tmp_path / "other-hsm", "other-root")
    other_env = {**ceremony.offline, "SOFTHSM2_CONF": str(other.conf),
                 "QES_ROOT_PIN": other.pin, "QES__OFFLINE__TOKEN_LABEL": other.label,
                 "QES__DATA_DIR": f'"{tmp_path / "other"}"'}  # fmt: skip
    assert qes(other_env, "ca", "root", "create").returncode == 0
    foreign = tmp_path / "other" / "ceremony" / "root.pem"
    signed = qes(other_env, "ca", "root", "sign", str(carry / "issuing.csr"),
                 "--role", "issuing", "--out", str(tmp_path / "foreign.pem"))  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    for path, message in (
        (tmp_path / "foreign.pem", "not issued by the stored root"),
        (foreign, "another root is stored"),
    ):
        done = qes(ceremony.online, "ca", "import", str(path))
        assert done.returncode == 1 and message in done.stderr, done.stderr


async def test_transcript_chain_import_and_audit(ceremony: Ceremony, tmp_path: Path) -> None:
    transcript = ceremony.carry / "t.jsonl"
    code, sheet, err = await run_qes("ca", "transcript", "show", str(transcript))
    assert code == 0 and "Head of the transcript (SHA-256)" in sheet, err
    steps = [json.loads(line)["step"] for line in transcript.read_text().splitlines()]
    assert steps[:3] == ["root-create", "certificate-import", "key-create"]
    assert steps.count("certificate-sign") == 2 and {"crl-sign", "crl-import"} <= set(steps)
    first = qes(ceremony.online, "ca", "transcript", "import", str(transcript))
    again = qes(ceremony.online, "ca", "transcript", "import", str(transcript))
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    offline_steps = sum(steps.count(s) for s in ("root-create", "certificate-sign", "crl-sign"))
    assert f"logged {offline_steps} ceremony step(s)" in first.stdout  # online ones were logged
    assert f"logged 0 ceremony step(s), {len(steps)} logged before" in again.stdout
    assert await _ceremony_entries(ceremony.database_url) >= len(steps)
    lines = transcript.read_bytes().splitlines(keepends=True)
    changed = tmp_path / "changed.jsonl"
    forged = lines[0].replace(b"ceremony-olga", b"ceremony-mallory")
    changed.write_bytes(b"".join([forged, *lines[1:]]))
    refused = qes(ceremony.online, "ca", "transcript", "import", str(changed))
    assert refused.returncode == 1 and "does not follow" in refused.stderr, refused.stderr


async def _integrated_at(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await _integrated(conn)
    finally:
        await conn.close()


async def _ceremony_entries(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        query = "SELECT count(*) FROM admin_actions WHERE action='ca-ceremony'"
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


def test_the_service_runs_without_the_root_pin(
    ceremony: Ceremony, idp: RunningIdp, tmp_path: Path
) -> None:
    """`qes serve` with no root PIN anywhere in its environment: signs (the chain judged by
    OpenSSL), serves the imported root CRL and embeds it in CAdES B-LT, answers OCSP about the
    issuing CA with the responder certificate the root signed in the ceremony; after the
    issuing CA is revoked, the next root CRL from the ceremony carries it; `qes audit verify`
    rebuilds every entry, the ceremony's steps among them."""
    env = ceremony.online
    assert not set(ROOT_ONLY) & set(env)
    port = int(env["QES__SERVER__PORT"])
    signer = SignerProcess(env, port, tmp_path / "signer.log").start()
    try:
        payload = _sign_b_lt(signer, idp)
        (tmp_path / "leaf.pem").write_text(payload["certificate"])
        _openssl_ok("verify", "-CAfile", ceremony.carry / "root.pem", "-untrusted",
                    ceremony.carry / "issuing.pem", tmp_path / "leaf.pem")  # fmt: skip
        served = _fetch(f"{signer.url}/ca/root.crl")
        assert served == (ceremony.carry / "root.crl").read_bytes()
        signed = cms.ContentInfo.load(base64.b64decode(payload["signatures"][0]))
        embedded = [c.chosen.dump() for c in signed["content"]["crls"]]
        assert served in embedded
        assert "Cert Status: good" in _ocsp(ceremony, signer)
        done = qes(env, "ca", "revoke", "issuing", "--reason", "cessationOfOperation")
        assert done.returncode == 0, done.stderr
        _crl_ceremony(env, ceremony.offline, ceremony.carry, days=30)
        crl = x509.load_der_x509_crl(_fetch(f"{signer.url}/ca/root.crl"))
        issuing = x509.load_pem_x509_certificate((ceremony.carry / "issuing.pem").read_bytes())
        assert crl.get_revoked_certificate_by_serial_number(issuing.serial_number) is not None
        assert crl.next_update_utc == crl.last_update_utc + timedelta(days=30)
        assert "Cert Status: revoked" in _ocsp(ceremony, signer)
        asyncio.run(_integrated_at(ceremony.database_url))  # the ceremony steps too
        verified = qes(env, "audit", "verify", "-q")
        assert verified.returncode == 0, verified.stderr
    finally:
        signer.stop()


def _sign_b_lt(signer: SignerProcess, idp: RunningIdp, digest: bytes = bytes(32)) -> dict[str, str]:
    """A CAdES B-LT over the SHA-256 ``digest`` (the service's answer)."""
    body = {"hash_algorithm": "sha256", "hashes": [base64.b64encode(digest).decode()],
            "format": "cades-b-lt"}  # fmt: skip
    headers = {**api_headers(_token(idp)), "Content-Type": "application/json"}
    request = urllib.request.Request(  # noqa: S310
        f"{signer.url}/api/v1/signatures", json.dumps(body).encode(), headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
        return dict(json.loads(resp.read()))


def _ocsp(ceremony: Ceremony, signer: SignerProcess) -> str:
    carry = ceremony.carry
    done = run("openssl", "ocsp", "-issuer", carry / "root.pem", "-cert", carry / "issuing.pem",
               "-url", f"{signer.url}/ocsp", "-CAfile", carry / "root.pem",
               "-resp_text")  # fmt: skip
    assert done.returncode == 0 and "Response verify OK" in done.stderr, done.stderr
    return str(done.stdout)
