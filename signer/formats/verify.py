"""Offline validation of the service's CAdES and PAdES baseline B-T signatures (``qes verify``).

The model is STANDARDS.md §4 on top of ETSI EN 319 102-1 §5 (basic signature validation with a
signature-time-stamp, §5.5 "validation process for Signatures with Time"): a 10-minute
certificate has long expired when anybody verifies, so

- the signature is checked for integrity (RFC 5652 §5.4, §11.2; EN 319 122-1 §5.2.2 for the
  signing-certificate-v2 binding; for PDFs the ``/ByteRange`` coverage and later incremental
  updates, EN 319 142-1 §5.1 and ISO 32000-2 §12.8.1);
- the signature-time-stamp (RFC 3161 §2.4.2, EN 319 122-1 §5.3) is checked to cover the
  SignerInfo signature value, to be signed correctly and by a TSA certificate with the critical
  timeStamping EKU (RFC 3161 §2.3) that chains to a trust anchor *now*;
- the signer's chain is validated at the token's genTime instead of now (EN 319 102-1 §5.6.2.1,
  past signature validation with a proof of existence), every certificate's validity window
  containing genTime;
- revocation is not checked: the short-term leaf says so itself (RFC 9608 noRevAvail, ETSI
  validity-assured EN 319 412-1 §5.2), and the tool is offline, so CA revocation is reported as
  not checked rather than silently assumed.

pyHanko does the cryptographic work (``validate_sig_integrity``, ``validate_tst_signed_data``,
``pyhanko_certvalidator`` path validation, PDF coverage and difference analysis); this module
chooses the validation moments, names each check and reports a verdict. The pyHanko calls are
coroutines: the public functions are synchronous and run them on a private event loop, so call
them from a worker thread when already inside one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import BytesIO
from typing import Any

from asn1crypto import cms, pem, tsp
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.decode_limits import DecodePurpose
from pyhanko.pdf_utils.misc import PdfError as PyHankoPdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.general import CMSExtractionError, extract_certificate_info
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.generic_cms import validate_sig_integrity, validate_tst_signed_data
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import PathBuildingError, ValidationError

from ca import oids
from signer.errors import SignerError

__all__ = [
    "Check",
    "SignatureReport",
    "TimeStamp",
    "TrustBundle",
    "VerifyError",
    "detached_signer",
    "load_crls",
    "load_trust_bundle",
    "render_text",
    "verify_cades",
    "verify_pades",
]

_OID_SIGNATURE_TIME_STAMP = "1.2.840.113549.1.9.16.2.14"
_OID_ORGANIZATION_IDENTIFIER = "2.5.4.97"
#: Certificate policies issued by ``ca.extensions``: (level, policy name, legal person?).
_POLICIES: dict[str, tuple[str, str, bool | None]] = {
    oids.QCP_N_QSCD.dotted_string: ("QES", "QCP-n-qscd", False),
    oids.QCP_L_QSCD.dotted_string: ("QES", "QCP-l-qscd", True),
    oids.QCP_N.dotted_string: ("qualified (AdES/QC)", "QCP-n", False),
    oids.QCP_L.dotted_string: ("qualified (AdES/QC)", "QCP-l", True),
    oids.NCP_PLUS.dotted_string: ("advanced", "NCP+", None),
}
_SHORT_TERM_MARKERS = {
    oids.NO_REV_AVAIL.dotted_string: "noRevAvail",
    oids.VALIDITY_ASSURED_SHORT_TERM.dotted_string: "validity-assured",
}
#: RFC 4514 leaves these as dotted OIDs; the names are the X.520 / EN 319 412 ones.
_DN_NAMES = {
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.SURNAME: "surname",
    NameOID.GIVEN_NAME: "givenName",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
    NameOID.PSEUDONYM: "pseudonym",
}
#: Clock tolerance between genTime and certificate validity, as pyhanko_certvalidator's default.
_TOLERANCE = timedelta(seconds=1)


class VerifyError(SignerError):
    """The inputs cannot be validated at all (unreadable bundle, not a CMS, no signature): a
    usage error, as opposed to a signature that was read and found invalid."""

    slug = "verify-input-error"
    title = "Signature inputs unreadable"
    status = 400


@dataclass(frozen=True)
class Check:
    """One named validation step and its outcome; ``detail`` says why, in one line."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class TimeStamp:
    """The signature-time-stamp's genTime and the TSA certificate's subject."""

    gen_time: datetime
    tsa: str


