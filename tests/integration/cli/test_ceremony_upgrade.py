"""Issue 15 gap: a CA made before the offline root, upgraded as README "Key ceremony" says
("A CA made before the offline root").

**The old state.** Before the ``[offline]`` token existed, `qes init` made the root key in the
service's own token (under ``ca.root_label``), signed the issuing CA, the root's OCSP responder
certificate and, on request, the root's CRL with it online; the database held the root, issuing,
TSA and responder certificates and their generations, and no root CRL (``ca_root_crls`` came
with migration 0025, so an upgraded database has it empty). The tests cannot run that old code
(no version history at test time), so they make the same state with today's commands: the
ceremony's steps with ``[offline]`` naming the online token itself (the root key lands there,
as it did), every step but the CRL's, then `qes init` without the root PIN (TSA, the issuing
CA's responder, log key), as the upgraded service's first `qes init` would. Nothing is deleted
afterwards, so the log and the database stay consistent; what differs from an old CA are the
``ca-ceremony`` entries of those steps, which the upgrade path never reads.

**The upgrade**, command by command as the README gives it: first `/ca/root.crl` and B-LT
signing answer 503 ``root-crl-missing``; the CRL steps with ``[offline]`` naming the online
token make both work (OpenSSL verifies the CRL); `qes init --force` with ``[offline]`` naming a
token of its own replaces the root (a new CA); `qes ca retire-root` destroys the old root key
the online token still held (a ``key-destroy`` step of the transcript, logged): afterwards the
online token holds no root key at all. What was signed before still verifies (`qes verify`
against the trust bundle, whose history keeps the old root, and OpenSSL against the old root),
the replaced issuing CA still signs a valid CRL for the TSA certificates it certified (before,
`qes init --force` replaced its key under the same label and that CRL answered 500),
new signatures chain to the new root, and `qes audit verify` rebuilds every entry."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.integration.api.test_policy_web_signing import qes
from tests.integration.cli.test_ceremony import _openssl_ok, _qes, _sign_b_lt
from tests.integration.tsa.test_revocation import _fetch
from tests.support.idp import RunningIdp
from tests.support.pg import scratch_database
from tests.support.service import SignerProcess, free_port, own_ca_labels, service_env
from tests.support.service import qes as qes_plain
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import run

DOCUMENT = b"signed before the upgrade\n" * 40


def _offline(env: dict[str, str], token: SoftHsmToken, **extra: str) -> dict[str, str]:
    """``env`` with ``[offline]`` naming ``token`` (its label and PIN)."""
    return {**env, "QES_ROOT_PIN": token.pin, "QES__OFFLINE__TOKEN_LABEL": token.label, **extra}


def _old_ca(online: dict[str, str], token: SoftHsmToken, carry: Path) -> None:
    """What a version before the offline root left (module docstring): the root key in the
    online token, the certificates stored, no root CRL."""
    old = _offline(online, token)
    _qes(old, "ca", "root", "create", carry=carry)
    root_pem = Path(online["QES__DATA_DIR"].strip('"')) / "ceremony" / "root.pem"
    _qes(online, "ca", "import", str(root_pem), carry=carry)
    for role in ("issuing", "ocsp-root"):
        csr, cert = carry / f"{role}.csr", carry / f"{role}.pem"
        _qes(online, "ca", "request", role, "--out", str(csr), carry=carry)
        _qes(old, "ca", "root", "sign", str(csr), "--role", role, "--out", str(cert), carry=carry)
        _qes(online, "ca", "import", str(cert), carry=carry)
    init = qes(online, "init")
    assert init.returncode == 0, init.stderr
    assert "waiting for the offline root (key ceremony): root CRL" in init.stdout, init.stdout
    assert f"the online HSM holds the root key {online['QES__CA__ROOT_LABEL']}" in init.stdout
    root_pem.unlink()  # an old CA had no ceremony files
    assert {o.label for o in token.list_objects()} >= {online["QES__CA__ROOT_LABEL"]}


def _problem(url: str) -> dict[str, Any]:
    try:
        urllib.request.urlopen(url, timeout=60)  # noqa: S310
    except urllib.error.HTTPError as exc:
        assert exc.code == 503, exc.code
        assert exc.headers["Content-Type"].startswith("application/problem+json")
        return dict(json.loads(exc.read()))
    raise AssertionError(f"{url}: answered 2xx")


def _root_crl_missing(signer: SignerProcess, idp: RunningIdp) -> None:
    """Both places that need the root's CRL refuse with the same problem."""
    for problem in (
        _problem(f"{signer.url}/ca/root.crl"),
        _problem_signing(signer, idp),
    ):
        assert problem["type"].endswith("/problems/root-crl-missing"), problem
        assert problem["status"] == 503


