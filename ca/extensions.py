"""End-entity extensions for the short-term signing and seal profiles.

Implements the extension part of ETSI EN 319 412-2 §4.3 (natural persons), EN 319 412-3
§4.3 (legal persons), EN 319 412-5 §4 (QC statements) and RFC 9608 (noRevAvail). The
subject DN is built by :mod:`ca.profiles`; the signing and validity by :mod:`ca.authority`.

Why the leaves carry no revocation pointers. A leaf lives at most 10 minutes and its key is
destroyed within the request that made it, so no revocation could reach a relying party
before the certificate expires anyway: a CRL is re-issued hourly and an OCSP answer is cached
for its own validity. Revocation would add nothing that expiry does not already give, and a
CRL distribution point or OCSP URL would promise status information that never changes.
Hence the two markers: RFC 9608 §2 ``noRevAvail`` says the CA publishes no revocation
information for the certificate, and RFC 9608 §3 forbids CRL distribution points,
FreshestCRL and an OCSP access method beside it; ETSI EN 319 412-1 §5.2 validity-assured
short-term says the CA assures the certificate's validity for its whole (short) period,
which EN 319 411-1 (REV-6.3.9-15, CSS-6.3.10-01A) accepts in place of a revocation service,
and EN 319 412-2 GEN-4.3.11-2A requires noRevAvail when neither pointer is present. The
long-lived certificates above the leaves (the issuing CA, the TSA) are revoked as usual:
:mod:`ca.revocation`, :func:`ca.cacerts.build_crl`, :mod:`ca.ocsp`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID

from ca import oids
from ca._certs import key_usage, subject_key_identifier
from ca.profiles import Level, NaturalPerson, Subject
from ca.qcstatements import QcStatementsSpec, encode_qc_statements

__all__ = ["LeafContext", "leaf_extensions", "policy_oid_for"]

# DER of ASN.1 NULL: the value of both short-term markers.
_DER_NULL = b"\x05\x00"

_NATURAL_POLICIES = {
    Level.QES: oids.QCP_N_QSCD,
    Level.QUALIFIED: oids.QCP_N,
    Level.ADVANCED: oids.NCP_PLUS,
}
_LEGAL_POLICIES = {
    Level.QES: oids.QCP_L_QSCD,
    Level.QUALIFIED: oids.QCP_L,
    Level.ADVANCED: oids.NCP_PLUS,
}


@dataclass(frozen=True)
class LeafContext:
    """Issuer-side inputs to the end-entity extensions (already validated by the caller)."""

    issuer: x509.Certificate
    service_policy_oid: x509.ObjectIdentifier
    ca_issuers_url: str
    pds_url: str
    pds_language: str


def policy_oid_for(subject: Subject, level: Level) -> x509.ObjectIdentifier:
    """The ETSI policy OID: EN 319 411-2 §5.3 (QCP-n/-l[-qscd]), EN 319 411-1 §5.3 (NCP+)."""
    table = _NATURAL_POLICIES if isinstance(subject, NaturalPerson) else _LEGAL_POLICIES
    return table[level]


def _qc_statements(subject: Subject, level: Level, ctx: LeafContext) -> QcStatementsSpec:
    """QC statements per EN 319 412-5 §4.2 and §5, and RFC 3739 §3.2.6.1.

    Qualified levels carry QcCompliance, QcType and QcPDS (EN 319 412-5 §5, table 2);
    ``qes`` adds QcSSCD (EN 319 412-5 §4.2.2). ``advanced`` is not a qualified certificate:
    QcType and QcPDS belong to the EU qualified-certificate statements (EN 319 412-5 §4.2.3,
    §4.3.4 and Regulation (EU) 910/2014 Annex I), so they are left out to avoid any reading of
    the certificate as qualified. The semantics identifier (EN 319 412-1 §5.1) is present
    whenever the subject carries one, at every level.
    """
    if isinstance(subject, NaturalPerson):
        semantics = oids.SEMANTICS_NATURAL if subject.serial_number is not None else None
        qc_type = oids.QCT_ESIGN
    else:
        semantics = oids.SEMANTICS_LEGAL
        qc_type = oids.QCT_ESEAL
    if level is Level.ADVANCED:
        return QcStatementsSpec(semantics_identifier=semantics)
    return QcStatementsSpec(
        semantics_identifier=semantics,
        compliance=True,
        sscd=level is Level.QES,
        qc_type=qc_type,
        pds=((ctx.pds_url, ctx.pds_language),),
    )


def leaf_extensions(
    public_key: ec.EllipticCurvePublicKey, subject: Subject, level: Level, ctx: LeafContext
) -> list[tuple[x509.ExtensionType, bool]]:
    """Return ``(extension, critical)`` pairs for a short-term end-entity certificate.

    - keyUsage nonRepudiation only, critical (EN 319 412-2 §4.3.2, type A);
    - certificatePolicies: ETSI policy then the service policy (EN 319 412-2 §4.3.3);
    - AKI (RFC 5280 §4.2.1.1), SKI (RFC 5280 §4.2.1.2);
    - AIA caIssuers only: no OCSP (EN 319 412-2 §4.4.1, RFC 9608 §3);
    - no CRL distribution point (RFC 9608 §3);
    - ETSI validity-assured short-term (EN 319 412-1 §5.2) and noRevAvail (RFC 9608 §2),
      NULL, non-critical (EN 319 412-2 GEN-4.3.11-2A);
    - qcStatements (EN 319 412-5), subjectAltName rfc822Name when an e-mail is given.
    """
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (key_usage(content_commitment=True), True),
        (
            x509.CertificatePolicies(
                [
                    x509.PolicyInformation(policy_oid_for(subject, level), None),
                    x509.PolicyInformation(ctx.service_policy_oid, None),
                ]
            ),
            False,
        ),
        (
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                subject_key_identifier(ctx.issuer)
            ),
            False,
        ),
        (x509.SubjectKeyIdentifier.from_public_key(public_key), False),
        (
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(ctx.ca_issuers_url),
                    )
                ]
            ),
            False,
        ),
        (x509.UnrecognizedExtension(oids.VALIDITY_ASSURED_SHORT_TERM, _DER_NULL), False),
        (x509.UnrecognizedExtension(oids.NO_REV_AVAIL, _DER_NULL), False),
    ]
    qc_der = encode_qc_statements(_qc_statements(subject, level, ctx))
    if qc_der is not None:
        extensions.append((x509.UnrecognizedExtension(oids.QC_STATEMENTS, qc_der), False))
    if isinstance(subject, NaturalPerson) and subject.email is not None:
        extensions.append((x509.SubjectAlternativeName([x509.RFC822Name(subject.email)]), False))
    return extensions