@dataclass(frozen=True)
class SignatureReport:
    """The verdict on one signature: who, when, at which level, and every check made.

    ``valid`` holds exactly when every check passed (EN 319 102-1 §5.1: TOTAL-PASSED); the
    failing checks' names say what failed.
    """

    label: str
    form: str
    signer: str
    legal_person: bool
    level: str
    policy: str
    serial: str
    claimed_time: datetime | None
    time_stamp: TimeStamp | None
    chain: tuple[str, ...]
    revocation: str
    checks: tuple[Check, ...]

    def __post_init__(self) -> None:
        if not self.checks:
            raise ValueError("checks: a report without checks is no verdict")

    @property
    def valid(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.ok)

    def as_json(self) -> dict[str, Any]:
        """Plain JSON values for ``qes verify --json``."""
        return {
            "label": self.label,
            "valid": self.valid,
            "form": self.form,
            "signer": self.signer,
            "legal_person": self.legal_person,
            "level": self.level,
            "policy": self.policy,
            "serial": self.serial,
            "claimed_time": _iso(self.claimed_time),
            "time_stamp": None
            if self.time_stamp is None
            else {"gen_time": _iso(self.time_stamp.gen_time), "tsa": self.time_stamp.tsa},
            "chain": list(self.chain),
            "revocation": self.revocation,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "failed": [c.name for c in self.failures],
        }


@dataclass(frozen=True)
class TrustBundle:
    """The relying party's trust: self-signed roots are anchors, the rest usable intermediates
    (never trusted by themselves; RFC 5280 §6.1 path validation ends at an anchor); and the
    CRLs it holds (``qes verify --crl``, and those in the PDF's DSS or the CMS), which can only
    refuse a TSA certificate (:func:`_tsa_revocation`), never vouch for one."""

    roots: tuple[asn1_x509.Certificate, ...]
    intermediates: tuple[asn1_x509.Certificate, ...]
    crls: tuple[asn1_crl.CertificateList, ...] = ()

    def __post_init__(self) -> None:
        if not self.roots:
            raise VerifyError("trust bundle: no self-signed root certificate in it")


def load_crls(data: bytes) -> tuple[asn1_crl.CertificateList, ...]:
    """CRLs (RFC 5280 §5) from DER, or PEM with one or more X509 CRL blocks; raises
    :class:`VerifyError`."""
    try:
        if pem.detect(data):
            found = [der for kind, _, der in pem.unarmor(data, multiple=True) if kind == "X509 CRL"]
        else:
            found = [data]
        crls = tuple(asn1_crl.CertificateList.load(der, strict=True) for der in found)
        for item in crls:
            item.native  # noqa: B018  (decode fully now: a broken CRL is an input error)
    except (ValueError, TypeError) as exc:
        raise VerifyError(f"CRL: not a DER or PEM CRL ({exc})") from exc
    if not crls:
        raise VerifyError("CRL: no X509 CRL in it")
    return crls


def load_trust_bundle(data: bytes) -> TrustBundle:
    """Parse a PEM bundle (one or more CERTIFICATE blocks); raises :class:`VerifyError`."""
    certs: list[asn1_x509.Certificate] = []
    try:
        if pem.detect(data):
            for kind, _, der in pem.unarmor(data, multiple=True):
                if kind == "CERTIFICATE":
                    certs.append(asn1_x509.Certificate.load(der))
        for cert in certs:
            cert.native  # noqa: B018  (decode fully now, so a broken block is an input error)
    except (ValueError, TypeError) as exc:
        raise VerifyError(f"trust bundle: not a PEM certificate bundle ({exc})") from exc
    if not certs:
        raise VerifyError("trust bundle: no PEM certificate in it")
    roots = tuple(c for c in certs if c.self_signed == "maybe" or c.self_signed == "yes")
    return TrustBundle(roots, tuple(c for c in certs if c not in roots))


def verify_cades(
    document: bytes, signature: bytes, trust: TrustBundle, *, now: datetime, label: str = ""
) -> SignatureReport:
    """Validate a detached CAdES signature (EN 319 122-1) over ``document`` at moment ``now``.

    Raises :class:`VerifyError` when ``signature`` is not a DER CMS SignedData with one
    SignerInfo; every other problem is a failing check in the report.
    """
    _check_moment(now)
    signed_data = _load_signed_data(signature)
    digest = _content_digest(_signer_info(signed_data), document)
    held = tuple(c.chosen for c in signed_data["crls"] or () if c.name == "crl")
    trust = dataclasses.replace(trust, crls=(*trust.crls, *held))
    return asyncio.run(_verify_signed_data(signed_data, digest, trust, now, label=label, pdf=None))


def _content_digest(signer_info: cms.SignerInfo, content: bytes) -> bytes:
    """The digest of ``content`` with the SignerInfo's digestAlgorithm (RFC 5652 §5.4)."""
    algorithm = signer_info["digest_algorithm"]["algorithm"].native
    try:
        return hashlib.new(algorithm, content).digest()
    except (ValueError, TypeError) as exc:
        raise VerifyError(f"signature: unsupported digest algorithm {algorithm}") from exc


