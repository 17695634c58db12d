"""`qes ca revoke` on a running `qes serve`: the CRLs then carry the entries and the OCSP
responder says so, judged by ``openssl crl`` and ``openssl ocsp`` (issue 15 item 3).

Own database and own key labels: a revoked TSA or issuing CA must not leak into the session's
shared service, whose other tests check its CRLs as empty."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from tests.support.idp import RunningIdp
from tests.support.pg import scratch_database
from tests.support.service import (
    DEV_CONFIG,
    SignerProcess,
    free_port,
    own_ca_labels,
    qes_init,
    run_qes,
    service_env,
)
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_ocsp, run


@dataclass(frozen=True)
class Published:
    signer: SignerProcess
    files: dict[str, Path]  # root, issuing, tsa, chain (issuing + root) as PEM
    certs: dict[str, x509.Certificate]


def _hex(serial: int) -> str:
    """A serial as ``openssl crl -text`` prints it: upper-case hex of whole octets."""
    digits = f"{serial:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


def _fetch(url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")  # noqa: S310
    if content_type:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        assert resp.status == 200
        return bytes(resp.read())


@pytest.fixture(scope="module")
def published(
    softhsm_token: SoftHsmToken,
    pg_admin: str,
    idp: RunningIdp,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Published]:
    work = tmp_path_factory.mktemp("revocation")
    port = free_port()
    with scratch_database(pg_admin) as url:
        env = service_env(
            token=softhsm_token,
            database_url=url,
            idp=idp,
            port=port,
            data_dir=work,
            **own_ca_labels("rev"),
        )
        made = qes_init({**env, **softhsm_token.env()})
        assert made.returncode == 0, made.stderr
        assert "OCSP responder created" in made.stdout
        signer = SignerProcess(env, port, work / "signer.log").start()
        try:
            yield _publish(signer, work)
        finally:
            signer.stop()


def _publish(signer: SignerProcess, work: Path) -> Published:
    root = x509.load_der_x509_certificate(_fetch(f"{signer.url}/ca/root.cer"))
    issuing = x509.load_der_x509_certificate(_fetch(f"{signer.url}/ca/issuing.cer"))
    bundle = json.loads(_fetch(f"{signer.url}/api/v1/trust-bundle"))
    tsa = x509.load_pem_x509_certificate(bundle["tsa"][0].encode())
    certs = {"root": root, "issuing": issuing, "tsa": tsa}
    files = {name: work / f"{name}.pem" for name in (*certs, "chain")}
    for name, cert in certs.items():
        files[name].write_bytes(cert.public_bytes(Encoding.PEM))
    files["chain"].write_bytes(files["issuing"].read_bytes() + files["root"].read_bytes())
    return Published(signer, files, certs)


def _ocsp(p: Published, issuer: str, cert: str) -> str:
    """``openssl ocsp`` asks the service (a nonce included), verifies the response against
    the root and prints the status; fails the test unless the response verifies."""
    return openssl_ocsp(p.signer.url, p.files[issuer], p.files[cert], p.files["root"], "-resp_text")


def _crl(p: Published, ca: str, tmp: Path) -> tuple[str, x509.CertificateRevocationList]:
    """The CA's CRL from the service, checked by ``openssl crl`` against the chain."""
    der = _fetch(f"{p.signer.url}/ca/{ca}.crl")
    path = tmp / f"{ca}.crl"
    path.write_bytes(der)
    done = run(
        "openssl", "crl", "-inform", "DER", "-in", path, "-CAfile", p.files["chain"],
        "-noout", "-text",
    )  # fmt: skip
    assert done.returncode == 0 and "verify OK" in done.stderr, done.stdout + done.stderr
    return str(done.stdout), x509.load_der_x509_crl(der)


def _number(crl: x509.CertificateRevocationList) -> int:
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


async def _root_crl_ceremony(p: Published, tmp: Path, *, days: int) -> None:
    """The root's CRL through the key ceremony: what it must say (online), signed with the
    offline root token, imported (online)."""
    request, crl = tmp / "crl-request.json", tmp / "root-signed.crl"
    for args in (
        ("request", "crl", "--out", str(request)),
        ("root", "crl", str(request), "--out", str(crl), "--next-update-days", str(days)),
        ("import", str(crl)),
    ):
        code, _, err = await run_qes("ca", *args, "--config", str(DEV_CONFIG), env=p.signer.env)
        assert code == 0, err


async def _revoke(p: Published, *args: str) -> tuple[int, str, str]:
    return await run_qes("ca", "revoke", *args, "--config", str(DEV_CONFIG), env=p.signer.env)


