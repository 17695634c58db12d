"""Issue 15 item 1, the two-machine key ceremony: the root key lives in a token of its own, in
a SoftHSM directory the online side never sees, and `qes serve` runs without its PIN.

The offline side (its own token directory and config: no online HSM PIN, no database) creates
the root and signs what the online side (the session's token, its own database and labels,
no root PIN) requests: the issuing CA, the root's OCSP responder certificate and the root's
CRL. Files and the transcript travel in ``carry/``. After the last step two witnesses attest
what their sheet showed (`qes ca witness`, no configuration, database or PIN), one with a CMS
signature made by OpenSSL. OpenSSL judges every certificate and CRL the service accepts and
the kept witness signature; the transcript's chain verifies, a changed one is refused,
importing it is idempotent and `qes audit verify` rebuilds its steps, attestations included."""

from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from asn1crypto import cms
from cryptography import x509

from signer.translog.ceremony import TranscriptFile
from tests.integration.api.test_policy_web_signing import qes
from tests.integration.log.test_log_admin_acts import _integrated
from tests.integration.tsa.test_revocation import _fetch
from tests.integration.tsa.test_rollover import _token
from tests.support.idp import RunningIdp
from tests.support.pg import scratch_database, sql
from tests.support.service import (
    SignerProcess,
    api_headers,
    free_port,
    own_ca_labels,
    run_qes,
    service_env,
)
from tests.support.service import qes as qes_alone
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_ocsp, run

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
    return {**said, **_attest(carry)}


#: Neither machine's configuration, database nor PINs: what `qes ca witness` may need.
NOTHING = {"QES_CONFIG": "", "QES_DATABASE_URL": "", "QES_HSM_PIN": "", "QES_ROOT_PIN": "",
           "SOFTHSM2_CONF": "/nonexistent/softhsm2.conf"}  # fmt: skip


def _alone(*args: str | Path) -> str:
    done = qes_alone(*args, env=NOTHING)
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


def _attest(carry: Path) -> dict[str, str]:
    """After the last step each witness attests with the head printed on the sheet they
    signed: Walt also signs the transcript as it stands (CMS, OpenSSL, his own certificate),
    Bea attests from the same sheet after him; what each printed, and the sheet's head."""
    transcript = carry / "t.jsonl"
    sheet = _alone("ca", "transcript", "show", str(transcript))
    head = sheet.split("Head of the transcript (SHA-256): ")[1].split()[0]
    walt = carry / "walt"
    walt.mkdir()
    _openssl_ok("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", walt / "key.pem", "-out", walt / "cert.pem", "-days", "30",
                "-subj", "/O=Example Bank/CN=Walt Witness")  # fmt: skip
    _openssl_ok("cms", "-sign", "-binary", "-in", transcript, "-signer", walt / "cert.pem",
                "-inkey", walt / "key.pem", "-outform", "DER",
                "-out", walt / "sheet.p7s")  # fmt: skip
    witness = ("ca", "witness", "--transcript", str(transcript), "--head", head)
    return {
        "sheet head": head,
        "witness walt": _alone(*witness, "--name", "Walt Witness", "--role", "internal auditor",
                               "--signature", str(walt / "sheet.p7s")),
        "witness bea": _alone(*witness, "--name", "Bea Jones", "--role", "external auditor",
                              "--statement", "I observed every step; the tokens were sealed."),
    }  # fmt: skip


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
    root, or a CRL not from the stored root, is not imported; a second root is refused; a
    root CRL is not signed for less than a day or past the root's end."""
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
    request = carry / "crl-request.json"
    for days in ("0", "-3", str(30 * 366)):  # nextUpdate not ahead, or past the root's end
        crl = qes(ceremony.offline, "ca", "root", "crl", str(request), "--out",
                  str(tmp_path / "never.crl"), "--next-update-days", days)  # fmt: skip
        assert crl.returncode == 1, crl.stderr
        assert crl.stderr.strip().startswith("qes: next update: from 1 day to the root's end")
        assert len(crl.stderr.strip().splitlines()) == 1 and not (tmp_path / "never.crl").exists()


