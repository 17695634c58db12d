"""Bodies of the CSC API methods (v1.0.4.0 §11, v2.0.0.2 §11) as models: the types of every
parameter, checked before a handler reads it, and the request schemas of ``/openapi.json``.

Both generations' names are fields (v1 ``hash``/``hashAlgo``, v2 ``hashes``/
``hashAlgorithmOID``). Unknown parameters are ignored, as CSC clients send optional ones this
service does not use (``clientData``, ``lang``, ...). What depends on several parameters (one
of ``hash``/``hashes``, numSignatures equal to their count, signAlgo agreeing with the hash
algorithm) and the supported OIDs, each with its own CSC error, are the handlers' checks.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from signer.http.kit.models import Base64
from signer.signing.csc import EC_PUBLIC_KEY, ECDSA_WITH, HASH_OIDS

#: A CSC string parameter: non-empty, at most 1024 characters.
Text = Annotated[str, Field(min_length=1, max_length=1024)]
CredentialId = Annotated[str, Field(min_length=1, max_length=64)]
HashAlgorithmOid = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        description="digest algorithm OID",
        json_schema_extra={"enum": list(HASH_OIDS.values())},
    ),
]
Hashes = Annotated[list[Base64], Field(min_length=1)]
Certificates = Literal["none", "single", "chain"]


class CscBody(BaseModel):
    """A CSC request body: exact JSON types; unknown parameters ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class CscInfoRequest(CscBody):
    lang: str | None = None


class CscCredentialsListRequest(CscBody):
    userID: Text | None = None
    credentialInfo: bool = False
    certificates: Certificates = "single"
    certInfo: bool = False


class CscCredentialsInfoRequest(CscBody):
    credentialID: CredentialId
    certificates: Certificates = "single"
    certInfo: bool = False


class CscAuthorizeRequest(CscBody):
    """numSignatures must equal the number of hashes (``hash``, v1; ``hashes``, v2); the hash
    algorithm is hashAlgorithmOID (v2) or follows from the digest length."""

    credentialID: CredentialId
    hash: Hashes | None = None
    hashes: Hashes | None = None
    numSignatures: int = Field(ge=1)
    hashAlgo: HashAlgorithmOid | None = None
    hashAlgorithmOID: HashAlgorithmOid | None = None


class CscSignHashRequest(CscBody):
    """The SAD in the body with the owner's bearer token, or a v2 credential token (qcsc_…) as
    the bearer token without SAD."""

    credentialID: CredentialId
    operationMode: str = Field("S", json_schema_extra={"enum": ["S"]})
    hash: Hashes | None = None
    hashes: Hashes | None = None
    signAlgo: Text = Field(
        description="ecdsa-with-SHA256/384/512, or (v2) id-ecPublicKey with hashAlgorithmOID",
        json_schema_extra={"enum": [*ECDSA_WITH, EC_PUBLIC_KEY]},
    )
    signAlgoParams: str | None = Field(None, description="ECDSA takes none (empty or absent)")
    hashAlgo: HashAlgorithmOid | None = None
    hashAlgorithmOID: HashAlgorithmOid | None = None
    SAD: Text | None = None


class CscTimestampRequest(CscBody):
    """nonce (hex) is echoed in the token."""

    hash: Annotated[Base64, Field(min_length=1, max_length=1024)]
    hashAlgo: HashAlgorithmOid | None = None
    hashAlgorithmOID: HashAlgorithmOid | None = None
    nonce: Text | None = Field(None, pattern="^[0-9a-fA-F]+$")


#: The body model of each method (``POST /csc/{v1|v2}/{method}``).
BODIES: dict[str, type[CscBody]] = {
    "info": CscInfoRequest,
    "credentials/list": CscCredentialsListRequest,
    "credentials/info": CscCredentialsInfoRequest,
    "credentials/authorize": CscAuthorizeRequest,
    "signatures/signHash": CscSignHashRequest,
    "signatures/timestamp": CscTimestampRequest,
}
