"""Ten years ahead: a PAdES B-LTA signature kept alive by archive time-stamps, judged by pyHanko.

The signature is made at ``T0``, more than ten years before the real clock (pyHanko will not
validate at a time after its own clock). Its time-stamp unit's certificate lives three years,
so every two and a half years the archive is extended as ``qes ltv extend`` does it
(EN 319 142-1 §5.4.3, EN 319 102-1 §5.6.3): the validation data of the newest time-stamp goes
into the DSS (that TSA's certificate, an OCSP answer about it from the issuing CA's delegated
responder with the responder certificate, the CA certificates, the root's and the issuing
CA's CRLs), and a successor TSA, its certificate issued at that moment, adds a document
time-stamp over everything. The root and issuing CA outlive the ten years (``qes init`` gives
the root 20 years; an expired issuing CA is a failure past validation does not repair).

pyHanko 0.38's AdES LTA validation (``ades_lta_validation``, what ``pyhanko sign adesverify``
runs; revocation data required for every certificate that has any) is called directly, with
CRLs fresh at the validation time as known CRLs: what a verifier fetches then from the CRL
distribution points (``adesverify`` does not fetch when given a validation time). Checked, ten
years on:

- the newest document time-stamp at the validation time: its TSA certificate still valid, it
  and the issuing CA unrevoked by the fresh CRLs;
- every older document time-stamp by past validation (§5.6.2.4): its TSA certificate has
  expired, the next time-stamp proves the token and the OCSP answer (made before the expiry)
  existed, and the answer says ``good``. pyHanko needs the OCSP answer: a CRL issued by the TSA
  certificate's own issuing CA is never found for that step (pyHanko builds the CRL issuer's
  path on a path that starts at that CA and finds no issuer for it);
- so the oldest archive time-stamp becomes the signature's proof of existence.

Not reached: the signature's own verdict. pyHanko's time-sliding ignores the 10-minute leaf's
noRevAvail: the issuing CA's newest CRL covers the leaf by scope and moves its control time
years past the leaf's end, so the result is INDETERMINATE OUT_OF_BOUNDS_NO_POE (the archive
test asserts it as what pyHanko 0.38 says, so a pyHanko that judges it VALID is noticed there).
A conventional two-year signing certificate with a CRL distribution point, in the same archive,
gets the same verdict (the issuing CA's newest CRL, which the verifier needs for the newest TSA,
is years past that leaf's end too): the limit is pyHanko's, not the short-term profile's.
``qes verify --at`` follows the archive chain and accepts the signature (each older TSA judged
at the next time-stamp's genTime).
Not checked at all: qualification (no trusted list).

The same signature at B-T, with no DSS and no document time-stamp, fails at the same moment
with pyHanko's reason named.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import BytesIO

import pytest
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.ocsp import OCSPRequestBuilder
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import DEFAULT_DIFF_POLICY
from pyhanko.sign.validation.ades import ades_lta_validation
from pyhanko.sign.validation.policy_decl import (
    LocalKnowledge,
    PdfSignatureValidationSpec,
    SignatureValidationSpec,
)
from pyhanko_certvalidator.authority import CertTrustAnchor
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.ltv.types import ValidationTimingInfo
from pyhanko_certvalidator.policy_decl import (
    REQUIRE_REVINFO,
    CertRevTrustPolicy,
    FreshnessReqType,
)
from pyhanko_certvalidator.registry import SimpleTrustManager
from pyhanko_certvalidator.revinfo.archival import CRLContainer

from ca.authority import build_crl
from ca.ocsp import IssuerStatus, build_responder_certificate, respond
from signer.formats.ltv import (
    ValidationData,
    add_validation_data,
    embed_document_time_stamp,
    prepare_document_time_stamp,
)
from signer.formats.verify import TrustBundle, load_trust_bundle, verify_pades
from tests.support.pki import ISSUING_CRL_URL, NAMES, Clock, Pki, make_pki, pem, signed_pdf

T0 = datetime(2016, 3, 1, 12, 0, tzinfo=UTC)
AT = T0 + timedelta(days=3653)  # ten years on: 2026-03-01, before the real clock
EVERY = timedelta(days=913)  # two and a half years: before a 3-year TSA certificate ends
CA_LIFETIME = timedelta(days=20 * 365 + 5)


@dataclass(frozen=True)
class Tsa:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki(T0, root_lifetime=CA_LIFETIME, issuing_lifetime=CA_LIFETIME)


def _stamp(pki: Pki, tsa: Tsa, when: datetime, digest: bytes) -> bytes:
    authority = pki.tsa(certificate=tsa.certificate, clock=Clock(when))
    return authority.timestamp_digest(digest, "sha256", tsa.key)


def _crls(pki: Pki, when: datetime) -> tuple[bytes, ...]:
    """The root's CRL (covering the issuing CA) and the issuing CA's (covering every TSA)."""
    return tuple(
        build_crl(key, issuer, when, timedelta(days=7)).public_bytes(Encoding.DER)
        for key, issuer in ((pki.root_key, pki.chain.root), (pki.issuing_key, pki.chain.issuing))
    )


def _ocsp(pki: Pki, tsa: Tsa, when: datetime) -> tuple[x509.Certificate, bytes]:
    """The issuing CA's delegated OCSP responder certificate (90 days, nocheck) and its
    ``good`` answer about ``tsa``, as the service's ``/ocsp`` gives them (:mod:`ca.ocsp`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    responder = build_responder_certificate(
        pki.issuing_key, pki.chain.issuing, key.public_key(), NAMES, "Example OCSP Responder",
        now=when - timedelta(minutes=5), lifetime=timedelta(days=90),
    )  # fmt: skip
    request = (
        OCSPRequestBuilder()
        .add_certificate(tsa.certificate, pki.chain.issuing, hashes.SHA256())
        .build()
        .public_bytes(Encoding.DER)
    )
    status = IssuerStatus(pki.chain.issuing, responder, {tsa.certificate.serial_number: None})
    return responder, respond(request, [status], key, when, timedelta(days=7))