def detached_signer(content: bytes, signature: bytes) -> x509.Certificate:
    """The certificate of whoever made ``signature`` over ``content``: a CMS SignedData with
    one SignerInfo (RFC 5652 §5; DER or PEM, as ``openssl cms -sign -binary`` or any CAdES
    tool writes it) whose message-digest (§11.2) and signature value (§5.4) verify with the
    certificate it carries. Whom that certificate names is for the reader to judge: its path
    is not validated (a witness's certificate comes from their own PKI)."""
    if pem.detect(signature):
        kind, _, signature = pem.unarmor(signature)
        if kind not in ("PKCS7", "CMS"):
            raise VerifyError(f"signature: a PEM {kind[:40]}, not a CMS signature (PKCS7)")
    signed_data = _load_signed_data(signature)
    signer_info = _signer_info(signed_data)
    try:
        leaf = extract_certificate_info(signed_data).signer_cert
    except CMSExtractionError as exc:
        raise VerifyError("signature: the signer's certificate is not in it") from exc
    digest = _content_digest(signer_info, content)
    failed = [c for c in _integrity(signer_info, leaf, digest) if not c.ok]
    if failed:
        raise VerifyError(f"signature: {failed[0].name} {failed[0].detail}")
    return x509.load_der_x509_certificate(leaf.dump())


def verify_pades(
    pdf: bytes, trust: TrustBundle, *, now: datetime, label: str = ""
) -> tuple[SignatureReport, ...]:
    """Validate every signature field of a PDF (EN 319 142-1), one report per signature; a
    document time-stamp (B-LTA) is no signature: it is one more check of every report.

    Raises :class:`VerifyError` when the bytes are not a readable PDF or hold no signature.
    """
    _check_moment(now)
    try:
        reader = PdfFileReader(BytesIO(pdf), strict=False)
        embedded = list(reader.embedded_regular_signatures)
        stamps = list(reader.embedded_timestamp_signatures)
        has_dss = "/DSS" in reader.root
        held = _dss_crls(reader) if has_dss else ()
    except (PyHankoPdfError, ValueError, TypeError, KeyError) as exc:
        raise VerifyError(f"{label or 'PDF'}: not a readable PDF ({exc})") from exc
    trust = dataclasses.replace(trust, crls=(*trust.crls, *held))
    if not embedded:
        raise VerifyError(f"{label or 'PDF'}: no signature fields with a signature")
    reports = asyncio.run(_verify_all_fields(embedded, stamps, trust, now, label))
    level = "B-LTA" if stamps and has_dss else "B-LT" if has_dss else None
    if level is None:
        return tuple(reports)
    return tuple(  # a B-T signature in a PDF with a DSS (EN 319 142-1 §6.3, Table 1)
        dataclasses.replace(r, form=f"PAdES-{level}") if r.form == "PAdES-B-T" else r
        for r in reports
    )


def _dss_crls(reader: PdfFileReader) -> tuple[asn1_crl.CertificateList, ...]:
    """The CRLs in the document security store (EN 319 142-1 §5.4.2)."""
    dss = DocumentSecurityStore.read_dss(reader)
    return tuple(
        asn1_crl.CertificateList.load(item.get_object().read_data(DecodePurpose.CRL))
        for item in dss.crls
    )


async def _verify_all_fields(
    embedded: Sequence[EmbeddedPdfSignature],
    stamps: Sequence[EmbeddedPdfSignature],
    trust: TrustBundle,
    now: datetime,
    label: str,
) -> list[SignatureReport]:
    archive, proofs = await _document_time_stamps(stamps, trust, now) if stamps else (None, [])
    reports = []
    for field in embedded:
        name = f"{label}: field {field.field_name}" if label else f"field {field.field_name}"
        digest = field.compute_digest()
        proof = next((p for p in proofs if p.revision > field.signed_revision), None)
        report = await _verify_signed_data(
            field.signed_data, digest, trust, now, label=name, pdf=field, proof=proof
        )
        if archive is not None:
            report = dataclasses.replace(report, checks=(*report.checks, archive))
        reports.append(report)
    return reports


@dataclass(frozen=True)
class _Proof:
    """A document time-stamp that checked out: everything in the PDF revisions before
    ``revision`` existed at ``gen_time`` (EN 319 102-1 §5.6.2.3, proof of existence)."""

    revision: int
    gen_time: datetime
    field: str


