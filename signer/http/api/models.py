"""Bodies of the batch API (``POST /api/v1/signatures``) as models: validation and the
``/openapi.json`` schemas (``signer.http.kit.models``)."""

from __future__ import annotations

from pydantic import Field

from signer.http.kit.models import Base64, Body, HashAlgorithm
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
        " document digest; pades: the CMS for a PAdES B-T signature field (/SubFilter"
        " ETSI.CAdES.detached) per digest of a PDF's /ByteRange",
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
