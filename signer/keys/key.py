"""An HSM-resident EC private key behind cryptography's ``EllipticCurvePrivateKey`` interface.

``ca/`` and the signature formats receive these objects and never learn what an HSM is
(DESIGN.md, "HSM keys reach ca/ as objects…"). ``CertificateBuilder.sign()`` calls
:meth:`HsmEcPrivateKey.sign`, which hashes in software and signs the digest with ``CKM_ECDSA``
(SoftHSM 2.6 has no ``CKM_ECDSA_SHA256``; STANDARDS.md §8). PKCS#11 returns raw ``r‖s``
(PKCS#11 v3.0 Mechanisms §2.3.1); CMS, X.509 and CSC want DER ``Ecdsa-Sig-Value`` (RFC 3279
§2.2.3), so the value is re-encoded.

A key may only be used inside an ``Hsm.run`` callback. It signs on the session that the calling
thread holds: object handles are valid in every session of the application (PKCS#11 v2.40 §2.3),
but python-pkcs11 binds each object to one session, so on another session the object is looked
up once (by CKA_ID or CKA_LABEL) and the result cached per session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from asn1crypto.core import OctetString
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from pkcs11 import Mechanism
from pkcs11.exceptions import KeyHandleInvalid, ObjectHandleInvalid
from pkcs11.util.ec import encode_named_curve_parameters

from signer import metrics
from signer.errors import HsmUnavailable
from signer.keys._context import current_session, pkcs11_errors_as_unavailable
from signer.keys.types import Curve, KeyEvidence

EC_PARAMS: dict[Curve, bytes] = {
    "P-256": encode_named_curve_parameters("secp256r1"),
    "P-384": encode_named_curve_parameters("secp384r1"),
}
_CURVES: dict[bytes, ec.EllipticCurve] = {
    EC_PARAMS["P-256"]: ec.SECP256R1(),
    EC_PARAMS["P-384"]: ec.SECP384R1(),
}
_DIGEST_SIZES = frozenset({28, 32, 48, 64})  # SHA-224/256/384/512 and SHA3 equivalents

Locate = Callable[[Any], Any]  # HsmSession -> pkcs11.PrivateKey bound to that session


def public_key_from_attributes(ec_params: bytes, ec_point: bytes) -> ec.EllipticCurvePublicKey:
    """Build the public key from CKA_EC_PARAMS and CKA_EC_POINT (PKCS#11 v2.40 §2.3.3).

    CKA_EC_POINT is specified as DER OCTET STRING, but some tokens return the raw X9.62 point;
    both are accepted (STANDARDS.md §8). The raw form is recognised by its exact length.
    """
    curve = _CURVES.get(bytes(ec_params))
    if curve is None:
        raise HsmUnavailable("HSM key is on an unsupported curve (only P-256 and P-384)")
    coord = (curve.key_size + 7) // 8
    point = bytes(ec_point)
    if len(point) not in (1 + coord, 1 + 2 * coord):
        try:
            point = bytes(OctetString.load(point).native)
        except ValueError as exc:
            raise HsmUnavailable("HSM returned a malformed CKA_EC_POINT") from exc
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except ValueError as exc:
        raise HsmUnavailable("HSM returned an invalid CKA_EC_POINT") from exc


def digest_for(data: bytes, algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
    """The digest that CKM_ECDSA signs: ``data`` hashed in software, or ``data`` if Prehashed."""
    if not isinstance(algorithm, ec.ECDSA):
        raise UnsupportedAlgorithm("HSM EC keys sign with ECDSA only")
    if getattr(algorithm, "deterministic_signing", False):
        raise UnsupportedAlgorithm("CKM_ECDSA is randomized; RFC 6979 signing is not available")
    hash_algorithm = algorithm.algorithm
    if isinstance(hash_algorithm, Prehashed):
        if len(data) != hash_algorithm.digest_size:
            raise ValueError("the provided data must be the same length as the hash algorithm")
        return bytes(data)
    hasher = hashes.Hash(hash_algorithm)
    hasher.update(data)
    return hasher.finalize()


class HsmEcPrivateKey(ec.EllipticCurvePrivateKey):
    """A non-extractable EC private key in the HSM; ``sign`` runs C_Sign with CKM_ECDSA."""

    def __init__(
        self,
        *,
        session: Any,
        p11_key: Any,
        public_key: ec.EllipticCurvePublicKey,
        locate: Locate,
        name: str,
        on_invalid: Callable[[Any], None] | None = None,
    ) -> None:
        self._bound: dict[Any, Any] = {session: p11_key}
        self._public = public_key
        self._locate = locate
        self._name = name
        self._on_invalid = on_invalid
        self._coord = (public_key.curve.key_size + 7) // 8

    def __repr__(self) -> str:
        return f"<HsmEcPrivateKey {self._name} {self._public.curve.name}>"

    # -- signing ------------------------------------------------------------------------------

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """Hash ``data`` in software (or take it as Prehashed) and sign; returns DER."""
        return self.sign_digest(digest_for(bytes(data), signature_algorithm))

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign an already-computed digest with CKM_ECDSA; returns a DER Ecdsa-Sig-Value.

        A digest longer than the group order is truncated by the token to its leftmost bits
        (PKCS#11 v3.0 Mechanisms §2.3.1; FIPS 186-4 §6.4), as cryptography's verifier expects.
        """
        digest = bytes(digest)
        if len(digest) not in _DIGEST_SIZES:
            raise ValueError(f"digest of {len(digest)} bytes: expected one of 28, 32, 48, 64")
        raw = self._sign_raw(digest)
        if len(raw) != 2 * self._coord:
            raise HsmUnavailable(f"CKM_ECDSA returned {len(raw)} bytes, expected {2 * self._coord}")
        r = int.from_bytes(raw[: self._coord], "big")
        s = int.from_bytes(raw[self._coord :], "big")
        return encode_dss_signature(r, s)

    @metrics.timed(metrics.HSM_SECONDS, "sign")
    @pkcs11_errors_as_unavailable
    def _sign_raw(self, digest: bytes) -> bytes:
        session = current_session()
        if session is None:
            raise RuntimeError(f"{self!r} used outside an Hsm.run callback")
        p11_key = self.bound_object(session)
        try:
            return bytes(p11_key.sign(digest, mechanism=Mechanism.ECDSA))
        except (ObjectHandleInvalid, KeyHandleInvalid):
            self._bound.pop(session, None)
            if self._on_invalid is not None:
                self._on_invalid(session)
            raise

    def bound_object(self, session: Any) -> Any:
        """The python-pkcs11 key object bound to ``session`` (looked up once per session)."""
        p11_key = self._bound.get(session)
        if p11_key is None:
            p11_key = self._locate(session)
            self._bound[session] = p11_key
        return p11_key

    # -- public half and metadata ------------------------------------------------------------

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    # -- what a non-extractable key cannot do ---------------------------------------------------

    def private_numbers(self) -> NoReturn:
        raise UnsupportedAlgorithm("HSM private key is non-extractable (CKA_EXTRACTABLE=false)")

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> NoReturn:
        raise UnsupportedAlgorithm("HSM private key is non-extractable (CKA_EXTRACTABLE=false)")

    def exchange(self, algorithm: Any, peer_public_key: Any) -> NoReturn:
        raise UnsupportedAlgorithm("HSM signing keys are not usable for ECDH")

    def __copy__(self) -> HsmEcPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> HsmEcPrivateKey:
        return self


@dataclass(frozen=True, slots=True)
class CredentialKey:
    """A CSC credential's key pair: token objects sharing one CKA_LABEL (hsm.credential)."""

    private: HsmEcPrivateKey
    evidence: KeyEvidence
    label: str


@dataclass(frozen=True, slots=True)
class EphemeralKey:
    """One request's key pair: session objects sharing a random CKA_ID."""

    private: HsmEcPrivateKey
    evidence: KeyEvidence
    key_id: bytes
    private_handle: int
    public_handle: int