async def _verify_signed_data(
    signed_data: cms.SignedData,
    digest: bytes,
    trust: TrustBundle,
    now: datetime,
    *,
    label: str,
    pdf: EmbeddedPdfSignature | None,
    proof: _Proof | None = None,
) -> SignatureReport:
    """The checks shared by CAdES and PAdES for one SignedData with one SignerInfo; with a
    ``proof`` (a later document time-stamp) the signature-time-stamp's TSA is validated at
    that proof's genTime instead of ``now`` (EN 319 102-1 §5.6.3)."""
    signer_info = _signer_info(signed_data)
    try:
        cert_info = extract_certificate_info(signed_data)
    except CMSExtractionError as exc:
        raise VerifyError(f"{label or 'signature'}: signer certificate not in the CMS") from exc
    leaf = cert_info.signer_cert
    embedded = tuple(cert_info.other_certs)
    checks = [*_integrity(signer_info, leaf, digest), _signing_certificate(signer_info, leaf)]
    if pdf is not None:
        checks.append(_pdf_coverage(pdf))
    tokens = _time_stamp_tokens(signer_info)
    stamp: TimeStamp | None = None
    if len(tokens) != 1:
        why = "no signature-time-stamp (B-B only)" if not tokens else f"{len(tokens)} tokens"
        checks.append(Check("time-stamp", False, f"{why}; this verifier expects exactly one"))
    else:
        stamp, token_checks = await _time_stamp_checks(tokens[0], signer_info, trust, now, proof)
        checks.extend(token_checks)
    moment = now if stamp is None else stamp.gen_time
    chain, chain_check = await _chain_at(leaf, embedded, trust, moment, stamp is not None)
    checks.append(chain_check)
    checks.append(_profile(signer_info, pdf))
    level, policy, legal = _level(leaf)
    return SignatureReport(
        label=label,
        form=_form(pdf, bool(tokens), bool(signed_data["crls"])),
        signer=_dn(leaf),
        legal_person=legal,
        level=level,
        policy=policy,
        serial=format(leaf.serial_number, "x"),
        claimed_time=_claimed_time(signer_info, pdf),
        time_stamp=stamp,
        chain=chain,
        revocation=_revocation(leaf),
        checks=tuple(checks),
    )


def _integrity(
    signer_info: cms.SignerInfo, leaf: asn1_x509.Certificate, digest: bytes
) -> list[Check]:
    """RFC 5652 §11.2 (message-digest equals the content digest) and §5.4/§5.6 (the signature
    value verifies over the DER signed attributes with the signer certificate's key)."""
    try:
        intact, valid = validate_sig_integrity(signer_info, leaf, "data", digest)
    except (ValueError, TypeError, KeyError) as exc:
        return [Check("message-digest", False, f"cannot be checked: {exc}")]
    return [
        Check(
            "message-digest",
            intact,
            "equals the document digest" if intact else "does not match the document digest",
        ),
        Check(
            "signature-value",
            valid,
            "verifies with the signer certificate's key"
            if valid
            else "does not verify over the signed attributes",
        ),
    ]


def _signing_certificate(signer_info: cms.SignerInfo, leaf: asn1_x509.Certificate) -> Check:
    """signing-certificate-v2 binds the signer certificate (RFC 5035 §3, EN 319 122-1
    §5.2.2.3): its first ESSCertIDv2 hash is the certificate's hash, serial and issuer match."""
    values = [
        a["values"][0]
        for a in signer_info["signed_attrs"] or ()
        if a["type"].native == "signing_certificate_v2"
    ]
    if len(values) != 1:
        return Check("signing-certificate", False, "no single signing-certificate-v2 attribute")
    ess = values[0]["certs"][0]
    algorithm = ess["hash_algorithm"]["algorithm"].native
    matches = hashlib.new(algorithm, leaf.dump()).digest() == ess["cert_hash"].native
    serial = ess["issuer_serial"]
    if serial.native is not None:
        matches = matches and serial["serial_number"].native == leaf.serial_number
    detail = "binds the signer certificate" if matches else "names another certificate"
    return Check("signing-certificate", matches, detail)


def _pdf_coverage(field: EmbeddedPdfSignature) -> Check:
    """The ``/ByteRange`` covers the whole revision except the ``/Contents`` hole (ISO 32000-2
    §12.8.1) and later incremental updates change nothing but what a signature may add
    (pyHanko's difference analysis; EN 319 142-1 §5.1)."""
    try:
        field.compute_integrity_info()  # type: ignore[no-untyped-call]
        info = field.summarise_integrity_info()
    except (PyHankoPdfError, ValueError, KeyError) as exc:
        return Check("byte-range", False, f"cannot be evaluated: {exc}")
    coverage = info["coverage"].name.lower().replace("_", " ")
    if not info["docmdp_ok"]:
        diff = info["diff_result"]
        why = getattr(diff, "exc", None) or getattr(diff, "modification_level", "unknown")
        return Check("byte-range", False, f"coverage {coverage}; modified after signing: {why}")
    return Check("byte-range", True, f"covers the {coverage} except /Contents; no later changes")


