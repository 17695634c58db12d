"""What crosses the air gap in a key ceremony (issue 15 item 1): certificate requests to the
offline root, what it signs back, and the content of the root's next CRL.

- A key made in the online HSM travels as a PKCS#10 request (RFC 2986): its self-signature
  proves that whoever asks holds the key (§3, proof of possession), so the root signs only keys
  that exist in the online HSM. The root issues with the same profile builders as ever
  (:func:`ca.cacerts.build_issuing_certificate`, :func:`ca.ocsp.build_responder_certificate`),
  taking nothing from the request but its public key: names and extensions are the CA's.
- The root's CRL (RFC 5280 §5) is signed offline from a :class:`CrlRequest` the online side
  exports: the root certificate it is for (by SHA-256), the next CRL number (§5.2.3, from the
  online counter, so numbers keep increasing) and the entries (§5.3.1-2).

Pure: no I/O, no clock; times are handed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ca.cacerts import build_crl, build_issuing_certificate
from ca.ceremony import CeremonyError
from ca.ocsp import RESPONDER_LIFETIME, build_responder_certificate
from ca.revocation import Revocation, reason_from_name
from ca.settings import CaNames, IssuancePolicy

__all__ = [
    "REQUEST_ROLES",
    "CrlRequest",
    "build_request",
    "certificate_sha256",
    "issue_from_request",
    "requested_key",
    "sha256_hex",
    "sign_crl_request",
    "spki_sha256",
    "verify_root_crl",
]

T = TypeVar("T")
#: What the root signs: the issuing CA's key, and the OCSP responder's key for the answers
#: about what the root issued (RFC 6960 §4.2.2.2: a delegated responder certificate comes
#: from the CA whose certificates it answers for).
REQUEST_ROLES = ("issuing", "ocsp-root")


def sha256_hex(data: bytes) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize().hex()


def spki_sha256(public_key: object) -> str:
    """Hex SHA-256 of a public key's SubjectPublicKeyInfo (DER): a key's fingerprint."""
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    return sha256_hex(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def certificate_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def build_request(key: ec.EllipticCurvePrivateKey, subject: x509.Name) -> bytes:
    """A DER PKCS#10 request for ``key`` (RFC 2986 §4), self-signed with it."""
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(Encoding.DER)


def _load(data: bytes, loads: Sequence[Callable[[bytes], T]], refusal: str) -> T:
    """``data`` read by the first of ``loads`` (DER, then PEM) that accepts it."""
    for load in loads:
        try:
            return load(data)
        except ValueError:
            continue
    raise CeremonyError(refusal)


def requested_key(csr_der: bytes) -> ec.EllipticCurvePublicKey:
    """The EC public key of a request whose self-signature verifies (RFC 2986 §3);
    :class:`CeremonyError` otherwise."""
    loads = (x509.load_der_x509_csr, x509.load_pem_x509_csr)
    csr = _load(csr_der, loads, "request: not a PKCS#10 certificate request")
    if not csr.is_signature_valid:
        raise CeremonyError("request: its signature does not verify (no proof of possession)")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CeremonyError("request: not an EC key")
    return key


def issue_from_request(
    role: str,
    root_key: ec.EllipticCurvePrivateKey,
    root: x509.Certificate,
    csr_der: bytes,
    names: CaNames,
    policy: IssuancePolicy,
    *,
    ocsp_common_name: str,
    now: datetime,
    lifetime: timedelta,
) -> x509.Certificate:
    """The root's certificate for the key in ``csr_der`` as ``role`` (:data:`REQUEST_ROLES`),
    cut to the root's end; the OCSP responder's at most :data:`ca.ocsp.RESPONDER_LIFETIME`."""
    if role not in REQUEST_ROLES:
        raise CeremonyError(f"role {role[:40]!r}: one of {', '.join(REQUEST_ROLES)}")
    public_key = requested_key(csr_der)
    lifetime = min(lifetime, root.not_valid_after_utc - now)
    if role == "issuing":
        return build_issuing_certificate(root_key, root, public_key, names, policy, now, lifetime)
    return build_responder_certificate(
        root_key,
        root,
        public_key,
        names,
        ocsp_common_name,
        now=now,
        lifetime=min(RESPONDER_LIFETIME, lifetime),
    )


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class CrlRequest:
    """The content of the root's next CRL: for the root with certificate SHA-256
    ``root_sha256``, number ``crl_number``, entries ``revoked``."""

    root_sha256: str
    crl_number: int
    revoked: tuple[Revocation, ...] = ()

    def to_json(self) -> bytes:
        entries = [
            {
                "serial": format(r.serial, "x"),
                "revoked_at": r.revoked_at.isoformat(),
                "reason": r.reason.value,
                "invalidity_date": None if r.invalidity_date is None else str(r.invalidity_date),
            }
            for r in self.revoked
        ]
        body = {"root_sha256": self.root_sha256, "crl_number": self.crl_number, "revoked": entries}
        return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> CrlRequest:
        """A request as :meth:`to_json` writes it; :class:`CeremonyError` otherwise."""
        try:
            body = json.loads(data)
            revoked = tuple(
                Revocation(
                    serial=int(e["serial"], 16),
                    revoked_at=datetime.fromisoformat(e["revoked_at"]).astimezone(UTC),
                    reason=reason_from_name(e["reason"]),
                    invalidity_date=_time(e["invalidity_date"]),
                )
                for e in body["revoked"]
            )
            return cls(str(body["root_sha256"]), int(body["crl_number"]), revoked)
        except Exception as exc:  # any malformed field: one refusal naming it
            raise CeremonyError(
                f"CRL request: not as `qes ca request crl` writes it ({exc})"
            ) from None


def sign_crl_request(
    key: ec.EllipticCurvePrivateKey,
    root: x509.Certificate,
    request: CrlRequest,
    now: datetime,
    next_update: timedelta,
) -> x509.CertificateRevocationList:
    """The root's CRL for ``request`` (RFC 5280 §5): refused when it names another root."""
    if request.root_sha256 != certificate_sha256(root):
        raise CeremonyError("CRL request: made for another root certificate")
    return build_crl(key, root, now, next_update, request.revoked, crl_number=request.crl_number)


def verify_root_crl(
    der: bytes, roots: Sequence[x509.Certificate]
) -> tuple[x509.CertificateRevocationList, x509.Certificate]:
    """The CRL in ``der`` and which of ``roots`` signed it (RFC 5280 §6.3.3: issuer name and
    signature); :class:`CeremonyError` when none did or it has no nextUpdate or number."""
    crl = _load(der, (x509.load_der_x509_crl, x509.load_pem_x509_crl), "not a CRL")
    for root in roots:
        if crl.issuer == root.subject and crl.is_signature_valid(root.public_key()):  # type: ignore[arg-type]
            if crl.next_update_utc is None:
                raise CeremonyError("CRL: no nextUpdate (RFC 5280 §5.1.2.5)")
            try:
                crl.extensions.get_extension_for_class(x509.CRLNumber)
            except x509.ExtensionNotFound:
                raise CeremonyError("CRL: no CRL number (RFC 5280 §5.2.3)") from None
            return crl, root
    raise CeremonyError("CRL: not signed by the stored root")