def _archive_step(pki: Pki, pdf: bytes, newest: Tsa, stamping: Tsa, when: datetime) -> bytes:
    """The validation data of the newest time-stamp (by ``newest``: its certificate, an OCSP
    answer about it, the CA certificates and CRLs) into the DSS, then a document time-stamp
    by ``stamping`` over it: one ``qes ltv extend``."""
    responder, answer = _ocsp(pki, newest, when)
    data = ValidationData(
        (pki.chain.issuing, pki.chain.root, newest.certificate, responder),
        _crls(pki, when),
        (answer,),
    )
    prepared = prepare_document_time_stamp(add_validation_data(pdf, data))
    return embed_document_time_stamp(prepared, _stamp(pki, stamping, when, prepared.digest))


def _b_t(pki: Pki, first: Tsa) -> bytes:
    return signed_pdf(pki, T0, (first.key, first.certificate))


@dataclass(frozen=True)
class Archive:
    b_t: bytes
    extended: bytes  # B-LTA at T0, then three archive time-stamps by successor TSAs
    last_tsa: Tsa


def _extend(pki: Pki, b_t: bytes) -> tuple[bytes, Tsa]:
    """``b_t`` made B-LTA a minute after ``T0``, then extended by three successor TSAs every
    :data:`EVERY`: the PDF and the newest TSA."""
    first = Tsa(pki.tsa_key, pki.tsa_certificate)
    pdf = _archive_step(pki, b_t, first, first, T0 + timedelta(minutes=1))
    newest = first
    for number in (2, 3, 4):
        when = T0 + (number - 1) * EVERY
        assert when < newest.certificate.not_valid_after_utc
        successor = Tsa(*pki.successor_tsa(number, when - timedelta(minutes=5)))
        pdf = _archive_step(pki, pdf, newest, successor, when)
        newest = successor
    assert newest.certificate.not_valid_after_utc > AT
    return pdf, newest