def _time_stamp_tokens(signer_info: cms.SignerInfo) -> list[cms.ContentInfo]:
    return [
        value
        for attribute in signer_info["unsigned_attrs"] or ()
        if attribute["type"].dotted == _OID_SIGNATURE_TIME_STAMP
        for value in attribute["values"]
    ]


async def _time_stamp_checks(
    token: cms.ContentInfo,
    signer_info: cms.SignerInfo,
    trust: TrustBundle,
    now: datetime,
    proof: _Proof | None,
) -> tuple[TimeStamp | None, list[Check]]:
    """RFC 3161 §2.4.2 and EN 319 122-1 §5.3: the token's messageImprint is the hash of the
    SignerInfo signature value, its own CMS signature verifies, and its TSA certificate has
    the critical timeStamping EKU (RFC 3161 §2.3) and chains to a trust anchor at ``now``, or
    at the genTime of the ``proof`` that covers it (STANDARDS.md §4: the token is what carries
    the signature past the leaf's expiry; the archive time-stamp carries the token)."""
    signature_value = signer_info["signature"].native
    stamp, ok, tsa_check = await _token_checks(
        token["content"], lambda algorithm: hashlib.new(algorithm, signature_value).digest(),
        trust, now if proof is None else proof.gen_time,
        "now" if proof is None else f"at {_iso(proof.gen_time)} ({proof.field})",
    )  # fmt: skip
    if stamp is None:
        return None, [Check("time-stamp", False, tsa_check.detail)]
    detail = (
        f"covers the signature value, genTime {_iso(stamp.gen_time)}"
        if ok
        else "imprint does not cover the signature value or the token signature is invalid"
    )
    return stamp, [Check("time-stamp", ok, detail), tsa_check]


async def _token_checks(
    tst_signed_data: cms.SignedData,
    imprint: Callable[[str], bytes],
    trust: TrustBundle,
    now: datetime,
    when: str = "now",
) -> tuple[TimeStamp | None, bool, Check]:
    """One RFC 3161 token: its genTime and TSA, whether its imprint is ``imprint(algorithm)``
    and its CMS signature verifies (§2.4.2), and the ``tsa-certificate`` check: the critical
    timeStamping-only EKU (§2.3) and a path to a trust anchor at ``now`` (named ``when``). An
    unreadable token gives ``(None, False, check)`` with the reason in ``check``."""
    try:
        tst_info = tst_signed_data["encap_content_info"]["content"].parsed
        if not isinstance(tst_info, tsp.TSTInfo):
            raise ValueError("does not encapsulate a TSTInfo")
        context = _context(trust, tst_signed_data, now)
        status = await validate_tst_signed_data(tst_signed_data, context, imprint)
    except Exception as exc:  # pyHanko raises many types for malformed tokens
        return None, False, Check("tsa-certificate", False, f"unreadable token: {exc}")
    tsa_cert: asn1_x509.Certificate = status["signing_cert"]
    stamp = TimeStamp(tst_info["gen_time"].native, _dn(tsa_cert))
    problem = status["trust_problem_indic"]
    eku = tsa_cert.extended_key_usage_value
    critical_eku = (
        "extended_key_usage" in tsa_cert.critical_extensions
        and eku is not None
        and eku.native == ["time_stamping"]
    )
    revoked = _tsa_revocation(tsa_cert, tst_signed_data, trust, stamp.gen_time, now, when)
    if not critical_eku:
        check = Check("tsa-certificate", False, "no critical timeStamping-only EKU")
    elif revoked is not None:
        check = Check("tsa-certificate", False, revoked)
    elif problem is not None:
        check = Check("tsa-certificate", False, f"not trusted {when}: {_indication(problem)}")
    elif stamp.gen_time > now + _TOLERANCE:
        check = Check("tsa-certificate", False, f"genTime lies after the validation time ({when})")
    else:
        check = Check("tsa-certificate", True, f"timeStamping EKU, chains to a trusted root {when}")
    return stamp, bool(status["intact"] and status["valid"]), check


#: Revocation reasons after which no token of the key can be trusted without a proof that it
#: existed before (RFC 3161 §4; RFC 5280 §5.3.1: no reason given counts as unspecified).
_COMPROMISE = frozenset({None, "unspecified", "key_compromise", "ca_compromise"})


