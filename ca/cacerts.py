"""CA certificates and CRLs for the two-level hierarchy (RFC 5280 §4.2.1, §5).

Root and issuing CA certificates are long-lived and revocation-checked as usual: the root
publishes a CRL covering the issuing CA, whose certificate points at it (STANDARDS.md §1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ca._certs import ca_key_usage, hash_for, random_serial, subject_key_identifier, utc_seconds
from ca.errors import PolicyError
from ca.revocation import Revocation
from ca.settings import CaNames, IssuancePolicy

__all__ = ["build_crl", "build_issuing_certificate", "build_root_certificate"]


def build_root_certificate(
    key: ec.EllipticCurvePrivateKey, names: CaNames, now: datetime, lifetime: timedelta
) -> x509.Certificate:
    """A self-signed root: cA=TRUE and keyCertSign+cRLSign, both critical, plus SKI.

    RFC 5280 §4.2.1.9 (basicConstraints), §4.2.1.3 (keyUsage), §4.2.1.2 (SKI); the AKI is
    omitted as §4.2.1.1 allows for self-signed certificates.
    """
    start = utc_seconds(now)
    _check_lifetime(lifetime)
    public_key = key.public_key()
    name = names.root_name()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(key, hash_for(public_key))


def build_issuing_certificate(
    root_key: ec.EllipticCurvePrivateKey,
    root: x509.Certificate,
    issuing_public_key: ec.EllipticCurvePublicKey,
    names: CaNames,
    policy: IssuancePolicy,
    now: datetime,
    lifetime: timedelta,
) -> x509.Certificate:
    """The issuing CA certificate, signed by the root.

    cA=TRUE with pathLenConstraint 0 and keyCertSign+cRLSign, both critical (RFC 5280
    §4.2.1.9, §4.2.1.3); SKI and AKI (§4.2.1.2, §4.2.1.1); a CRL distribution point to the
    root's CRL (§4.2.1.13), because CA certificates stay revocation-checked.
    """
    start = utc_seconds(now)
    _check_lifetime(lifetime)
    _check_issuer(root_key, root, start)
    if start + lifetime > root.not_valid_after_utc:
        raise PolicyError("lifetime: issuing CA would outlive the root certificate")
    if root.subject != names.root_name():
        raise PolicyError("CaNames.root_common_name: does not match the root certificate")
    if not isinstance(issuing_public_key, ec.EllipticCurvePublicKey):
        raise PolicyError("issuing_public_key: must be an EC public key")
    hash_for(issuing_public_key)  # the issuing key must be on a supported curve too
    crl_dp = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(policy.crl_url)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(names.issuing_name())
        .issuer_name(root.subject)
        .public_key(issuing_public_key)
        .serial_number(random_serial())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_key_usage(), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(issuing_public_key), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                subject_key_identifier(root)
            ),
            critical=False,
        )
        .add_extension(x509.CRLDistributionPoints([crl_dp]), critical=False)
    )
    return builder.sign(root_key, hash_for(root.public_key()))


def build_crl(
    key: ec.EllipticCurvePrivateKey,
    issuer_cert: x509.Certificate,
    now: datetime,
    next_update: timedelta,
    revoked: Iterable[int | Revocation] | Mapping[int, datetime] = (),
    *,
    crl_number: int | None = None,
) -> x509.CertificateRevocationList:
    """A CRL over the CA certificates issued by ``issuer_cert`` (RFC 5280 §5).

    thisUpdate is ``now`` and nextUpdate ``now + next_update`` (§5.1.2.4-5). Carries AKI
    (§5.2.1) and the CRL number (§5.2.3) ``crl_number``, by default ``now`` in Unix seconds,
    so numbers increase with time without a stored counter; a caller with a durable counter
    (:mod:`signer.storage.revocations`) passes it. ``revoked`` holds :class:`Revocation`
    values (entries with reasonCode and invalidityDate, §5.3.1-2), or serials mapped to
    revocation dates, or plain serials revoked ``now``. Entries are ordered by serial.
    """
    start = utc_seconds(now)
    _check_lifetime(next_update)
    _check_issuer(key, issuer_cert, start)
    number = int(start.timestamp()) if crl_number is None else crl_number
    if not isinstance(number, int) or number < 0 or number.bit_length() > 159:
        raise PolicyError("crl_number: a non-negative integer of at most 20 octets (§5.2.3)")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(start)
        .next_update(start + next_update)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                subject_key_identifier(issuer_cert)
            ),
            critical=False,
        )
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for entry in _entries(revoked, start):
        builder = builder.add_revoked_certificate(entry.crl_entry())
    return builder.sign(key, hash_for(issuer_cert.public_key()))


def _entries(
    revoked: Iterable[int | Revocation] | Mapping[int, datetime], now: datetime
) -> list[Revocation]:
    if isinstance(revoked, Mapping):
        items = [Revocation(serial, when) for serial, when in revoked.items()]
    else:
        items = [r if isinstance(r, Revocation) else Revocation(r, now) for r in revoked]
    by_serial = {r.serial: r for r in items}
    if len(by_serial) != len(items):
        raise PolicyError("revoked: a serial is listed twice")
    return [by_serial[serial] for serial in sorted(by_serial)]


def check_service_inputs(
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    start: datetime,
    lifetime: timedelta,
    field: str,
) -> None:
    """For a service certificate (TSA, OCSP responder): a usable lifetime inside the issuer's
    validity, an issuer key matching a CA certificate valid at ``start``, and a subject key
    ``field`` of its own on a supported curve; raises :class:`PolicyError`."""
    _check_lifetime(lifetime)
    _check_issuer(issuer_key, issuer, start)
    if start + lifetime > issuer.not_valid_after_utc:
        raise PolicyError("lifetime: the certificate would outlive its issuer's certificate")
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise PolicyError(f"{field}: must be an EC public key")
    hash_for(public_key)  # on a supported curve
    if public_key == issuer.public_key():
        raise PolicyError(f"{field}: must not be its issuer's key")


def _check_lifetime(lifetime: timedelta) -> None:
    if not isinstance(lifetime, timedelta) or lifetime <= timedelta(0):
        raise PolicyError("lifetime: must be a positive timedelta")


def _check_issuer(key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate, now: datetime) -> None:
    """The key must belong to the issuer certificate, which must be a valid CA at ``now``."""
    if key.public_key() != issuer.public_key():
        raise PolicyError("key: does not match the issuer certificate")
    if not issuer.not_valid_before_utc <= now <= issuer.not_valid_after_utc:
        raise PolicyError("issuer certificate: not valid at the requested time")
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise PolicyError("issuer certificate: is not a CA certificate") from None
    if not constraints.ca:
        raise PolicyError("issuer certificate: is not a CA certificate")
