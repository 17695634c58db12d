"""Issue 15 item 2, rollover without breaking the past: the key ceremony (`qes ca request
issuing`, `qes ca root sign` with the offline root token, `qes ca import`; issue 15 item 1) and
`qes ca rollover tsa` make a pending generation while the old one still signs, `qes ca switch
issuing|tsa` makes it current
(admin acts in the log), a restarted `qes serve` issues under the new issuing CA and TSA, and
what was signed before the rollover still validates against the service's trust bundle, judged
by `qes verify`, OpenSSL and pyHanko. The TSA certificates carry a privateKeyUsagePeriod
shorter than their validity, and pkilint finds nothing in the new certificates.

Own database and key labels: the session's service keeps its CA."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import asyncpg
import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.dss import DocumentSecurityStore

from ca.tsa import key_usage_period
from tests.integration.api.test_policy_web_signing import qes
from tests.integration.cli.test_verify_cli import qes as qes_verify
from tests.integration.log.test_log_admin_acts import _integrated
from tests.integration.tsa.test_revocation import _fetch
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.pdfs import multi_page_pdf
from tests.support.pkilint import lint
from tests.support.service import (
    PKI_URL,
    SignerProcess,
    api_headers,
    own_ca,
    qes_init,
)
from tests.support.service import qes as cli
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_ocsp, run

DOCUMENT = b"delivery note 815\n" * 50


@dataclass(frozen=True)
class Signed:
    """A CAdES signature over DOCUMENT and a signed PDF, made by one `qes serve`."""

    document: Path
    cades: Path
    pdf: Path
    leaf: x509.Certificate


@dataclass(frozen=True)
class Rolled:
    env: dict[str, str]
    database_url: str
    idp: RunningIdp
    work: Path
    signer: SignerProcess  # restarted after the switches
    before: Signed  # before the rollover: generation 1
    pending: Signed  # after `qes ca rollover issuing`, before the switch: still generation 1
    middle: Signed  # issuing CA switched, TSA not yet: issuing g2, TSA g1
    middle_crl: bytes  # the issuing CA's CRL then: from issuing g1, the TSA's issuer
    middle_lt: bytes  # a PAdES B-LT PDF signed then
    after: Signed  # after both switches and a restart: generation 2
    bundle: dict[str, object]  # the trust bundle as JSON, from the restarted service
    bundle_pem: Path
    said: dict[str, str]  # what each rollover and switch printed


def _sign(signer: SignerProcess, idp: RunningIdp, work: Path) -> Signed:
    """CAdES over DOCUMENT (``POST /api/v1/signatures``) and a PDF (``.../signatures/pdf``),
    each with a fresh token (their ``jti`` is single-use)."""
    work.mkdir()
    body = {
        "hash_algorithm": "sha256",
        "hashes": [base64.b64encode(hashlib.sha256(DOCUMENT).digest()).decode()],
        "format": "cades",
    }
    headers = {**api_headers(_token(idp)), "Content-Type": "application/json"}
    request = urllib.request.Request(  # noqa: S310
        f"{signer.url}/api/v1/signatures", json.dumps(body).encode(), headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
        payload = json.loads(resp.read())
    signed = Signed(work / "note.txt", work / "note.p7s", work / "signed.pdf", _leaf(payload))
    signed.document.write_bytes(DOCUMENT)
    signed.cades.write_bytes(base64.b64decode(payload["signatures"][0]))
    headers = {**api_headers(_token(idp)), "Content-Type": "application/pdf"}
    request = urllib.request.Request(  # noqa: S310
        f"{signer.url}/api/v1/signatures/pdf?field=Approval", multi_page_pdf(1), headers
    )
    with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
        signed.pdf.write_bytes(resp.read())
    return signed


def _token(idp: RunningIdp) -> str:
    return asyncio.run(idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"]))


def _leaf(payload: dict[str, str]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(payload["certificate"].encode())


def _ca(env: dict[str, str], *args: str) -> str:
    done = qes(env, "ca", *args, "--actor", "ceremony-rita")
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


def _issuing_ceremony(env: dict[str, str], work: Path, name: str) -> str:
    """A new issuing CA through the key ceremony: the online key and its request, the
    offline root's signature, the import (a pending generation); what the import said."""
    csr, cert = work / f"{name}.csr", work / f"{name}.pem"
    _ca(env, "request", "issuing", "--out", str(csr))
    _ca(env, "root", "sign", str(csr), "--role", "issuing", "--out", str(cert))
    return _ca(env, "import", str(cert))