def _tsa_revocation(
    tsa_cert: asn1_x509.Certificate,
    token: cms.SignedData,
    trust: TrustBundle,
    gen_time: datetime,
    moment: datetime,
    when: str,
) -> str | None:
    """Why a CRL held (RFC 5280 §5, signed by the TSA certificate's issuer) refuses the TSA
    certificate, or None: revoked (or invalid, §5.3.2) at or before genTime; or, for key or CA
    compromise or no stated reason, before ``moment`` when that is a later time-stamp's genTime
    or the validation time, since nothing then shows the token was made before the key was
    lost (RFC 3161 §4; EN 319 102-1 §5.2.6 and §5.6.2.4)."""
    pool = [*trust.roots, *trust.intermediates, *_token_certificates(token)]
    issuers = [c for c in pool if c.subject == tsa_cert.issuer]
    for crl_list in trust.crls:
        if crl_list.issuer != tsa_cert.issuer or not any(_signs(i, crl_list) for i in issuers):
            continue
        for entry in crl_list["tbs_cert_list"]["revoked_certificates"] or ():
            if entry["user_certificate"].native != tsa_cert.serial_number:
                continue
            effective: datetime = entry["revocation_date"].native
            invalid = entry.invalidity_date_value
            if invalid is not None and invalid.native < effective:
                effective = invalid.native
            reason = entry.crl_reason_value.native if entry.crl_reason_value else None
            named = f"revoked ({reason or 'no reason given'}) at {_iso(effective)}"
            if effective <= gen_time:
                return f"{named}, before its genTime {_iso(gen_time)}"
            if reason in _COMPROMISE and effective <= moment:
                return f"{named}; nothing proves the token existed before ({when})"
    return None


def _token_certificates(token: cms.SignedData) -> list[asn1_x509.Certificate]:
    return [c.chosen for c in token["certificates"] or () if c.name == "certificate"]


def _signs(issuer: asn1_x509.Certificate, crl_list: asn1_crl.CertificateList) -> bool:
    try:
        key = x509.load_der_x509_certificate(issuer.dump()).public_key()
        return x509.load_der_x509_crl(crl_list.dump()).is_signature_valid(key)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False


def _imprint_of(field: EmbeddedPdfSignature) -> Callable[[str], bytes]:
    """The ``/ByteRange`` digest for the field's own digest algorithm (nothing else matches)."""
    digest: bytes = field.compute_digest()
    algorithm: str = field.md_algorithm
    return lambda asked: digest if asked == algorithm else b""


async def _document_time_stamps(
    fields: Sequence[EmbeddedPdfSignature], trust: TrustBundle, now: datetime
) -> tuple[Check, list[_Proof]]:
    """PAdES B-LTA (EN 319 142-1 §5.4.3, §6.3): each document time-stamp's token covers its
    ``/ByteRange`` (RFC 3161 §2.4.2), nothing but later validation data and time-stamps was
    added after it (the ``byte-range`` check), and its TSA chains to a trust anchor: the
    newest at the validation time, each older one at the genTime of the next, which proves the
    older token existed then (EN 319 102-1 §5.6.3, archive time-stamps renewed before their
    TSA certificates end). Returns the check and the time-stamps as proofs of existence."""
    proofs: list[_Proof] = []
    ordered = sorted(fields, key=lambda f: f.signed_revision)
    for index, field in enumerate(ordered):
        later = ordered[index + 1] if index + 1 < len(ordered) else None
        moment, when = now, "now"
        if later is not None:
            moment = _gen_time(later.signed_data, now)
            when = f"at {_iso(moment)} ({later.field_name})"
        stamp, ok, tsa_check = await _token_checks(
            field.signed_data, _imprint_of(field), trust, moment, when
        )
        coverage = _pdf_coverage(field)
        for failed, detail in (
            (not ok, "its token does not cover the document or its signature is invalid"),
            (not tsa_check.ok, tsa_check.detail),
            (not coverage.ok, coverage.detail),
        ):
            if failed:
                failure = Check("document-time-stamps", False, f"{field.field_name}: {detail}")
                return failure, []
        assert stamp is not None  # a readable token: ok and tsa_check passed
        proofs.append(_Proof(field.signed_revision, stamp.gen_time, field.field_name))
    plural = "" if len(fields) == 1 else "s"
    detail = (
        f"{len(fields)} document time-stamp{plural}, newest genTime {_iso(proofs[-1].gen_time)}"
    )
    older = "; each older one at the next one's genTime" if len(fields) > 1 else ""
    return Check("document-time-stamps", True, f"{detail}; newest TSA trusted now{older}"), proofs


def _gen_time(tst_signed_data: cms.SignedData, fallback: datetime) -> datetime:
    """The genTime of a token; ``fallback`` when it is unreadable (its own check fails)."""
    try:
        when = tst_signed_data["encap_content_info"]["content"].parsed["gen_time"].native
    except (ValueError, TypeError, KeyError, AttributeError):
        return fallback
    return when if isinstance(when, datetime) else fallback


