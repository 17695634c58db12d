"""Checks of an RFC 3161 time-stamp reply from an external TSA, before its token is embedded.

A token is embedded in a signature that a relying party will validate years later, so it is
accepted only when everything a validator would check holds now (RFC 3161 §2.4.2, §4; RFC 5816;
RFC 5652 §5.4-5.6):

- PKIStatus granted (or grantedWithMods) and a token present;
- a SignedData whose eContentType is id-ct-TSTInfo, TSTInfo version 1, the messageImprint
  equal to what was sent (algorithm and digest), the nonce echoed;
- exactly one SignerInfo, its certificate among the token's ``certificates`` (certReq was
  true), signed attributes content-type id-ct-TSTInfo and message-digest over the TSTInfo, and
  a signing-certificate(-v2) whose first ESSCertID(v2) hashes that certificate (RFC 5816 §2.2.1,
  RFC 2634 §5.4) and names its issuer and serial when issuerSerial is given;
- the signature over the signed attributes valid for that certificate's key (ECDSA, RSA
  PKCS #1 v1.5, RSA-PSS);
- the TSA certificate with a critical extendedKeyUsage of only timeStamping (RFC 3161 §2.3) and
  a path to one of ``trust_anchors`` valid at genTime (cryptography's RFC 5280 path builder,
  web-PKI rules for the CA certificates).

Synchronous and free of I/O: it runs on the HSM worker thread, after the HTTP round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ca.tsa import TimeStampResp

__all__ = ["TokenRejected", "VerifiedToken", "verify_reply"]

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,  # ESSCertID (v1) only, RFC 2634 §5.4
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class TokenRejected(ValueError):
    """The reply is not a token this service may embed; the message says why."""


@dataclass(frozen=True)
class VerifiedToken:
    token: bytes  # DER ContentInfo, exactly as the TSA sent it
    gen_time: datetime
    certificate: x509.Certificate


def verify_reply(
    reply: bytes,
    *,
    digest: bytes,
    hash_algorithm: str,
    nonce: int,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
) -> VerifiedToken:
    """Check a DER TimeStampResp answering our request; raise :class:`TokenRejected`.

    ``intermediates`` are CA certificates offered for path building besides those in the
    token (a TSA that sends only its own certificate, as RFC 3161 §2.4.1 certReq permits)."""
    try:
        return _verify(reply, digest, hash_algorithm, nonce, trust_anchors, intermediates)
    except (ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, TokenRejected):
            raise
        raise TokenRejected(f"malformed time-stamp reply ({exc})") from exc


def _verify(
    reply: bytes,
    digest: bytes,
    hash_algorithm: str,
    nonce: int,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
) -> VerifiedToken:
    response = TimeStampResp.load(reply, strict=True)
    status = response["status"]
    if status["status"].native not in ("granted", "granted_with_mods"):
        raise TokenRejected(
            f"TSA answered {status['status'].native}: {status['status_string'].native} "
            f"{status['fail_info'].native}"
        )
    # The token's own encoding, taken before any field is read: asn1crypto re-encodes values
    # it has parsed, which is slow and could alter a non-DER token.
    token_der = response["time_stamp_token"].dump()
    if not token_der:
        raise TokenRejected("reply holds no token")
    token = cms.ContentInfo.load(token_der, strict=True)
    if token["content_type"].native != "signed_data":
        raise TokenRejected("token is not a SignedData")
    signed = token["content"]
    encap = signed["encap_content_info"]
    if encap["content_type"].native != "tst_info":
        raise TokenRejected("token content is not a TSTInfo")
    tst_der = encap["content"].contents
    info = tsp.TSTInfo.load(tst_der, strict=True)
    _check_info(info, digest, hash_algorithm, nonce)
    signer_info, certificate, others = _signer(signed)
    signed_attrs = signer_info["signed_attrs"].dump()  # before reading it: see token_der
    _check_signed_attributes(signer_info, tst_der, certificate)
    _check_signature(signer_info, signed_attrs, certificate)
    gen_time = info["gen_time"].native
    _check_path(certificate, [*others, *intermediates], anchors, gen_time)
    return VerifiedToken(token_der, gen_time, certificate)


def _check_info(info: tsp.TSTInfo, digest: bytes, hash_algorithm: str, nonce: int) -> None:
    """TSTInfo against the request (RFC 3161 §2.4.2: "MUST be the same" for imprint, nonce)."""
    if info["version"].native != "v1":
        raise TokenRejected("TSTInfo version is not 1")
    imprint = info["message_imprint"]
    if imprint["hash_algorithm"]["algorithm"].native != hash_algorithm:
        raise TokenRejected("token imprint uses another hash algorithm")
    if imprint["hashed_message"].native != digest:
        raise TokenRejected("token imprint does not match the digest sent")
    if info["nonce"].native != nonce:
        raise TokenRejected("token does not echo the nonce sent")


def _signer(
    signed: cms.SignedData,
) -> tuple[cms.SignerInfo, x509.Certificate, list[x509.Certificate]]:
    """The only SignerInfo, its certificate from ``certificates``, and the other certificates."""
    infos = list(signed["signer_infos"])
    if len(infos) != 1:
        raise TokenRejected(f"token has {len(infos)} SignerInfos, not 1")
    (signer_info,) = infos
    found = [
        (choice.chosen, x509.load_der_x509_certificate(choice.chosen.dump()))
        for choice in signed["certificates"] or []
        if choice.name == "certificate"
    ]
    sid = signer_info["sid"]
    for asn1_cert, cert in found:
        if sid.name == "issuer_and_serial_number":
            match = (
                asn1_cert.issuer == sid.chosen["issuer"]
                and asn1_cert.serial_number == sid.chosen["serial_number"].native
            )
        else:
            match = asn1_cert.key_identifier == sid.chosen.native
        if match:
            return signer_info, cert, [c for _, c in found if c is not cert]
    raise TokenRejected("the TSA certificate is not in the token (certReq was true)")


def _check_signed_attributes(
    signer_info: cms.SignerInfo, tst_der: bytes, certificate: x509.Certificate
) -> None:
    """content-type, message-digest (RFC 5652 §11.1-11.2), ESSCertID(v2) (RFC 5816 §2.2.1)."""
    attributes: dict[str, list[object]] = {}
    for attribute in signer_info["signed_attrs"]:
        attributes.setdefault(attribute["type"].native, []).extend(attribute["values"])
    if [v.native for v in attributes.get("content_type", [])] != ["tst_info"]:  # type: ignore[attr-defined]
        raise TokenRejected("signed content-type is not id-ct-TSTInfo")
    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    if [v.native for v in attributes.get("message_digest", [])] != [  # type: ignore[attr-defined]
        _hash(digest_name, tst_der)
    ]:
        raise TokenRejected("signed message-digest does not match the TSTInfo")
    v2 = attributes.get("signing_certificate_v2", [])
    v1 = attributes.get("signing_certificate", [])
    if len(v2) + len(v1) != 1:
        raise TokenRejected("token needs exactly one signing-certificate(-v2) attribute")
    (value,) = v2 or v1
    ess_id = value["certs"][0]  # type: ignore[index]
    algorithm = ess_id["hash_algorithm"]["algorithm"].native if v2 else "sha1"
    cert_der = certificate.public_bytes(Encoding.DER)
    if ess_id["cert_hash"].native != _hash(algorithm, cert_der):
        raise TokenRejected("ESSCertID does not identify the TSA certificate")
    issuer_serial = ess_id["issuer_serial"]
    if issuer_serial.native is not None:
        issuer = asn1_x509.Certificate.load(cert_der).issuer
        names = [n.chosen for n in issuer_serial["issuer"] if n.name == "directory_name"]
        if issuer_serial["serial_number"].native != certificate.serial_number or names != [issuer]:
            raise TokenRejected("ESSCertID names another issuer or serial number")


def _check_signature(
    signer_info: cms.SignerInfo, signed_attrs: bytes, certificate: x509.Certificate
) -> None:
    """The SignerInfo signature over the DER SET OF signed attributes (RFC 5652 §5.4)."""
    message = b"\x31" + signed_attrs[1:]  # [0] IMPLICIT -> SET OF, same encoding otherwise
    signature = signer_info["signature"].native
    algorithm = signer_info["signature_algorithm"]
    hash_name = signer_info["digest_algorithm"]["algorithm"].native
    key = certificate.public_key()
    try:
        chosen = _HASHES[hash_name]()
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm.signature_algo == "ecdsa":
            key.verify(signature, message, ec.ECDSA(chosen))
        elif isinstance(key, rsa.RSAPublicKey) and algorithm.signature_algo == "rsassa_pkcs1v15":
            key.verify(signature, message, padding.PKCS1v15(), chosen)
        elif isinstance(key, rsa.RSAPublicKey) and algorithm.signature_algo == "rsassa_pss":
            params = algorithm["parameters"]
            mgf_hash = _HASHES[params["mask_gen_algorithm"]["parameters"]["algorithm"].native]()
            pss = padding.PSS(padding.MGF1(mgf_hash), params["salt_length"].native)
            key.verify(
                signature, message, pss, _HASHES[params["hash_algorithm"]["algorithm"].native]()
            )
        else:
            raise TokenRejected(f"unsupported token signature {algorithm['algorithm'].native}")
    except InvalidSignature as exc:
        raise TokenRejected("the token's signature is not valid") from exc
    except KeyError as exc:
        raise TokenRejected(f"unsupported token digest algorithm {exc}") from exc


def _check_path(
    certificate: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    gen_time: datetime,
) -> None:
    """EKU timeStamping only and critical (RFC 3161 §2.3); a path to an anchor at genTime."""

    def time_stamping_only(_: object, __: x509.Certificate, eku: x509.ExtendedKeyUsage) -> None:
        if list(eku) != [ExtendedKeyUsageOID.TIME_STAMPING]:
            raise ValueError("extendedKeyUsage must be timeStamping only")

    leaf_policy = ExtensionPolicy.permit_all().require_present(
        x509.ExtendedKeyUsage, Criticality.CRITICAL, time_stamping_only
    )
    verifier = (
        PolicyBuilder()
        .store(Store(list(anchors)))
        .time(gen_time)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy)
        .build_client_verifier()
    )
    try:
        verifier.verify(certificate, intermediates)
    except VerificationError as exc:
        raise TokenRejected(f"TSA certificate not trusted at genTime: {exc}") from exc


def _hash(name: str, data: bytes) -> bytes:
    try:
        digest = hashes.Hash(_HASHES[name]())
    except KeyError as exc:
        raise TokenRejected(f"unsupported digest algorithm {name}") from exc
    digest.update(data)
    return digest.finalize()
