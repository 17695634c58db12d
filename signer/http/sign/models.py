"""Bodies of ``POST /api/v1/signing-requests`` as models: validation and the ``/openapi.json``
schemas (``signer.http.kit.models``). Printability, the digest's length, the PDF's header and
the webhook URL's form are checked by the handler after the model (``signer.http.sign.api``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from signer.http.kit.models import Base64, Body, HashAlgorithm
from signer.signing.longterm import PadesLevel
from signer.signing.pipeline import SignatureFormat

MAX_DOCUMENTS = 100
Profile = Literal["qes", "qualified", "advanced"]


class Document(Body):
    """label plus digest, or (format pades) label plus the PDF."""

    label: str = Field(min_length=1, max_length=200)
    digest: Base64 | None = None
    pdf: Base64 | None = None


class ExpectedSigner(Body):
    """The only person who may sign: ``{"subject": …}`` or ``{"email": …}``."""

    subject: str | None = Field(None, min_length=1, max_length=255)
    email: str | None = Field(None, min_length=1, max_length=254)


class SigningRequest(Body):
    """``POST /api/v1/signing-requests``: documents a person signs in the browser."""

    hash_algorithm: HashAlgorithm = "sha256"
    format: SignatureFormat = "cades"
    level: PadesLevel | None = Field(
        None,
        description="format pades only: the PAdES baseline level of the signed PDFs (ETSI EN"
        " 319 142-1 §6.3), as the level query of POST /api/v1/signatures/pdf; default b-t",
    )
    profile: Profile | None = None
    documents: list[Document] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    signer: ExpectedSigner | None = None
    redirect_uri: str = Field(min_length=1, max_length=2000, description="exactly a registered one")
    state: str = Field(min_length=1, max_length=512)
    acr: str | None = Field(None, min_length=1, max_length=255, description="minimum assurance")
    webhook_url: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        json_schema_extra={"format": "uri"},
        description="https (http on loopback): POSTed {id, state, status} when the request"
        " ends, X-Qes-Timestamp and X-Qes-Signature-256 (HMAC-SHA-256 of timestamp.body, key"
        " HMAC-SHA-256(SHA-256(client_secret), 'qes-signer webhook v1'))",
    )