@pytest.fixture(scope="module")
def archive(pki: Pki) -> Archive:
    b_t = _b_t(pki, Tsa(pki.tsa_key, pki.tsa_certificate))
    return Archive(b_t, *_extend(pki, b_t))


@dataclass(frozen=True)
class Verdict:
    valid: bool
    indication: str
    message: str
    #: genTime of the oldest document time-stamp pyHanko validated as the evidence record.
    evidence_from: datetime | None


def ades_lta(pdf: bytes, pki: Pki, at: datetime, crls: tuple[bytes, ...] = ()) -> Verdict:
    """pyHanko's AdES LTA validation (EN 319 102-1 §5.6.3) of the PDF's one signature at
    ``at``, trusting the root, revocation data required (as ``pyhanko sign adesverify``), the
    DSS read by pyHanko itself, and ``crls`` known besides: what a verifier fetches at ``at``."""
    root = asn1_x509.Certificate.load(pki.chain.root.public_bytes(Encoding.DER))
    policy = CertValidationPolicySpec(
        trust_manager=SimpleTrustManager.build(trust_roots=[CertTrustAnchor(root)]),
        revinfo_policy=CertRevTrustPolicy(
            REQUIRE_REVINFO,
            freshness=None,
            freshness_req_type=FreshnessReqType.MAX_DIFF_REVOCATION_VALIDATION,
        ),
    )
    knowledge = LocalKnowledge(
        known_crls=[CRLContainer(asn1_crl.CertificateList.load(der)) for der in crls]
    )
    spec = PdfSignatureValidationSpec(
        SignatureValidationSpec(cert_validation_policy=policy, local_knowledge=knowledge),
        diff_policy=DEFAULT_DIFF_POLICY,
    )
    (signature,) = PdfFileReader(BytesIO(pdf)).embedded_regular_signatures
    timing = ValidationTimingInfo(at, at, point_in_time_validation=True)
    result = asyncio.run(ades_lta_validation(signature, spec, timing_info=timing))
    valid = result.api_status is not None and result.api_status.bottom_line
    return Verdict(
        valid,
        str(result.ades_subindic),
        str(result.failure_msg),
        result.oldest_evidence_record_timestamp,
    )


def test_pyhanko_validates_the_archive_time_stamp_chain_ten_years_later(
    pki: Pki, archive: Archive
) -> None:
    """pyHanko's evidence-record step (EN 319 102-1 §5.6.3: the document time-stamps, newest
    first at the validation time, each older one by past validation with the next as proof of
    existence) accepts the whole chain: its oldest time-stamp, the first B-LTA one, is the
    signature's proof of existence. The same signature at B-T has none."""
    fresh = _crls(pki, AT - timedelta(hours=1))
    verdict = ades_lta(archive.extended, pki, AT, fresh)
    assert verdict.evidence_from == T0 + timedelta(minutes=1), verdict
    assert ades_lta(archive.b_t, pki, AT, fresh).evidence_from is None
    # what is left is pyHanko's judgement of the short-term leaf (module docstring)
    assert verdict.indication == "AdESIndeterminate.OUT_OF_BOUNDS_NO_POE", verdict


