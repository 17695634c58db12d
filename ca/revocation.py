"""Revocation of the long-lived certificates: what a CRL entry and an OCSP answer say.

Only the issuing CA certificate (on the root's CRL) and the TSA certificate (on the issuing
CA's CRL) are ever revoked. The 10-minute end-entity certificates are not: they carry
``noRevAvail`` (RFC 9608 §2) and ETSI validity-assured short-term (EN 319 412-1 §5.2), see
:mod:`ca.extensions`.

Pure: values in, values out; the time of revocation is handed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from ca._certs import check_serial, utc_seconds
from ca.errors import PolicyError

__all__ = ["REASONS", "Revocation", "reason_from_name"]

#: CRLReason values (RFC 5280 §5.3.1) a revocation here may give, by their ASN.1 names.
#: Left out: ``certificateHold`` (a revocation is final: no suspension, so no
#: ``removeFromCRL`` either, which §5.3.1 reserves for delta CRLs) and ``aACompromise``
#: (attribute certificates, RFC 5755 §6.3). ``unspecified`` is accepted but never encoded:
#: §5.3.1 says the reasonCode SHOULD then be absent.
REASONS: dict[str, x509.ReasonFlags] = {
    flag.value: flag
    for flag in (
        x509.ReasonFlags.unspecified,
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.ca_compromise,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.privilege_withdrawn,
    )
}


def reason_from_name(name: str) -> x509.ReasonFlags:
    """The CRLReason named ``name`` (``keyCompromise``, ``superseded``, ...; RFC 5280 §5.3.1)."""
    try:
        return REASONS[name]
    except (KeyError, TypeError):
        raise PolicyError(f"reason: must be one of {', '.join(REASONS)}") from None


@dataclass(frozen=True)
class Revocation:
    """One revoked certificate: its serial, when it was revoked, why, and since when its key
    is known or suspected to have been compromised (RFC 5280 §5.3.2 invalidityDate).

    Times are timezone-aware and kept to the second (they are encoded as UTCTime or
    GeneralizedTime without fractions, RFC 5280 §5.1.2.6, §5.3.2). An invalidity date after
    the revocation is refused: it is a date already known when the revocation is made.
    """

    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified
    invalidity_date: datetime | None = None

    def __post_init__(self) -> None:
        check_serial(self.serial)
        object.__setattr__(self, "revoked_at", utc_seconds(self.revoked_at))
        if self.reason not in REASONS.values():
            raise PolicyError(f"reason: must be one of {', '.join(REASONS)}")
        if self.invalidity_date is not None:
            invalid = utc_seconds(self.invalidity_date)
            if invalid > self.revoked_at:
                raise PolicyError("invalidity_date: must not be after the revocation")
            object.__setattr__(self, "invalidity_date", invalid)

    @property
    def encoded_reason(self) -> x509.ReasonFlags | None:
        """The reason to encode: None for ``unspecified`` (RFC 5280 §5.3.1)."""
        return None if self.reason is x509.ReasonFlags.unspecified else self.reason

    def crl_entry(self) -> x509.RevokedCertificate:
        """The CRL entry: serial and revocationDate (RFC 5280 §5.1.2.6), the reasonCode
        (§5.3.1) unless unspecified and the invalidityDate (§5.3.2) when known, both
        non-critical as §5.3 requires."""
        builder = (
            x509.RevokedCertificateBuilder()
            .serial_number(self.serial)
            .revocation_date(self.revoked_at)
        )
        if self.encoded_reason is not None:
            builder = builder.add_extension(x509.CRLReason(self.encoded_reason), critical=False)
        if self.invalidity_date is not None:
            builder = builder.add_extension(
                x509.InvalidityDate(self.invalidity_date.replace(tzinfo=None)), critical=False
            )
        return builder.build()