async def _chain_at(
    leaf: asn1_x509.Certificate,
    embedded: Iterable[asn1_x509.Certificate],
    trust: TrustBundle,
    moment: datetime,
    at_gen_time: bool,
) -> tuple[tuple[str, ...], Check]:
    """RFC 5280 §6.1 path validation of the signer certificate at ``moment`` (genTime when
    there is a token: EN 319 102-1 §5.6.2.1), with nonRepudiation (EN 319 412-2 §4.3.2), and
    every certificate's notBefore <= moment <= notAfter named when it fails."""
    when = "the time-stamp" if at_gen_time else "the validation time"
    pool = [*embedded, *trust.intermediates, *trust.roots]
    for cert in _issuer_walk(leaf, pool):
        window = cert["tbs_certificate"]["validity"]
        not_before, not_after = window["not_before"].native, window["not_after"].native
        if not not_before - _TOLERANCE <= moment <= not_after + _TOLERANCE:
            edge = (
                f"notAfter {_iso(not_after)}"
                if moment > not_after
                else f"notBefore {_iso(not_before)}"
            )
            detail = f"{_dn(cert)} not valid at {when} {_iso(moment)} ({edge})"
            return (), Check("signer-chain", False, detail)
    context = ValidationContext(
        trust_roots=list(trust.roots),
        other_certs=[*trust.intermediates, *embedded],
        moment=moment,
        allow_fetching=False,
        revocation_mode="soft-fail",
    )
    try:
        validator = CertificateValidator(leaf, validation_context=context)
        path = await validator.async_validate_usage({"non_repudiation"})  # type: ignore[no-untyped-call]
    except PathBuildingError as exc:
        return (), Check("signer-chain", False, f"no path to a trusted root: {exc}")
    except ValidationError as exc:
        return (), Check("signer-chain", False, f"invalid at {when}: {exc}")
    names = ["leaf"] + ["issuing CA"] * (path.pkix_len - 1) + ["root (trusted)"]
    subjects = tuple(_dn(cert) for cert in reversed(list(path.iter_certs(include_root=True))))
    detail = f"valid at {when} {_iso(moment)}: {' -> '.join(names)}"
    return subjects, Check("signer-chain", True, detail)


def _issuer_walk(
    leaf: asn1_x509.Certificate, pool: Sequence[asn1_x509.Certificate]
) -> list[asn1_x509.Certificate]:
    """The leaf and its issuers found in ``pool`` by name and, when both carry one, by key
    identifier (AKI = SKI, RFC 5280 §4.2.1.1: after a CA key rollover two issuing CAs share a
    name), for naming an expired link; the cryptographic path is pyhanko_certvalidator's."""
    walk = [leaf]
    while len(walk) < 8 and walk[-1].self_signed == "no":
        issuer = next((c for c in pool if _issued(walk[-1], c) and c not in walk), None)
        if issuer is None:
            break
        walk.append(issuer)
    return walk


def _issued(child: asn1_x509.Certificate, candidate: asn1_x509.Certificate) -> bool:
    if candidate.subject != child.issuer:
        return False
    wanted, held = child.authority_key_identifier, candidate.key_identifier
    return wanted is None or held is None or wanted == held


def _profile(signer_info: cms.SignerInfo, pdf: EmbeddedPdfSignature | None) -> Check:
    """Baseline B-B attributes: content-type, message-digest, signing-certificate-v2 (EN 319
    122-1 §6.3); PAdES adds ``/SubFilter /ETSI.CAdES.detached`` and forbids signing-time
    (EN 319 142-1 §6.3)."""
    present = {a["type"].native for a in signer_info["signed_attrs"] or ()}
    missing = {"content_type", "message_digest", "signing_certificate_v2"} - present
    if missing:
        return Check("profile", False, f"missing signed attributes: {', '.join(sorted(missing))}")
    if pdf is not None:
        sub_filter = pdf.sig_object.get("/SubFilter")
        if sub_filter != "/ETSI.CAdES.detached":
            return Check("profile", False, f"/SubFilter {sub_filter}, not /ETSI.CAdES.detached")
        if "signing_time" in present:
            return Check("profile", False, "PAdES baseline forbids the signing-time attribute")
    return Check("profile", True, "baseline signed attributes present")


