"""CSC API against real `qes serve` processes (issue 6): an unmodified pyHanko ``CSCSigner``
signs a PDF (PAdES B-T with the service's TSA, validated by the pyHanko CLI now and a year
later), and one credential's steps go to two different replicas on one database and token."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.signers.csc_signer import (
    CSCServiceSessionInfo,
    CSCSigner,
    fetch_certs_in_csc_credential,
)
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko_certvalidator import ValidationContext

from signer.keys.credential import CREDENTIAL_PREFIX
from tests.support.csc import HashBoundAuthorization, new_credential
from tests.support.idp import RunningIdp
from tests.support.pdfs import multi_page_pdf
from tests.support.service import SignerProcess, free_port, service_env
from tests.support.softhsm import SoftHsmToken
from tests.support.verify import openssl_verify_chain, openssl_verify_signature, run

PYHANKO = str(Path(sys.executable).parent / "pyhanko")
SIGNATURE_TIME_STAMP = "1.2.840.113549.1.9.16.2.14"


@pytest.fixture(scope="module")
def replicas(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SignerProcess, SignerProcess]]:
    work = tmp_path_factory.mktemp("csc-replicas")
    ports = free_port(), free_port()
    envs = [
        service_env(
            token=softhsm_token, database_url=database_url, idp=idp, port=port, data_dir=work
        )
        for port in ports
    ]
    a = SignerProcess(envs[0], ports[0], work / "a.log").start()
    try:
        b = SignerProcess(envs[1], ports[1], work / "b.log").start()
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()
    leftover = [o for o in softhsm_token.list_objects() if o.label.startswith(CREDENTIAL_PREFIX)]
    assert leftover == [], f"CSC credential keys left after the replicas stopped: {leftover}"


@pytest.mark.parametrize("api_ver", ["v1", "v2"])
async def test_pyhanko_csc_signer_signs_a_pdf_b_t(
    replicas: tuple[SignerProcess, SignerProcess],
    batch_token: str,
    tmp_path: Path,
    api_ver: str,
) -> None:
    a, _ = replicas
    async with aiohttp.ClientSession() as http:
        credential_id = await new_credential(http, a.url, batch_token)
        session = CSCServiceSessionInfo(
            service_url=a.url, credential_id=credential_id, oauth_token=batch_token,
            api_ver=api_ver,
        )  # fmt: skip
        credential = await fetch_certs_in_csc_credential(http, session)
        assert credential.hash_pinning_required  # SCAL 2
        auth = HashBoundAuthorization(http, session, credential)
        signer = CSCSigner(http, auth_manager=auth)
        pdf_signer = signers.PdfSigner(
            signers.PdfSignatureMetadata(
                field_name="Signature1",
                subfilter=fields.SigSeedSubFilter.PADES,
                md_algorithm="sha256",
            ),
            signer=signer,
            timestamper=HTTPTimeStamper(f"{a.url}/tsa"),
        )
        writer = IncrementalPdfFileWriter(BytesIO(multi_page_pdf(2)))
        out = await pdf_signer.async_sign_pdf(writer)
    (request,) = auth.requests
    assert request["numSignatures"] == 1 and len(request["hash"]) == 1  # bound to the hash

    signed = tmp_path / "signed.pdf"
    signed.write_bytes(out.getvalue())
    # The relying party's trust bundle: the root, and the issuing CA (the /tsa token carries
    # only the TSA certificate, RFC 3161 §2.4.1 certReq).
    root, issuing = tmp_path / "root.pem", tmp_path / "issuing.pem"
    root.write_bytes(_pem(credential.chain[-1].dump()))
    issuing.write_bytes(_pem(credential.chain[0].dump()))
    (embedded,) = PdfFileReader(BytesIO(signed.read_bytes())).embedded_signatures
    assert embedded.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    unsigned = [attr["type"].dotted for attr in embedded.signer_info["unsigned_attrs"]]
    assert unsigned == [SIGNATURE_TIME_STAMP]  # B-T: the service's TSA stamped the signature

    later = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for command in (
        [PYHANKO, "sign", "validate", "--trust", root, "--trust-replace",
         "--other-certs", issuing, "--no-revocation-check", "--executive-summary"],
        # a year later the 10-minute certificate is long expired: only the
        # signature-time-stamp (B-T) makes this pass
        [PYHANKO, "sign", "adesverify", "--trust", root, "--trust-replace",
         "--other-certs", issuing, "--no-revocation-check", "--validation-time", later,
         "--executive-summary"],
    ):  # fmt: skip
        done = run(*command, signed)
        assert done.returncode == 0 and done.stdout.strip().endswith(":VALID"), (
            done.stdout + done.stderr
        )
    data = signed.read_bytes()
    at = data.index(b"(Page 2 of 2)")
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(data[: at + 6] + b"1" + data[at + 7 :])
    rejected = run(PYHANKO, "sign", "validate", "--trust", root, "--trust-replace",
                   "--other-certs", issuing, "--no-revocation-check", "--executive-summary",
                   tampered)  # fmt: skip
    assert rejected.returncode != 0


async def _get(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as resp:
        assert resp.status == 200, url
        return await resp.read()


async def test_pyhanko_csc_signer_makes_b_lta_from_the_published_validation_data(
    replicas: tuple[SignerProcess, SignerProcess], batch_token: str, tmp_path: Path
) -> None:
    """Issue 15 item 4, the CSC path: pyHanko's own B-LTA (``embed_validation_info`` and
    ``use_pades_lta``) through ``CSCSigner``, with the validation data this service publishes
    (the root's CRL, the CRL of the issuing CA generation that certified the TSA, named by the
    TSA certificate's key identifier) and its ``/tsa``: `pyhanko sign adesverify` with
    revocation checking accepts it from the PDF alone (no CRL URL is reachable to it)."""
    a, _ = replicas
    async with aiohttp.ClientSession() as http:
        credential_id = await new_credential(http, a.url, batch_token)
        session = CSCServiceSessionInfo(
            service_url=a.url, credential_id=credential_id, oauth_token=batch_token
        )
        credential = await fetch_certs_in_csc_credential(http, session)
        bundle = json.loads(await _get(http, f"{a.url}/api/v1/trust-bundle"))
        tsa = asn1_x509.Certificate.load(
            x509.load_pem_x509_certificate(bundle["tsa"][0].encode()).public_bytes(Encoding.DER)
        )
        issuer_key_id = tsa.authority_key_identifier.hex()
        crls = [
            await _get(http, f"{a.url}/ca/root.crl"),
            await _get(http, f"{a.url}/ca/issuing/{issuer_key_id}.crl"),
        ]
        context = ValidationContext(
            trust_roots=[credential.chain[-1]], other_certs=[credential.chain[0], tsa],
            crls=crls, allow_fetching=False,
        )  # fmt: skip
        pdf_signer = signers.PdfSigner(
            signers.PdfSignatureMetadata(
                field_name="Signature1", subfilter=fields.SigSeedSubFilter.PADES,
                md_algorithm="sha256", embed_validation_info=True, use_pades_lta=True,
                validation_context=context,
            ),
            signer=CSCSigner(http, auth_manager=HashBoundAuthorization(http, session, credential)),
            timestamper=HTTPTimeStamper(f"{a.url}/tsa"),
        )  # fmt: skip
        out = await pdf_signer.async_sign_pdf(IncrementalPdfFileWriter(BytesIO(multi_page_pdf(1))))
    signed, root = tmp_path / "b-lta.pdf", tmp_path / "root.pem"
    signed.write_bytes(out.getvalue())
    root.write_bytes(_pem(credential.chain[-1].dump()))
    reader = PdfFileReader(BytesIO(signed.read_bytes()))
    assert "/DSS" in reader.root and len(reader.embedded_timestamp_signatures) == 1
    done = run(
        PYHANKO, "sign", "adesverify", "--trust", root, "--trust-replace",
        "--executive-summary", signed,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith(":VALID"), (
        done.stdout + done.stderr
    )


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


def sign_hash_body(credential_id: str, sad: str, digest: bytes) -> dict[str, Any]:
    """A CSC v1 signHash body: one SHA-256 digest, ECDSA with SHA-256."""
    return {
        "credentialID": credential_id,
        "SAD": sad,
        "hashAlgo": "2.16.840.1.101.3.4.2.1",
        "signAlgo": "1.2.840.10045.4.3.2",
        "hash": [base64.b64encode(digest).decode()],
    }


async def test_each_step_on_another_replica(
    replicas: tuple[SignerProcess, SignerProcess],
    batch_token: str,
    softhsm_token: SoftHsmToken,
    tmp_path: Path,
) -> None:
    """credentials/list and info on A make the key; authorize on B; signHash on A signs with
    the token object A made and B authorized, and destroys it for both."""
    a, b = replicas
    headers = {"Authorization": f"Bearer {batch_token}"}
    content = b"signed across replicas"
    digest = hashlib.sha256(content).digest()
    async with aiohttp.ClientSession() as http:
        credential_id = await new_credential(http, a.url, batch_token)
        async with http.post(
            f"{b.url}/csc/v2/credentials/info",
            json={"credentialID": credential_id, "certificates": "chain"},
            headers=headers,
        ) as resp:
            info = await resp.json()
            assert resp.status == 200, info
        async with http.post(
            f"{b.url}/csc/v1/credentials/authorize",
            json={
                "credentialID": credential_id,
                "numSignatures": 1,
                "hash": [base64.b64encode(digest).decode()],
            },
            headers=headers,
        ) as resp:
            authorized = await resp.json()
            assert resp.status == 200, authorized
        async with http.post(
            f"{a.url}/csc/v1/signatures/signHash",
            json=sign_hash_body(credential_id, authorized["SAD"], digest),
            headers=headers,
        ) as resp:
            signed = await resp.json()
            assert resp.status == 200, signed
        # the same SAD on the other replica: already used
        async with http.post(
            f"{b.url}/csc/v1/signatures/signHash",
            json=sign_hash_body(credential_id, authorized["SAD"], digest),
            headers=headers,
        ) as resp:
            again = await resp.json()
            assert resp.status == 400 and again["error"] == "invalid_request", again

    leaf, issuing, root = (
        x509.load_der_x509_certificate(base64.b64decode(c)) for c in info["cert"]["certificates"]
    )
    signature = base64.b64decode(signed["signatures"][0])
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, content, ec.ECDSA(hashes.SHA256()))  # cryptography
    paths = {}
    for name, cert in (("leaf", leaf), ("issuing", issuing), ("root", root)):
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(Encoding.PEM))
    openssl_verify_chain(paths["root"], paths["issuing"], paths["leaf"])
    doc, sig = tmp_path / "doc", tmp_path / "doc.sig"
    doc.write_bytes(content)
    sig.write_bytes(signature)
    verified = openssl_verify_signature(paths["leaf"], sig, doc, "sha256")
    assert verified.returncode == 0 and "Verified OK" in verified.stdout, verified.stderr
    labels = [o.label for o in softhsm_token.list_objects()]
    assert not any(credential_id in label for label in labels)