async def test_transcript_chain_import_and_audit(ceremony: Ceremony, tmp_path: Path) -> None:
    transcript = ceremony.carry / "t.jsonl"
    code, sheet, err = await run_qes("ca", "transcript", "show", str(transcript))
    assert code == 0 and "Head of the transcript (SHA-256)" in sheet, err
    steps = [json.loads(line)["step"] for line in transcript.read_text().splitlines()]
    assert steps[:3] == ["root-create", "certificate-import", "key-create"]
    assert steps.count("certificate-sign") == 2 and {"crl-sign", "crl-import"} <= set(steps)
    assert steps.count("witness-attest") == 2
    first = qes(ceremony.online, "ca", "transcript", "import", str(transcript))
    again = qes(ceremony.online, "ca", "transcript", "import", str(transcript))
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    offline = ("root-create", "certificate-sign", "crl-sign", "witness-attest")
    offline_steps = sum(steps.count(s) for s in offline)
    assert f"logged {offline_steps} ceremony step(s)" in first.stdout  # online ones were logged
    assert f"logged 0 ceremony step(s), {len(steps)} logged before" in again.stdout
    assert await _ceremony_entries(ceremony.database_url) >= len(steps)
    await _attestations_logged(ceremony)
    lines = transcript.read_bytes().splitlines(keepends=True)
    changed = tmp_path / "changed.jsonl"
    forged = lines[0].replace(b"ceremony-olga", b"ceremony-mallory")
    changed.write_bytes(b"".join([forged, *lines[1:]]))
    refused = qes(ceremony.online, "ca", "transcript", "import", str(changed))
    assert refused.returncode == 1 and "does not follow" in refused.stderr, refused.stderr


async def _attestations_logged(ceremony: Ceremony) -> None:
    """Each attestation is a ``ca-ceremony`` entry: by the witness, at its time."""
    steps = TranscriptFile(ceremony.carry / "t.jsonl").read()
    attested = [s for s in steps if s.step == "witness-attest"]
    assert await _entries_of(ceremony.database_url, attested) == [
        (f"witness-attest #{s.seq}", f"cli:{s.actor}", s.at) for s in attested
    ]


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


async def _entries_of(url: str, steps: list[Any]) -> list[tuple[str, str, datetime]]:
    """The ``ca-ceremony`` entries of ``steps``: (detail, actor, when), in step order."""
    rows = await sql(
        url,
        "SELECT detail, actor_subject, acted_at FROM admin_actions WHERE action ="
        " 'ca-ceremony' AND target_sha256 = ANY($1::bytea[]) ORDER BY acted_at, detail",
        [s.digest for s in steps],
    )
    return [(r["detail"], r["actor_subject"], r["acted_at"]) for r in rows]


