"""Bodies of the batch API (``POST /api/v1/signatures``) as models: validation and the
``/openapi.json`` schemas (``signer.http.kit.models``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from signer.http.kit.models import Base64, Body, HashAlgorithm
from signer.policy.enforcement import MAX_REASON
from signer.signing.pipeline import SignatureFormat


class SignatureRequest(Body):
    """``POST /api/v1/signatures``: digests to sign with one fresh key and certificate."""

    hash_algorithm: HashAlgorithm
    hashes: list[Base64] = Field(min_length=1, description="Digests, base64; signed in this order")
    profile: str | None = Field(
        None,
        description="Signature level (qes, qualified or advanced); default: the identity's."
        " A level the identity may not use is refused by policy (403 profile-not-allowed)",
    )
    format: SignatureFormat = Field(
        "raw",
        description="raw: DER ECDSA value per digest; cades: detached CAdES B-T (DER CMS) per"
        " document digest; cades-b-lt: the same at CAdES B-LT (ETSI EN 319 122-1), the TSA"
        " certificate and the service's CRLs in the SignedData's certificates and crls; pades:"
        " the CMS for a PAdES B-T signature field (/SubFilter ETSI.CAdES.detached) per digest"
        " of a PDF's /ByteRange",
    )
    labels: list[str] | None = Field(
        None,
        description="One label per digest (at most 200 characters), shown to approvers when the"
        " policy holds the request for m-of-n approval (default: 'digest N')",
    )
    reason: str | None = Field(
        None, description="Why (at most 1000 characters), shown to approvers when held"
    )
    webhook_url: str | None = Field(
        None,
        description="https (or http on loopback): told when a held request ends; the 202"
        " carries the webhook secret, once",
    )


# -- responses: their schemas in /openapi.json; tests check real answers against them ---------


class Answer(BaseModel):
    """A JSON response body: the fields every answer has; more may follow (not refused)."""


class SignatureResponse(Answer):
    """``201`` of ``POST /api/v1/signatures`` (and ``200``, its replay)."""

    serial: str = Field(description="certificate serial, lowercase hex")
    profile: str | None = None
    format: SignatureFormat | None = None
    signature_algorithm: Literal["ecdsa"] | None = None
    signatures: list[Base64] = Field(
        description="Per digest, input order: DER Ecdsa-Sig-Value (raw) or DER CMS ContentInfo"
        " with its signature-time-stamp (cades, cades-b-lt, pades)"
    )
    certificate: str = Field(description="PEM")
    chain: str = Field(description="PEM: end entity, issuing CA, root")
    not_before: datetime | None = None
    not_after: datetime | None = None
    record_url: str = Field(json_schema_extra={"format": "uri"})
    key: dict[str, Any] | None = None


class TrustedGeneration(Answer):
    """One generation of the root, issuing CA or built-in TSA, with the period in which it
    issued (``qes ca rollover`` / ``qes ca switch``; issue 15 item 2)."""

    role: Literal["root", "issuing", "tsa"]
    generation: int = Field(ge=1)
    state: Literal["pending", "current", "past"] = Field(
        description="pending: made, not yet used (trust it before the switch); current: in"
        " use; past: replaced, still trusted for what it made"
    )
    issued_from: datetime | None = Field(description="when it began to issue; null: pending")
    issued_until: datetime | None = Field(description="when it stopped; null: not yet")
    certificate: str = Field(description="PEM")


class TrustBundle(Answer):
    """``GET /api/v1/trust-bundle`` as JSON."""

    root: str = Field(description="PEM: the root CA certificate")
    issuing_ca: str = Field(description="PEM: the current issuing CA")
    tsa: list[str] = Field(
        description="PEM: the built-in TSA's current certificate, or the external TSA's trust"
        " anchors and intermediates"
    )
    generations: list[TrustedGeneration] = Field(
        default_factory=list,
        description="Every root, issuing CA and built-in TSA certificate the service ever had"
        " or has pending, oldest first per role, with the period in which it issued: what"
        " earlier signatures and time-stamps chain to",
    )
    pem: str = Field(description="All of the above, concatenated, each certificate once")


class CertificateRecord(Answer):
    """One issued certificate's record (``GET /api/v1/certificates[/{serial}]``)."""

    serial: str
    status: Literal["issued", "completed", "failed"]
    subject_dn: str
    purged: bool = Field(False, description="personal payload erased after retention (tombstone)")


class CertificatePage(Answer):
    """A page of ``GET /api/v1/certificates``."""

    items: list[CertificateRecord]
    next_cursor: str | None
    notice: str | None = Field(
        None,
        description="with an e-mail filter, while records made before the e-mail column still"
        " lack it: which ones may be missing",
    )


#: A named target field of a suspension: a non-blank string.
_TargetName = Annotated[str, Field(min_length=1, pattern=r"\S")]


class SuspensionTarget(Body):
    """``POST /api/v1/admin/suspensions[/resume]``: whom the kill switch stops (or lets go).
    Scope identity takes issuer and subject, scope client takes client_id, scope all neither."""

    scope: Literal["identity", "client", "all"]
    issuer: _TargetName | None = Field(None, description="scope identity: the token's iss")
    subject: _TargetName | None = Field(None, description="scope identity: the token's sub")
    client_id: _TargetName | None = Field(None, description="scope client")
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON, pattern=r"\S")] | None = None
