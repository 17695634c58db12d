"""Issue 15, "How it is checked": one CA's whole life on a running service, each signature
then judged by OpenSSL, pyHanko and `qes verify` with the verdict a relying party must get.

Key ceremony (`qes init` on one machine: the root key made in the offline root token, the
issuing CA's and the OCSP responder's requests signed there, the root CRL too, every step in
the hash-chained transcript and the log) → sign → `qes ca rollover tsa` → `qes ca switch tsa`
(restart) → sign → the old TSA's key is compromised: `qes ca revoke <its serial> --reason
keyCompromise`. RFC 3161 §4 item 2: no token that key signed can be trusted any more,
whenever it was made, unless a later archive time-stamp proves it existed before. So:

- the new signature (TSA g2) is valid for all three;
- the old one (TSA g1) is refused by `qes verify --crl` with the CRL the service publishes,
  by pyHanko once the 10-minute leaf has expired (then only the time-stamp proves when the
  signature was made) with that CRL, and OpenSSL finds the old TSA certificate revoked
  (`openssl verify -crl_check`);
- the CRL and OCSP answers say so (`openssl crl`, `openssl ocsp`), and about TSA g2 "good".

PDFs are signed at B-LT: their DSS holds the validation data of the signing moment (the old
TSA unrevoked then), which is exactly what a fresh CRL must overrule. Own database and key
labels: the session's service keeps its CA."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signer.formats.ltv import ValidationData, add_validation_data
from signer.translog.ceremony import TranscriptFile
from tests.integration.api.test_policy_web_signing import qes
from tests.integration.cli.test_verify_cli import qes as qes_verify
from tests.integration.tsa.test_revocation import _fetch
from tests.integration.tsa.test_rollover import DOCUMENT, _token
from tests.support.idp import RunningIdp
from tests.support.pdfs import multi_page_pdf
from tests.support.service import (
    SignerProcess,
    api_headers,
    own_ca,
)
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_ocsp, run

PYHANKO = str(Path(sys.executable).parent / "pyhanko")


@dataclass(frozen=True)
class Signature:
    """A CAdES signature over DOCUMENT and a B-LT PDF, and the TSA certificate of both."""

    cades: Path
    pdf: Path
    tsa: Path


@dataclass(frozen=True)
class Life:
    signer: SignerProcess
    work: Path
    old: Signature  # time-stamped by TSA g1, revoked for key compromise at the end
    new: Signature  # by TSA g2
    document: Path
    trust: Path  # the trust bundle's PEM (root, issuing CA, both TSA generations)
    root: Path
    issuing: Path
    crl: Path  # the issuing CA's CRL after the revocation (PEM)
    revoked: str  # what `qes ca revoke` printed


def _post(url: str, token: str, body: bytes, content_type: str) -> bytes:
    headers = {**api_headers(token), "Content-Type": content_type}
    request = urllib.request.Request(url, body, headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
        return bytes(resp.read())


def _sign(signer: SignerProcess, idp: RunningIdp, work: Path) -> Signature:
    """CAdES over DOCUMENT and a PDF at B-LT, each with a fresh token (single-use ``jti``);
    the TSA certificate in use then, from the trust bundle."""
    work.mkdir()
    body = {
        "hash_algorithm": "sha256",
        "hashes": [base64.b64encode(hashlib.sha256(DOCUMENT).digest()).decode()],
        "format": "cades",
    }
    url, json_type = f"{signer.url}/api/v1/signatures", "application/json"
    answer = json.loads(_post(url, _token(idp), json.dumps(body).encode(), json_type))
    signature = Signature(work / "note.p7s", work / "signed.pdf", work / "tsa.pem")
    signature.cades.write_bytes(base64.b64decode(answer["signatures"][0]))
    url = f"{signer.url}/api/v1/signatures/pdf?level=b-lt"
    signature.pdf.write_bytes(_post(url, _token(idp), multi_page_pdf(1), "application/pdf"))
    bundle = json.loads(_fetch(f"{signer.url}/api/v1/trust-bundle"))
    signature.tsa.write_text(bundle["tsa"][0])
    return signature


def _ca(env: dict[str, str], *args: str) -> str:
    done = qes(env, "ca", *args, "--actor", "ca-officer-olga")
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


@pytest.fixture(scope="module")
def life(
    softhsm_token: SoftHsmToken,
    pg_admin: str,
    idp: RunningIdp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Life]:
    work = tmp_path_factory.mktemp("ca-life")
    with own_ca(softhsm_token, pg_admin, idp, work, "life") as (env, port):
        first = SignerProcess(env, port, work / "first.log").start()
        try:
            old = _sign(first, idp, work / "old")
            _ca(env, "rollover", "tsa")
            _ca(env, "switch", "tsa")
        finally:
            first.stop()
        signer = SignerProcess(env, port, work / "second.log").start()
        try:
            new = _sign(signer, idp, work / "new")
            old_tsa = x509.load_pem_x509_certificate(old.tsa.read_bytes())
            revoked = _ca(env, "revoke", f"{old_tsa.serial_number:x}", "--reason", "keyCompromise")
            yield _published(signer, work, old, new, revoked)
        finally:
            signer.stop()


def _published(
    signer: SignerProcess, work: Path, old: Signature, new: Signature, revoked: str
) -> Life:
    bundle = json.loads(_fetch(f"{signer.url}/api/v1/trust-bundle"))
    files = {name: work / f"{name}.pem" for name in ("trust", "root", "issuing", "crl")}
    files["trust"].write_text(bundle["pem"])
    files["root"].write_text(bundle["root"])
    files["issuing"].write_text(bundle["issuing_ca"])
    crl = x509.load_der_x509_crl(_fetch(f"{signer.url}/ca/issuing.crl"))
    files["crl"].write_bytes(crl.public_bytes(Encoding.PEM))
    document = work / "note.txt"
    document.write_bytes(DOCUMENT)
    return Life(signer, work, old, new, document, revoked=revoked, **files)


def test_the_ceremony_kept_the_root_offline_and_its_transcript_verifies(
    life: Life, softhsm_token: SoftHsmToken
) -> None:
    transcript = life.work / "ceremony" / "transcript.jsonl"
    steps = TranscriptFile(transcript).read()
    assert steps[0].step == "root-create"
    made = {"key-create", "certificate-sign", "certificate-import", "crl-sign", "crl-import"}
    assert made <= {s.step for s in steps}
    online = {o.label for o in softhsm_token.list_objects()}
    root, issuing = (
        life.signer.env["QES__CA__ROOT_LABEL"],
        life.signer.env["QES__CA__ISSUING_LABEL"],
    )
    assert root not in online and issuing in online, online
    shown = qes(life.signer.env, "ca", "transcript", "show", str(transcript))
    assert shown.returncode == 0, shown.stderr
    assert f"Head of the transcript (SHA-256): {steps[-1].digest.hex()}" in shown.stdout


def test_the_crl_and_ocsp_name_the_old_tsa_revoked_and_the_new_one_good(life: Life) -> None:
    old = x509.load_pem_x509_certificate(life.old.tsa.read_bytes())
    new = x509.load_pem_x509_certificate(life.new.tsa.read_bytes())
    assert old.serial_number != new.serial_number
    assert life.revoked.startswith(f"revoked: tsa certificate {old.serial_number:x}")
    shown = run("openssl", "crl", "-in", life.crl, "-CAfile", life.trust, "-noout", "-text")
    assert shown.returncode == 0 and "verify OK" in shown.stderr, shown.stderr
    assert "Key Compromise" in shown.stdout
    crl = x509.load_pem_x509_crl(life.crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(old.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(new.serial_number) is None
    for tsa, status in ((life.old.tsa, "revoked"), (life.new.tsa, "good")):
        said = openssl_ocsp(life.signer.url, life.issuing, tsa, life.root, "-resp_text")
        assert f"Cert Status: {status}" in said, said


def test_openssl_finds_the_old_tsa_revoked_and_the_new_one_good(life: Life) -> None:
    for tsa, verdict in ((life.old.tsa, "certificate revoked"), (life.new.tsa, ": OK")):
        done = run(
            "openssl", "verify", "-crl_check", "-CRLfile", life.crl, "-CAfile", life.root,
            "-untrusted", life.issuing, tsa,
        )  # fmt: skip
        assert verdict in done.stdout + done.stderr, done.stdout + done.stderr
        assert (done.returncode == 0) == (verdict == ": OK")


def _qes_verify(life: Life, signature: Signature, *extra: str | Path) -> list[str]:
    """The first line of `qes verify` for the CAdES and the PDF, each with ``extra``."""
    cades = qes_verify(life.document, signature.cades, "--trust", life.trust, *extra)
    pades = qes_verify(signature.pdf, "--trust", life.trust, *extra)
    return [done.stdout + done.stderr for done in (cades, pades)]


def test_qes_verify_refuses_the_old_signature_with_the_published_crl(life: Life) -> None:
    for said in _qes_verify(life, life.new, "--crl", life.crl):
        assert said.startswith("VALID  "), said
    for said in _qes_verify(life, life.old, "--crl", life.crl):
        assert said.startswith("INVALID"), said
        assert "tsa-certificate: revoked (key_compromise)" in said, said
    # Without the fresh CRL a verifier cannot know: the PDF's DSS is of the signing moment.
    for said in _qes_verify(life, life.old):
        assert said.startswith("VALID  "), said


def _pyhanko(life: Life, signature: Signature) -> tuple[bool, str]:
    """``pyhanko sign adesverify`` with revocation checking, 20 minutes on (the 10-minute leaf
    has expired, so only the signature-time-stamp proves when it signed), of the PDF with the
    issuing CA's CRL of now in its DSS: what a relying party fetches from the TSA
    certificate's CRL distribution point (adesverify does not fetch at a given time)."""
    crl = x509.load_pem_x509_crl(life.crl.read_bytes()).public_bytes(Encoding.DER)
    issuing = x509.load_pem_x509_certificate(life.issuing.read_bytes())
    fresh = signature.pdf.with_name("fresh-crl.pdf")
    data = ValidationData((issuing,), (crl,), ())
    fresh.write_bytes(add_validation_data(signature.pdf.read_bytes(), data))
    later = (datetime.now(UTC) + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = subprocess.run(
        [PYHANKO, "sign", "adesverify", "--trust", str(life.root), "--trust-replace",
         "--validation-time", later, "--executive-summary", str(fresh)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    valid = done.stdout.strip().endswith(":VALID")
    assert valid == (done.returncode == 0), done.stdout + done.stderr
    return valid, done.stdout + done.stderr


def test_pyhanko_refuses_the_old_pdf_and_accepts_the_new_one(life: Life) -> None:
    valid, said = _pyhanko(life, life.new)
    assert valid, said
    valid, said = _pyhanko(life, life.old)
    assert not valid and said.rstrip().endswith("Error: Validation failed"), said
    assert "was revoked at" in said and "due to a compromised key" in said, said