def test_witnesses_attest_the_sheet_they_signed(ceremony: Ceremony, tmp_path: Path) -> None:
    """Issue 15 item 1: each attestation is a step naming the sheet's head and what it covers,
    by the witness, role and OS account; the kept CMS signature verifies (OpenSSL) over the
    transcript lines that head fixes; the sheet lists the attestations and marks the steps
    each covers; a head from another sheet, or a signature over other bytes, is refused in one
    line with nothing written; a changed attestation breaks the chain."""
    transcript = ceremony.carry / "t.jsonl"
    steps = TranscriptFile(transcript).read()
    walt, bea = [s for s in steps if s.step == "witness-attest"]
    head = ceremony.said["sheet head"]
    covers = next(s.seq for s in steps if s.digest.hex() == head)
    assert bea.seq == walt.seq + 1 and covers == walt.seq - 1
    for step, role in ((walt, "internal auditor"), (bea, "external auditor")):
        assert step.fact["head_sha256"] == head and step.fact["covers"] == f"1..{covers}"
        assert (step.fact["role"], step.fact["account"]) == (role, getpass.getuser())
    assert bea.fact["statement"] == "I observed every step; the tokens were sealed."
    assert f"observed steps 1..{covers} " in walt.fact["statement"]
    assert walt.fact["signer"] == "CN=Walt Witness,O=Example Bank"
    kept = ceremony.carry / walt.fact["signature_file"]
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == walt.fact["signature_sha256"]
    lines = transcript.read_bytes().splitlines(keepends=True)
    (tmp_path / "sheet.jsonl").write_bytes(b"".join(lines[:covers]))
    _openssl_ok("cms", "-verify", "-binary", "-inform", "DER", "-in", kept, "-content",
                tmp_path / "sheet.jsonl", "-noverify", "-out", tmp_path / "content")  # fmt: skip
    sheet = _alone("ca", "transcript", "show", str(transcript))
    listed = (
        f"  #{walt.seq} Walt Witness (internal auditor; account {getpass.getuser()}):"
        f" steps 1..{covers}; signature SHA-256 {walt.fact['signature_sha256']}"
    )
    assert listed in sheet and f"  #{bea.seq} Bea Jones (external auditor;" in sheet
    marks = f"attested by: Walt Witness (#{walt.seq}), Bea Jones (#{bea.seq})"
    assert sheet.count(marks) == covers
    _refusals(transcript, steps, tmp_path)


def _refusals(transcript: Path, steps: Any, tmp_path: Path) -> None:
    before, files = transcript.read_bytes(), sorted(transcript.parent.iterdir())
    witness = ("ca", "witness", "--transcript", str(transcript), "--name", "Mallory", "--role", "x")
    stale = qes_alone(*witness, "--head", steps[0].digest.hex(), env=NOTHING)
    assert stale.returncode == 1 and stale.stdout == "", stale.stderr
    assert stale.stderr == (
        f"qes: the witness signed a different sheet: its head {steps[0].digest.hex()} is not"
        f" the transcript's head {TranscriptFile(transcript).read()[-1].digest.hex()}\n"
    )
    (tmp_path / "other.p7s").write_bytes(
        (transcript.parent / "walt" / "sheet.p7s").read_bytes()  # signs fewer lines than now
    )
    head = TranscriptFile(transcript).read()[-1].digest.hex()
    unsigned = qes_alone(*witness, "--head", head, "--signature", str(tmp_path / "other.p7s"),
                         env=NOTHING)  # fmt: skip
    assert unsigned.returncode == 1 and unsigned.stderr.count("\n") == 1, unsigned.stderr
    assert "message-digest does not match" in unsigned.stderr
    assert transcript.read_bytes() == before and sorted(transcript.parent.iterdir()) == files
    lines = before.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if b'"witness-attest"' in line)
    lines[at] = lines[at].replace(b"internal auditor", b"external auditor")
    (tmp_path / "changed.jsonl").write_bytes(b"".join(lines))
    changed = qes_alone("ca", "transcript", "show", str(tmp_path / "changed.jsonl"), env=NOTHING)
    assert changed.returncode == 1
    assert f"transcript step {at + 2}: does not follow step {at + 1}" in changed.stderr


def test_the_service_runs_without_the_root_pin(
    ceremony: Ceremony, idp: RunningIdp, tmp_path: Path
) -> None:
    """`qes serve` with no root PIN anywhere in its environment: signs (the chain judged by
    OpenSSL), serves the imported root CRL and embeds it in CAdES B-LT, answers OCSP about the
    issuing CA with the responder certificate the root signed in the ceremony; after the
    issuing CA is revoked, the next root CRL from the ceremony carries it; `qes audit verify`
    rebuilds every entry, the ceremony's steps and the witnesses' attestations among them."""
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
        imported = qes(env, "ca", "transcript", "import", str(ceremony.carry / "t.jsonl"))
        assert "logged 1 ceremony step(s)" in imported.stdout, imported.stderr  # the crl-sign
        asyncio.run(_attestations_logged(ceremony))
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
    root = carry / "root.pem"
    return openssl_ocsp(signer.url, root, carry / "issuing.pem", root, "-resp_text")