@pytest.fixture(scope="module")
def rolled(
    softhsm_token: SoftHsmToken,
    pg_admin: str,
    idp: RunningIdp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Rolled]:
    work = tmp_path_factory.mktemp("rollover")
    with own_ca(softhsm_token, pg_admin, idp, work, "roll") as (env, port):
        said: dict[str, str] = {}
        before, pending, middle, middle_crl, middle_lt = _roll_the_issuing_ca(
            env, port, idp, work, said
        )
        for step in ("rollover tsa", "switch tsa"):
            said[step] = _ca(env, *step.split())
        signer = SignerProcess(env, port, work / "last.log").start()  # takes the switch
        try:
            after = _sign(signer, idp, work / "after")
            bundle = json.loads(_fetch(f"{signer.url}/api/v1/trust-bundle"))
            bundle_pem = work / "bundle.pem"
            bundle_pem.write_text(bundle["pem"])
            yield Rolled(
                env, env["QES_DATABASE_URL"], idp, work, signer, before, pending, middle,
                middle_crl, middle_lt, after, bundle, bundle_pem, said,
            )  # fmt: skip
        finally:
            signer.stop()


def _roll_the_issuing_ca(
    env: dict[str, str], port: int, idp: RunningIdp, work: Path, said: dict[str, str]
) -> tuple[Signed, Signed, Signed, bytes, bytes]:
    """Sign under generation 1; roll the issuing CA (the old one still signs) and switch; a
    restarted replica then signs under issuing g2 while its TSA is still g1, certified by
    issuing g1, whose CRL it publishes. The three signatures, that CRL and a B-LT PDF signed
    then."""
    checks_often = {**env, "QES__CA__SWITCH_CHECK_SECONDS": "1"}
    first = SignerProcess(checks_often, port, work / "first.log").start()
    try:
        before = _sign(first, idp, work / "before")
        said["rollover issuing"] = _issuing_ceremony(env, work, "issuing-g2")
        pending = _sign(first, idp, work / "pending")  # the old CA still serves
        assert _noticed(first, seconds=0) == []  # a pending generation needs no restart
        said["switch issuing"] = _ca(env, "switch", "issuing")
        said["noticed"] = json.dumps(_noticed(first, seconds=20))
    finally:
        first.stop()
    second = SignerProcess(env, port, work / "second.log").start()
    try:
        middle = _sign(second, idp, work / "middle")
        crl = _fetch(f"{second.url}/ca/issuing.crl")
        headers = {**api_headers(_token(idp)), "Content-Type": "application/pdf"}
        request = urllib.request.Request(  # noqa: S310
            f"{second.url}/api/v1/signatures/pdf?field=Approval&level=b-lt",
            multi_page_pdf(1),
            headers,
        )
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
            middle_lt = resp.read()
    finally:
        second.stop()
    return before, pending, middle, crl, middle_lt


def _noticed(signer: SignerProcess, seconds: float) -> list[dict[str, object]]:
    """The replica's ``ca_switch_needs_restart`` log entries, waiting up to ``seconds`` for
    the first."""
    deadline = time.monotonic() + seconds
    while True:
        lines = signer.log.read_text().splitlines()
        found = [json.loads(x) for x in lines if '"event": "ca_switch_needs_restart"' in x]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def _generations(r: Rolled, role: str) -> list[dict[str, str]]:
    found = [g for g in r.bundle["generations"] if g["role"] == role]  # type: ignore[attr-defined]
    return found