def _problem_signing(signer: SignerProcess, idp: RunningIdp) -> dict[str, Any]:
    try:
        _sign_b_lt(signer, idp)
    except urllib.error.HTTPError as exc:
        assert exc.code == 503, exc.code
        return dict(json.loads(exc.read()))
    raise AssertionError("B-LT signing worked without a root CRL")


def _crl_steps(
    online: dict[str, str], token: SoftHsmToken, signer: SignerProcess, work: Path
) -> None:
    """README: the CRL steps once, ``[offline]`` naming the online token and
    ``root_certificate`` the PEM of ``/ca/root.cer``."""
    (work / "root.cer").write_bytes(_fetch(f"{signer.url}/ca/root.cer"))
    _openssl_ok("x509", "-inform", "DER", "-in", work / "root.cer", "-out", work / "root.pem")
    forgot = qes(_offline(online, token), "ca", "root", "crl", str(work / "crl.json"),
                 "--out", str(work / "root.crl"))  # fmt: skip
    assert forgot.returncode == 1 and "/ca/root.cer" in forgot.stderr, forgot.stderr
    assert len(forgot.stderr.strip().splitlines()) == 1, forgot.stderr
    old = _offline(online, token, QES__OFFLINE__ROOT_CERTIFICATE=f'"{work / "root.pem"}"')
    _qes(online, "ca", "request", "crl", "--out", str(work / "crl.json"), carry=work)
    _qes(old, "ca", "root", "crl", str(work / "crl.json"), "--out", str(work / "root.crl"),
         "--next-update-days", "90", carry=work)  # fmt: skip
    _qes(online, "ca", "import", str(work / "root.crl"), carry=work)
    logged = qes(online, "ca", "transcript", "import", str(work / "t.jsonl"))
    assert logged.returncode == 0, logged.stderr


def _served_crl_verifies(signer: SignerProcess, work: Path) -> None:
    served = _fetch(f"{signer.url}/ca/root.crl")
    assert served == (work / "root.crl").read_bytes()
    text = _openssl_ok("crl", "-inform", "DER", "-in", work / "root.crl", "-CAfile",
                       work / "root.pem", "-noout", "-verify")  # fmt: skip
    assert "verify OK" in text


def _signed(signer: SignerProcess, idp: RunningIdp, work: Path, name: str) -> Path:
    """A CAdES B-LT of :data:`DOCUMENT`, its signer's chain beside it (``NAME.chain.pem``)."""
    payload = _sign_b_lt(signer, idp, hashlib.sha256(DOCUMENT).digest())
    (work / f"{name}.p7s").write_bytes(base64.b64decode(payload["signatures"][0]))
    (work / f"{name}.chain.pem").write_text(payload["certificate"] + payload["chain"])
    return work / f"{name}.p7s"


def _verifies(signature: Path, root: Path, bundle: Path) -> None:
    """`qes verify` against the trust bundle, and OpenSSL against ``root`` alone."""
    document = signature.with_suffix(".bin")
    document.write_bytes(DOCUMENT)
    done = qes_plain("verify", document, signature, "--trust", bundle)
    assert done.returncode == 0, done.stdout + done.stderr
    checked = run("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", signature,
                  "-content", document, "-CAfile", root, "-purpose", "any",
                  "-out", "/dev/null")  # fmt: skip
    assert checked.returncode == 0 and "Verification successful" in checked.stderr, checked.stderr


def _bundle(signer: SignerProcess) -> bytes:
    """The trust bundle as relying parties take it: every root, issuing CA and TSA, past too."""
    accept = {"Accept": "application/pem-certificate-chain"}
    request = urllib.request.Request(f"{signer.url}/api/v1/trust-bundle", headers=accept)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
        return bytes(resp.read())