def _level(leaf: asn1_x509.Certificate) -> tuple[str, str, bool]:
    """Level from the ETSI policy OID (EN 319 411-1 §5.3, EN 319 411-2 §5.3); legal person from
    the QCP-l policies or, for NCP+, an organizationIdentifier in the subject (EN 319 412-3)."""
    policies = leaf.certificate_policies_value
    found = [p["policy_identifier"].dotted for p in policies or ()]
    legal_by_subject = any(
        attribute["type"].dotted == _OID_ORGANIZATION_IDENTIFIER
        for rdn in leaf.subject.chosen
        for attribute in rdn
    )
    for oid in found:
        if oid in _POLICIES:
            level, name, legal = _POLICIES[oid]
            return level, name, legal_by_subject if legal is None else legal
    return "unknown (no ETSI policy)", "-", legal_by_subject


def _revocation(leaf: asn1_x509.Certificate) -> str:
    """RFC 9608 §2 and EN 319 412-1 §5.2: a short-term certificate needs no revocation data."""
    present = {e["extn_id"].dotted for e in leaf["tbs_certificate"]["extensions"] or ()}
    markers = [name for oid, name in _SHORT_TERM_MARKERS.items() if oid in present]
    offline = "offline: no CRL or OCSP fetched for the CA or TSA certificates"
    if markers:
        return f"not checked: short-term certificate ({', '.join(markers)}); {offline}"
    return f"NOT CHECKED: the certificate has no short-term marker; {offline}"


def _form(pdf: EmbeddedPdfSignature | None, has_token: bool, has_revocation_data: bool) -> str:
    """The baseline form; CAdES-B-LT when the SignedData carries revocation data in ``crls``
    (EN 319 122-1 §6.3; PAdES keeps it in the DSS, named by :func:`verify_pades`)."""
    level = "B-T" if has_token else "B-B"
    if pdf is None and has_token and has_revocation_data:
        level = "B-LT"
    return f"PAdES-{level}" if pdf is not None else f"CAdES-{level}"


def _claimed_time(signer_info: cms.SignerInfo, pdf: EmbeddedPdfSignature | None) -> datetime | None:
    if pdf is not None:
        claimed: datetime | None = pdf.self_reported_timestamp
        return claimed
    for attribute in signer_info["signed_attrs"] or ():
        if attribute["type"].native == "signing_time":
            value: datetime = attribute["values"][0].native
            return value
    return None


def _context(
    trust: TrustBundle, signed_data: cms.SignedData, moment: datetime
) -> ValidationContext:
    embedded = _token_certificates(signed_data)
    return ValidationContext(
        trust_roots=list(trust.roots),
        other_certs=[*trust.intermediates, *embedded],
        moment=moment,
        allow_fetching=False,
        revocation_mode="soft-fail",
    )


def _check_moment(now: datetime) -> None:
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise VerifyError("now: must be a timezone-aware datetime")


def _load_signed_data(data: bytes) -> cms.SignedData:
    try:
        info = cms.ContentInfo.load(data, strict=True)
        if info["content_type"].native != "signed_data":
            raise ValueError("content type is not signed-data")
        signed_data: cms.SignedData = info["content"]
        _signer_info(signed_data)
    except (ValueError, TypeError, KeyError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VerifyError(f"signature: not a DER CMS SignedData ({why})") from exc
    return signed_data


def _signer_info(signed_data: cms.SignedData) -> cms.SignerInfo:
    infos = signed_data["signer_infos"]
    if len(infos) != 1:
        raise VerifyError(f"signature: {len(infos)} SignerInfos, expected exactly one")
    info: cms.SignerInfo = infos[0]
    return info


def _dn(cert: asn1_x509.Certificate) -> str:
    """RFC 4514 string of the subject, as ``openssl`` and the service's own messages show it."""
    return x509.load_der_x509_certificate(cert.dump()).subject.rfc4514_string(_DN_NAMES)


def _indication(problem: Any) -> str:
    return str(getattr(problem, "name", problem)).lower().replace("_", " ")


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def render_text(report: SignatureReport) -> str:
    """The readable summary of one signature (``qes verify`` without ``--json``)."""
    verdict = "VALID" if report.valid else "INVALID"
    kind = "legal person, seal" if report.legal_person else "natural person, signature"
    lines = [
        f"{verdict}  {report.form}  {report.label}",
        f"  signed by   {report.signer} ({kind})",
        f"  level       {report.level} ({report.policy}), certificate serial {report.serial}",
    ]
    if report.claimed_time is not None:
        lines.append(f"  claimed     {_iso(report.claimed_time)} (signer's clock, not evidence)")
    if report.time_stamp is not None:
        lines.append(f"  time-stamp  {_iso(report.time_stamp.gen_time)} by {report.time_stamp.tsa}")
    chain = next(c for c in report.checks if c.name == "signer-chain")
    lines.append(f"  chain       {chain.detail}")
    lines.append(f"  revocation  {report.revocation}")
    lines.extend(f"  FAILED      {c.name}: {c.detail}" for c in report.failures)
    return "\n".join(lines)