def _cert(generation: dict[str, str]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(generation["certificate"].encode())


def _key_id(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _issuer_key_id(cert: x509.Certificate) -> bytes | None:
    return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_trust_bundle_lists_every_generation_with_its_period(rolled: Rolled) -> None:
    issuing, tsa = _generations(rolled, "issuing"), _generations(rolled, "tsa")
    assert [(g["generation"], g["state"]) for g in issuing] == [(1, "past"), (2, "current")]
    assert [(g["generation"], g["state"]) for g in tsa] == [(1, "past"), (2, "current")]
    assert [g["state"] for g in _generations(rolled, "root")] == ["current"]
    for history in (issuing, tsa):
        old, new = history
        assert old["issued_until"] == new["issued_from"] and new["issued_until"] is None
        assert _moment(old["issued_from"]) < _moment(old["issued_until"])
    # the current certificates are the second generation's
    assert rolled.bundle["issuing_ca"] == issuing[1]["certificate"]
    assert rolled.bundle["tsa"] == [tsa[1]["certificate"]]
    in_pem = x509.load_pem_x509_certificates(rolled.bundle_pem.read_bytes())
    assert len(in_pem) == 5  # root, two issuing CAs, two TSA certificates, each once
    assert {_cert(g) for g in (*issuing, *tsa)} < set(in_pem)
    # what was signed before the switch lies inside the old issuing CA's period
    first = _moment(issuing[0]["issued_from"]), _moment(issuing[0]["issued_until"])
    assert first[0] <= rolled.before.leaf.not_valid_before_utc + timedelta(seconds=30) <= first[1]
    # the new TSA is certified by the new issuing CA
    assert _issuer_key_id(_cert(tsa[1])) == _key_id(_cert(issuing[1]))
    assert "pending: issuing g2" in rolled.said["rollover issuing"]
    assert (
        "switched at" in rolled.said["switch tsa"]
        and "tsa g2 (current)" in rolled.said["switch tsa"]
    )


def test_a_replica_running_across_the_switch_says_it_needs_a_restart(rolled: Rolled) -> None:
    """The replica that served across `qes ca switch issuing` keeps signing with g1 (what it
    signs with is fixed for its life) and logs, once, that it needs a restart (its gauge
    ``qes_ca_switch_restart_pending{role="issuing"}`` is 1 meanwhile: the unit test)."""
    (told,) = json.loads(rolled.said["noticed"])
    assert (told["role"], told["in_use"], told["current"]) == ("issuing", "g1", "g2"), told
    assert "restart this replica" in told["action"]
    assert "restart" in rolled.said["switch issuing"]


def test_the_old_ca_signs_until_the_switch_and_the_new_one_after(rolled: Rolled) -> None:
    issuing = [_cert(g) for g in _generations(rolled, "issuing")]
    tsa = [_cert(g) for g in _generations(rolled, "tsa")]
    for signed in (rolled.before, rolled.pending):
        assert _issuer_key_id(signed.leaf) == _key_id(issuing[0])
        assert _time_stamped_by(signed.cades) == tsa[0].serial_number
    assert _issuer_key_id(rolled.middle.leaf) == _key_id(issuing[1])
    assert _time_stamped_by(rolled.middle.cades) == tsa[0].serial_number
    assert _issuer_key_id(rolled.after.leaf) == _key_id(issuing[1])
    assert _time_stamped_by(rolled.after.cades) == tsa[1].serial_number


def _time_stamped_by(cades: Path) -> int:
    """The serial of the TSA certificate in the signature-time-stamp token."""
    signed_data = cms.ContentInfo.load(cades.read_bytes())["content"]
    (attribute,) = [
        a
        for a in signed_data["signer_infos"][0]["unsigned_attrs"]
        if a["type"].native == "signature_time_stamp_token"
    ]
    token = attribute["values"][0]["content"]
    sid = token["signer_infos"][0]["sid"].chosen
    return int(sid["serial_number"].native)


def test_what_was_signed_before_validates_after_the_switch(rolled: Rolled, tmp_path: Path) -> None:
    """The signature made under the old issuing CA and TSA, checked against the trust bundle
    the restarted service publishes: `qes verify` (a year later), OpenSSL (the CMS at signing
    time, and the leaf with the bundle as its only source of intermediates) and pyHanko."""
    later = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    bundle = rolled.bundle_pem
    for signed in (rolled.before, rolled.middle, rolled.after):
        cades = qes_verify(signed.document, signed.cades, "--trust", bundle, "--at", later)
        pades = qes_verify(signed.pdf, "--trust", bundle, "--at", later)
        for done in (cades, pades):
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.startswith("VALID  "), done.stdout
        at = str(int(signed.leaf.not_valid_before_utc.timestamp()) + 60)
        done = run(
            "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", signed.cades,
            "-content", signed.document, "-CAfile", bundle, "-purpose", "any", "-cades",
            "-attime", at, "-out", "/dev/null",
        )  # fmt: skip
        assert done.returncode == 0 and "Verification successful" in done.stderr, done.stderr
        leaf = tmp_path / f"leaf-{signed.leaf.serial_number:x}.pem"
        leaf.write_bytes(signed.leaf.public_bytes(Encoding.PEM))
        root = tmp_path / "root.pem"
        root.write_text(str(rolled.bundle["root"]))
        done = run("openssl", "verify", "-CAfile", root, "-untrusted", bundle, "-attime", at, leaf)
        assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stderr
        judged = subprocess.run(
            [str(Path(sys.executable).parent / "pyhanko"), "sign", "adesverify", "--trust",
             str(bundle), "--trust-replace", "--no-revocation-check", "--validation-time",
             later, "--executive-summary", str(signed.pdf)],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert judged.returncode == 0, judged.stdout + judged.stderr
        assert judged.stdout.strip().endswith(":VALID"), judged.stdout


def test_b_lt_between_the_switches_carries_the_tsa_issuers_ocsp_answer(rolled: Rolled) -> None:
    """Signed at B-LT while issuing g2 issues and TSA g1 (certified by issuing g1) still
    time-stamps: the DSS holds issuing g1's certificate and a good OCSP answer about TSA g1
    from issuing g1's own responder (asked under issuing g1's CertID, RFC 6960 §4.1.1)."""
    dss = DocumentSecurityStore.read_dss(PdfFileReader(BytesIO(rolled.middle_lt)))
    issuing = [_cert(g) for g in _generations(rolled, "issuing")]
    tsa = _cert(_generations(rolled, "tsa")[0])
    certs = [x509.load_der_x509_certificate(c.get_object().data) for c in dss.certs.values()]
    assert issuing[0] in certs and tsa in certs
    (answer,) = [ocsp.load_der_ocsp_response(o.get_object().data) for o in dss.ocsps]
    assert answer.serial_number == tsa.serial_number
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    (responder,) = [c for c in answer.certificates if _ocsp_signing(c)]
    responder.verify_directly_issued_by(issuing[0])


def test_new_certificates_pass_pkilint_and_the_tsa_key_usage_is_shorter(
    rolled: Rolled, tmp_path: Path
) -> None:
    files = {}
    for role in ("issuing", "tsa"):
        for g in _generations(rolled, role):
            files[f"{role}{g['generation']}"] = tmp_path / f"{role}{g['generation']}.pem"
            files[f"{role}{g['generation']}"].write_text(g["certificate"])
    for name in ("issuing2", "tsa1", "tsa2"):
        codes, _ = lint("lint_pkix_cert", "-s", "WARNING", files[name])
        assert codes == [], name
    codes, _ = lint("lint_pkix_signer_signee_cert_chain", files["issuing2"], files["tsa2"])
    assert codes == []
    for g in _generations(rolled, "tsa"):
        cert = _cert(g)
        start, end = key_usage_period(cert)
        assert start == cert.not_valid_before_utc
        assert end < cert.not_valid_after_utc - timedelta(days=365)  # defaults: 1 of 3 years
    done = run("openssl", "x509", "-in", files["tsa2"], "-noout", "-text")
    assert "X509v3 Private Key Usage Period:" in done.stdout
    # The issuing CA's CRL (the TSA certificate's CRL DP) now comes from the issuer of the TSA
    # certificate in use: issuing g2, judged by openssl against g2 and the root only.
    # Before the TSA switch it came from issuing g1, the issuer of TSA g1, though g2 issued.
    for generation, der in (
        ("2", _fetch(f"{rolled.signer.url}/ca/issuing.crl")),
        ("1", rolled.middle_crl),
    ):
        crl = tmp_path / f"issuing{generation}.crl"
        crl.write_bytes(der)
        chain = tmp_path / f"chain{generation}.pem"
        chain.write_text(files[f"issuing{generation}"].read_text() + str(rolled.bundle["root"]))
        done = run("openssl", "crl", "-inform", "DER", "-in", crl, "-CAfile", chain, "-noout")
        assert done.returncode == 0 and "verify OK" in done.stderr, done.stdout + done.stderr


async def test_rollover_and_switch_are_logged_admin_acts(rolled: Rolled) -> None:
    conn = await asyncpg.connect(rolled.database_url)
    try:
        rows = await conn.fetch(
            "SELECT action, detail, certificate_serial, actor_subject FROM admin_actions"
            " WHERE action IN ('ca-rollover', 'ca-switch') ORDER BY acted_at, action"
        )
        await _integrated(conn)
    finally:
        await conn.close()
    serials = {
        f"{g['role']} g{g['generation']}": format(_cert(g).serial_number, "x")
        for g in rolled.bundle["generations"]  # type: ignore[attr-defined]
    }
    assert [(r["action"], r["detail"]) for r in rows] == [
        ("ca-rollover", "issuing g2"),
        ("ca-switch", "issuing g2"),
        ("ca-rollover", "tsa g2"),
        ("ca-switch", "tsa g2"),
    ]
    for row in rows:
        assert row["certificate_serial"] == serials[row["detail"]]
        assert row["actor_subject"] == "cli:ceremony-rita"
    clean = await asyncio.to_thread(qes, rolled.env, "audit", "verify", "-q")
    assert clean.returncode == 0, clean.stderr


def test_init_after_the_switch_keeps_the_new_generations(rolled: Rolled, tmp_path: Path) -> None:
    """`qes init` checks the current generations' keys, not the configured labels, and finds
    an OCSP responder certificate of each issuing CA generation: issuing g2's was made when it
    was imported (pending), so nothing is made; after a restart `openssl ocsp` gets a verified
    "good" for TSA g2 (README "Rollover")."""
    done = qes_init(rolled.env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CA already present") and lines[1].startswith("TSA already")
    assert lines[2].startswith("OCSP responder already present"), lines[2]
    assert lines[2].endswith("certified by the root and 2 issuing CA generation(s)"), lines[2]
    rolled.signer.stop()
    rolled.signer.start()
    files = {}
    for name, pem in (
        ("issuing", _generations(rolled, "issuing")[1]["certificate"]),
        ("tsa", _generations(rolled, "tsa")[1]["certificate"]),
        ("root", str(rolled.bundle["root"])),
    ):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(pem)
    said = openssl_ocsp(rolled.signer.url, files["issuing"], files["tsa"], files["root"],
                        "-resp_text")  # fmt: skip
    assert "Cert Status: good" in said


def test_refusals_and_a_pending_generation_after_a_restart(rolled: Rolled) -> None:
    """Nothing pending: no switch; one pending: no second rollover. A replica restarted while
    issuing g3 is pending lists it in the trust bundle (relying parties can take it in before
    the switch) and still issues under g2."""
    made = _issuing_ceremony(rolled.env, rolled.work, "issuing-g3")
    assert "pending: issuing g3" in made
    for args, message in (
        (("switch", "tsa"), "qes: tsa: nothing pending: run `qes ca rollover tsa` first"),
        (("rollover", "issuing"), "qes: issuing: its certificate comes from the offline root"),
        (
            ("request", "issuing", "--out", str(rolled.work / "g4.csr")),
            "qes: issuing: a generation is pending",
        ),
    ):
        done = qes(rolled.env, "ca", *args)
        assert done.returncode == 1, done.stdout
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), lines
    rolled.signer.stop()
    rolled.signer.start()
    bundle = json.loads(_fetch(f"{rolled.signer.url}/api/v1/trust-bundle"))
    issuing = [g for g in bundle["generations"] if g["role"] == "issuing"]
    assert [(g["generation"], g["state"]) for g in issuing] == [
        (1, "past"),
        (2, "current"),
        (3, "pending"),
    ]
    assert issuing[2]["issued_from"] is None and issuing[2]["certificate"] in bundle["pem"]
    signed = _sign(rolled.signer, rolled.idp, rolled.work / "while-pending")
    assert _issuer_key_id(signed.leaf) == _key_id(_cert(issuing[1]))


def test_a_pdf_stamped_by_the_past_tsa_is_extended_after_both_switches(
    rolled: Rolled, tmp_path: Path
) -> None:
    """`qes ltv extend` of the PDF signed before the rollover (its time-stamp by TSA g1,
    certified by issuing g1): after both switches it fetches issuing g1's certificate and CRL
    by the TSA certificate's key identifier and the OCSP answer about TSA g1 from issuing g1's
    own responder, and TSA g2 adds the archive time-stamp. `qes verify` a year on accepts it
    as B-LTA."""
    extended = tmp_path / "extended.pdf"
    done = cli("ltv", "extend", rolled.before.pdf, "--url", rolled.signer.url, "--out", extended)
    assert done.returncode == 0, done.stdout + done.stderr
    tsa = [_cert(g) for g in _generations(rolled, "tsa")]
    assert f"by {tsa[1].subject.rfc4514_string()}" in done.stdout, done.stdout
    dss = DocumentSecurityStore.read_dss(PdfFileReader(BytesIO(extended.read_bytes())))
    issuers = {x509.load_der_x509_crl(c.get_object().data).issuer for c in dss.crls}
    assert _cert(_generations(rolled, "issuing")[0]).subject in issuers
    (answer,) = [ocsp.load_der_ocsp_response(o.get_object().data) for o in dss.ocsps]
    assert answer.serial_number == tsa[0].serial_number
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    (responder,) = [c for c in answer.certificates if _ocsp_signing(c)]
    assert _issuer_key_id(responder) == _key_id(_cert(_generations(rolled, "issuing")[0]))
    later = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    verified = qes_verify(extended, "--trust", rolled.bundle_pem, "--at", later)
    assert verified.returncode == 0 and verified.stdout.startswith("VALID  "), verified.stdout
    assert "PAdES-B-LTA" in verified.stdout, verified.stdout


def _ocsp_signing(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING in usage


def _distribution(cert: x509.Certificate) -> tuple[str, str]:
    """A TSA certificate's CRL distribution point and caIssuers URLs."""
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    (crl_url,) = [n.value for p in points for n in p.full_name or ()]
    access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    (issuer_url,) = [
        d.access_location.value
        for d in access
        if d.access_method == x509.oid.AuthorityInformationAccessOID.CA_ISSUERS
    ]
    return crl_url, issuer_url


def _served(rolled: Rolled, url: str) -> str:
    """Where the test service serves what a certificate names under :data:`PKI_URL`."""
    return rolled.signer.url + "/ca" + url.removeprefix(PKI_URL)


def ocsp_status(url: str, issuer: Path, cert: Path, trust: Path) -> str:
    """What `openssl ocsp` hears from the service at ``url`` about ``cert`` (its ``issuer``
    names the CertID, RFC 6960 §4.1.1), the answer verified against ``trust`` only (the
    delegated responder's certificate and its CA come in the answer): its status and reason."""
    said = openssl_ocsp(url, issuer, cert, trust, "-no_nonce")
    lines = [line.strip() for line in said.splitlines()]
    status = lines[0].removeprefix(f"{cert}: ")
    reason = next((line for line in lines if line.startswith("Reason:")), "")
    return f"{status} {reason}".strip()


def pem_files(url: str, where: Path) -> dict[str, Path]:
    """From the trust bundle of the service at ``url``: ``root`` and every issuing CA and TSA
    generation's certificate as PEM files, ``issuing1``, ``tsa2``..."""
    bundle = json.loads(_fetch(f"{url}/api/v1/trust-bundle"))
    files = {"root": where / "root.pem"}
    files["root"].write_text(bundle["root"])
    for g in bundle["generations"]:
        name = f"{g['role']}{g['generation']}"
        files[name] = where / f"{name}.pem"
        files[name].write_text(g["certificate"])
    return files


def test_every_issuing_generation_answers_ocsp(rolled: Rolled, tmp_path: Path) -> None:
    """Runs last but one, after both switches and issuing g3's import (pending): each issuing
    CA generation's own delegated responder certificate (RFC 6960 §4.2.2.2) answers for the
    TSA certificates it issued, so `openssl ocsp` about TSA g1 (CertID by issuing g1) says
    good, and revoked once `qes ca revoke` revoked it; the root's responder says good about
    every issuing CA generation, the pending one included. Each answer is verified against
    the root alone."""
    url = rolled.signer.url
    files = pem_files(url, tmp_path)
    root, asked = files["root"], (("issuing1", "tsa1"), ("issuing2", "tsa2"))
    for issuer, cert in asked:
        assert ocsp_status(url, files[issuer], files[cert], root) == "good", cert
    for issuing in ("issuing1", "issuing2", "issuing3"):
        assert ocsp_status(url, root, files[issuing], root) == "good", issuing
    # issuing g3 (pending) answers from its first day: about TSA g2, which it did not issue
    assert ocsp_status(url, files["issuing3"], files["tsa2"], root) == "unknown"
    serial = f"{_cert(_generations(rolled, 'tsa')[0]).serial_number:x}"
    _ca(rolled.env, "revoke", serial, "--reason", "keyCompromise")
    assert (
        ocsp_status(url, files["issuing1"], files["tsa1"], root) == "revoked Reason: keyCompromise"
    )
    assert ocsp_status(url, files["issuing2"], files["tsa2"], root) == "good"
    assert ocsp_status(url, root, files["issuing1"], root) == "good"


def test_each_issuing_generation_publishes_its_own_crl(rolled: Rolled, tmp_path: Path) -> None:
    """Runs last: TSA g1 is revoked. Each TSA certificate names its own issuing CA's CRL and
    certificate (``/ca/issuing/{key_id}.crl|.cer``), served for past generations too, so TSA
    g1, certified by issuing g1, can be revoked after both switches and relying parties see
    it (`openssl crl` verifies each CRL against its own CA); unknown key ids are 404."""
    issuing = [_cert(g) for g in _generations(rolled, "issuing")]
    tsa = [_cert(g) for g in _generations(rolled, "tsa")]
    root = tmp_path / "root.pem"
    root.write_text(str(rolled.bundle["root"]))
    urls = [_distribution(t) for t in tsa]
    for ca, (crl_url, issuer_url) in zip(issuing, urls, strict=True):
        key_id = _key_id(ca).hex()
        assert crl_url == f"{PKI_URL}/issuing/{key_id}.crl"
        assert issuer_url == f"{PKI_URL}/issuing/{key_id}.cer"
        assert x509.load_der_x509_certificate(_fetch(_served(rolled, issuer_url))) == ca
    # TSA g1 was revoked by test_every_issuing_generation_answers_ocsp, or is now
    done = qes(rolled.env, "ca", "revoke", f"{tsa[0].serial_number:x}", "--reason", "superseded")
    assert done.returncode == 0 or "was revoked before" in done.stderr, done.stderr
    for number, (ca, (crl_url, _)) in enumerate(zip(issuing, urls, strict=True), 1):
        crl_file, chain = tmp_path / f"g{number}.crl", tmp_path / f"chain{number}.pem"
        crl_file.write_bytes(_fetch(_served(rolled, crl_url)))
        chain.write_bytes(ca.public_bytes(Encoding.PEM) + root.read_bytes())
        done = run(
            "openssl", "crl", "-inform", "DER", "-in", crl_file, "-CAfile", chain, "-noout"
        )  # fmt: skip
        assert done.returncode == 0 and "verify OK" in done.stderr, done.stderr
        listed = x509.load_der_x509_crl(crl_file.read_bytes())
        revoked = listed.get_revoked_certificate_by_serial_number(tsa[0].serial_number)
        assert (revoked is not None) == (number == 1), number
    for path in ("/ca/issuing/00ff.crl", "/ca/issuing/00ff.cer"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            _fetch(f"{rolled.signer.url}{path}")
        assert missing.value.code == 404