def _conventional_signer(pki: Pki) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A signing certificate as most CAs issue one: two years, a CRL distribution point (the
    issuing CA's CRL, which the archive embeds), no noRevAvail."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuing = pki.chain.issuing
    start = T0 - timedelta(days=1)
    point = x509.DistributionPoint(
        [x509.UniformResourceIdentifier(ISSUING_CRL_URL)], None, None, None
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Conventional Signer")]))
        .issuer_name(issuing.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=730))
        .add_extension(_SIGNING_USAGE, critical=True)
        .add_extension(x509.CRLDistributionPoints([point]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(pki.issuing_key.public_key()),
            critical=False,
        )
        .sign(pki.issuing_key, hashes.SHA256())
    )
    return key, cert


_SIGNING_USAGE = x509.KeyUsage(True, True, False, False, False, False, False, False, False)


def test_pyhanko_judges_a_conventional_leaf_the_same_ten_years_later(pki: Pki) -> None:
    """The verdict on the signature is pyHanko's time-sliding, not our short-term profile: a
    conventional two-year signing certificate with a CRL distribution point, in the same
    archive, ends the same way. The CRLs the archive (and the verifier, for the newest TSA)
    holds are the issuing CA's newest, issued years after that leaf expired; pyHanko's
    time-slide takes the newest as the leaf's control time and re-validates the path there
    (``pyhanko_certvalidator.ltv.ades_past.past_validate``). Should a later pyHanko judge
    either VALID, this test and the one above say so."""
    first = Tsa(pki.tsa_key, pki.tsa_certificate)
    b_t = signed_pdf(pki, T0, (first.key, first.certificate), signer=_conventional_signer(pki))
    extended, _ = _extend(pki, b_t)
    verdict = ades_lta(extended, pki, AT, _crls(pki, AT - timedelta(hours=1)))
    assert verdict.evidence_from == T0 + timedelta(minutes=1), verdict
    assert verdict.indication == "AdESIndeterminate.OUT_OF_BOUNDS_NO_POE", verdict


def test_b_t_fails_ten_years_later_with_the_reason_named(pki: Pki, archive: Archive) -> None:
    """Nothing in a B-T PDF proves the signature-time-stamp existed while its TSA certificate
    (expired seven years before) was valid: no proof of existence, no path."""
    verdict = ades_lta(archive.b_t, pki, AT, _crls(pki, AT - timedelta(hours=1)))
    assert not verdict.valid
    assert verdict.indication == "AdESIndeterminate.NO_POE", verdict
    assert (
        verdict.message
        == "Unable to construct plausible past validation path [AdESIndeterminate.NO_POE]"
    )


def _trust(pki: Pki) -> TrustBundle:
    return load_trust_bundle(pem(pki.chain.root) + pem(pki.chain.issuing))


def test_qes_verify_at_ten_years_follows_the_archive_time_stamps(
    pki: Pki, archive: Archive
) -> None:
    """`qes verify --at` ten years on: the newest document time-stamp's TSA is trusted then,
    each older TSA (and the signature-time-stamp's) at the genTime of the next document
    time-stamp, which proves the older token existed while its certificate was valid."""
    (report,) = verify_pades(archive.extended, _trust(pki), now=AT)
    assert report.valid, report.failures
    assert report.form == "PAdES-B-LTA"
    (tsa,) = [c for c in report.checks if c.name == "tsa-certificate"]
    assert tsa.detail.endswith("at 2016-03-01T12:01:00Z (DocTimeStamp1)"), tsa
    (archived,) = [c for c in report.checks if c.name == "document-time-stamps"]
    assert archived.detail.startswith("4 document time-stamps, newest genTime 2023-08-31"), archived


def test_qes_verify_at_ten_years_refuses_b_t(pki: Pki, archive: Archive) -> None:
    (report,) = verify_pades(archive.b_t, _trust(pki), now=AT)
    assert [c.name for c in report.failures] == ["tsa-certificate"], report.failures
    assert report.failures[0].detail.startswith("not trusted now"), report.failures


def test_qes_verify_refuses_an_archive_renewed_too_late(pki: Pki, archive: Archive) -> None:
    """A document time-stamp added after the previous TSA certificate expired proves nothing
    about the older token: the older TSA is judged at the later genTime and fails."""
    first = Tsa(pki.tsa_key, pki.tsa_certificate)
    b_lta = _archive_step(pki, archive.b_t, first, first, T0 + timedelta(minutes=1))
    too_late = T0 + timedelta(days=4 * 365)
    successor = Tsa(*pki.successor_tsa(5, too_late - timedelta(minutes=5)))
    late = _archive_step(pki, b_lta, first, successor, too_late)
    (report,) = verify_pades(late, _trust(pki), now=AT - timedelta(days=2000))
    assert not report.valid
    (archived,) = [c for c in report.failures if c.name == "document-time-stamps"]
    assert archived.detail.startswith("DocTimeStamp1: not trusted at 2020-02-29"), archived