def _replace_and_retire(
    online: dict[str, str], token: SoftHsmToken, root_label: str, work: Path
) -> None:
    """README: the root replaced through a ceremony on a token of its own (`qes init --force`
    with ``[offline]`` naming it), then the old root key destroyed in the online token (`qes ca
    retire-root`): refused while it is the current root's; afterwards no root key is online."""
    ceremony = ("--actor", "ceremony-olga", "--transcript", str(work / "t.jsonl"))
    early = qes(online, "ca", "retire-root", *ceremony)
    assert early.returncode == 1 and "the current root's key" in early.stderr, early.stderr
    assert len(early.stderr.strip().splitlines()) == 1, early.stderr
    new = SoftHsmToken.create(token.directory, "upgrade-root")
    forced = qes(_offline(online, new), "init", "--force")
    assert forced.returncode == 0 and "CA created" in forced.stdout, forced.stderr
    assert "the online HSM holds the root key" not in forced.stdout, forced.stdout
    retired = qes(online, "ca", "retire-root", *ceremony)
    assert retired.returncode == 0 and "destroyed" in retired.stdout, retired.stderr
    again = qes(online, "ca", "retire-root", *ceremony)
    assert again.returncode == 1 and "no root key" in again.stderr, again.stderr
    assert root_label not in {o.label for o in token.list_objects()}
    assert [o.label for o in new.list_objects()] == [root_label] * 2
    steps = [json.loads(line)["step"] for line in (work / "t.jsonl").read_text().splitlines()]
    assert steps[-1] == "key-destroy"


def _old_issuing_crl_verifies(signer: SignerProcess, chain: Path, work: Path) -> None:
    """The replaced issuing CA still signs its CRL, the CRL distribution point of the TSA
    certificates it certified (README "Rollover"): its key stayed in the HSM."""
    *_, issuing, _root = x509.load_pem_x509_certificates(chain.read_bytes())
    key_id = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    (work / "old-issuing.pem").write_bytes(issuing.public_bytes(Encoding.PEM))
    (work / "old-issuing.crl").write_bytes(_fetch(f"{signer.url}/ca/issuing/{key_id.hex()}.crl"))
    text = _openssl_ok("crl", "-inform", "DER", "-in", work / "old-issuing.crl", "-CAfile",
                       work / "old-issuing.pem", "-noout", "-verify")  # fmt: skip
    assert "verify OK" in text


def _leaf_root(chain: Path) -> x509.Certificate:
    *_, root = x509.load_pem_x509_certificates(chain.read_bytes())
    return root


def test_a_ca_made_before_the_offline_root(pg_admin: str, idp: RunningIdp, tmp_path: Path) -> None:
    token = SoftHsmToken.create(tmp_path / "hsm", "upgrade-online")
    work = tmp_path / "carry"
    work.mkdir()
    with scratch_database(pg_admin) as url:
        labels = own_ca_labels("upg")
        port = free_port()
        online = service_env(token=token, database_url=url, idp=idp, port=port,
                             data_dir=tmp_path / "online", **labels)  # fmt: skip
        online["SOFTHSM2_CONF"] = str(token.conf)
        _old_ca(online, token, work)
        signer = SignerProcess(online, port, tmp_path / "signer.log").start()
        try:
            _root_crl_missing(signer, idp)
            assert '"event": "root_key_online"' in signer.log.read_text()  # said at start
            _crl_steps(online, token, signer, work)
            _served_crl_verifies(signer, work)
            before = _signed(signer, idp, work, "before")
        finally:
            signer.stop()
        _replace_and_retire(online, token, labels["QES__CA__ROOT_LABEL"], work)
        signer = SignerProcess(online, port, tmp_path / "signer2.log").start()
        try:
            after = _signed(signer, idp, work, "after")
            bundle = work / "bundle.pem"
            bundle.write_bytes(_bundle(signer))
            _old_issuing_crl_verifies(signer, work / "before.chain.pem", work)
            assert "root_key_online" not in signer.log.read_text()  # retired
        finally:
            signer.stop()
        old_root, new_root = (_leaf_root(p.with_suffix(".chain.pem")) for p in (before, after))
        assert old_root == x509.load_pem_x509_certificate((work / "root.pem").read_bytes())
        written = Path(online["QES__DATA_DIR"].strip('"')) / "ceremony" / "root.pem"
        assert new_root == x509.load_pem_x509_certificate(written.read_bytes()) != old_root
        _verifies(before, work / "root.pem", bundle)
        (work / "new-root.pem").write_bytes(new_root.public_bytes(Encoding.PEM))
        _verifies(after, work / "new-root.pem", bundle)
        assert asyncio.run(_logged(url, "key-destroy")) == 1
        audited = qes(online, "audit", "verify", "-q")
        assert audited.returncode == 0, audited.stderr


async def _logged(url: str, step: str) -> int:
    """How many ``ca-ceremony`` admin acts of the log record ``step``."""
    conn = await asyncpg.connect(url)
    try:
        query = "SELECT count(*) FROM admin_actions WHERE action='ca-ceremony' AND detail LIKE $1"
        return int(await conn.fetchval(query, f"{step} #%"))
    finally:
        await conn.close()