async def test_revoking_the_tsa_and_the_issuing_ca(published: Published, tmp_path: Path) -> None:
    p = published
    tsa, issuing = p.certs["tsa"], p.certs["issuing"]
    assert "Cert Status: good" in _ocsp(p, "issuing", "tsa")
    assert "Cert Status: good" in _ocsp(p, "root", "issuing")
    before_text, before = _crl(p, "issuing", tmp_path)
    assert len(before) == 0 and "No Revoked Certificates" in before_text

    compromised = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    code, out, err = await _revoke(
        p, "tsa", "--reason", "keyCompromise", "--invalidity-date", compromised.isoformat()
    )
    assert code == 0, err
    assert out.startswith(f"revoked: tsa certificate {tsa.serial_number:x}")
    assert "ca_certificate_revoked" in err and "keyCompromise" in err  # the structured log

    text, crl = _crl(p, "issuing", tmp_path)  # at once, though the CRL cache is hourly
    entry = crl.get_revoked_certificate_by_serial_number(tsa.serial_number)
    assert entry is not None and len(crl) == 1
    assert f"Serial Number: {_hex(tsa.serial_number)}" in text
    assert "Key Compromise" in text and "Invalidity Date" in text
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    invalid = entry.extensions.get_extension_for_class(x509.InvalidityDate).value
    assert invalid.invalidity_date_utc == compromised
    assert _number(crl) > _number(before)
    assert crl.next_update_utc == crl.last_update_utc + timedelta(days=7)

    status = _ocsp(p, "issuing", "tsa")
    assert "Cert Status: revoked" in status, status
    assert "Revocation Reason: keyCompromise (0x1)" in status
    assert "Cert Status: good" in _ocsp(p, "root", "issuing")  # the issuing CA is still good

    code, _, err = await _revoke(p, "tsa", "--reason", "superseded")
    assert code == 1 and "revoked before" in err  # the first revocation stands

    # the issuing CA, named by its serial as OpenSSL prints it, goes on the root's CRL
    serial = ":".join(f"{b:02X}" for b in issuing.serial_number.to_bytes(20, "big").lstrip(b"\0"))
    code, out, err = await _revoke(p, serial, "--reason", "cessationOfOperation")
    assert code == 0 and out.startswith("revoked: issuing certificate"), err
    _, unchanged = _crl(p, "root", tmp_path)  # the root is offline: the service never signs
    assert len(unchanged) == 0  # its CRL; the key ceremony does (issue 15 item 1)
    await _root_crl_ceremony(p, tmp_path, days=30)
    text, root_crl = _crl(p, "root", tmp_path)
    assert root_crl.get_revoked_certificate_by_serial_number(issuing.serial_number) is not None
    assert "Cessation Of Operation" in text and len(root_crl) == 1
    assert _number(root_crl) > _number(unchanged)
    assert root_crl.next_update_utc == root_crl.last_update_utc + timedelta(days=30)
    status = _ocsp(p, "root", "issuing")
    assert "Cert Status: revoked" in status and "cessationOfOperation" in status


async def test_revoke_refusals(published: Published) -> None:
    for args, message in (
        (("root", "--reason", "keyCompromise"), "give a role"),
        (
            ("abc123", "--reason", "keyCompromise"),
            "the certificate of no issuing CA or TSA generation",
        ),
        (("tsa", "--reason", "certificateHold"), "reason: must be one of"),
        (("tsa", "--reason", "superseded", "--invalidity-date", "2999-01-01"), "invalidity"),
    ):
        code, _, err = await _revoke(published, *args)
        assert code == 1 and message in err, (args, err)


def test_ocsp_get_and_malformed_requests(published: Published, tmp_path: Path) -> None:
    p = published
    url = f"{p.signer.url}/ocsp"
    req = tmp_path / "req.der"
    made = run("openssl", "ocsp", "-issuer", p.files["root"], "-cert", p.files["issuing"],
               "-reqout", req)  # fmt: skip
    assert made.returncode == 0, made.stderr
    encoded = urllib.parse.quote(base64.b64encode(req.read_bytes()).decode(), safe="")
    resp = tmp_path / "resp.der"
    resp.write_bytes(_fetch(f"{url}/{encoded}"))  # RFC 6960 §A.1.1 GET
    checked = run("openssl", "ocsp", "-reqin", req, "-respin", resp, "-CAfile", p.files["root"],
                  "-resp_text")  # fmt: skip
    assert "Response verify OK" in checked.stderr, checked.stdout + checked.stderr
    assert "Cert Status:" in checked.stdout

    for answer in (
        _fetch(url, b"\x30\x03\x02\x01\x07", "application/ocsp-request"),
        _fetch(url, b"no DER at all", "application/ocsp-request"),
        _fetch(f"{url}/not%20base64!"),
        _fetch(f"{url}/{base64.b64encode(b'junk').decode()}"),
    ):
        assert ocsp.load_der_ocsp_response(answer).response_status is (
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        )
        resp.write_bytes(answer)
        shown = run("openssl", "ocsp", "-respin", resp, "-resp_text", "-noverify")
        assert "malformedrequest" in shown.stdout.lower(), shown.stdout + shown.stderr
    with pytest.raises(urllib.error.HTTPError) as refused:
        _fetch(url, req.read_bytes(), "application/octet-stream")
    assert refused.value.code == 415


async def test_a_stored_revocation_is_final(published: Published) -> None:
    """Migration 0018: no row of ca_revocations can be changed or deleted (no un-revoking)."""
    conn = await asyncpg.connect(published.signer.env["QES_DATABASE_URL"])
    try:
        assert await conn.fetchval("SELECT count(*) FROM ca_revocations") == 2
        for sql in (
            "UPDATE ca_revocations SET reason = 'superseded'",
            "DELETE FROM ca_revocations",
        ):
            with pytest.raises(asyncpg.RaiseError, match="final"):
                await conn.execute(sql)
    finally:
        await conn.close()
