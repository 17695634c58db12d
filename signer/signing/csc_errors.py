"""CSC API errors (CSC API v1.0.4.0 §10.1, v2.0.0.2 §11.1): HTTP 400 or 401 with a JSON body
``{"error", "error_description"}``.

Each kind has a fixed ``error`` code and ``description`` (what the client sees), and a
``slug`` that names the reason in the transparency log's refusal entries. The exception text
is for the service log only.
"""

from __future__ import annotations

from signer.errors import RequestError


class CscError(RequestError):
    """Base of the CSC API's request errors."""

    slug = "csc-invalid-request"
    title = "Invalid CSC request"
    status = 400
    error = "invalid_request"
    description = "The request is invalid"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.title = cls.description  # the /problems/<slug> page of each kind


class CscInvalidToken(CscError):
    slug = "csc-invalid-token"
    status = 401
    error = "invalid_token"
    description = "The access token is missing, invalid or expired"


class CscMalformed(CscError):
    slug = "csc-malformed-request"
    description = "The request body is not a JSON object of this endpoint's parameters"


class CscInvalidParameter(CscError):
    """A parameter is missing or malformed; ``description`` names it (set per instance)."""

    slug = "csc-invalid-parameter"

    def __init__(self, parameter: str, detail: str = "") -> None:
        super().__init__(f"{parameter}: {detail}" if detail else parameter)
        self.description = f"Invalid parameter {parameter}"
        self.parameter = parameter


class UnknownEndpoint(CscError):
    slug = "csc-unknown-endpoint"
    status = 404
    description = "No such CSC API method"


class CredentialNotFound(CscError):
    """Unknown credential, or another identity's: the two are not told apart."""

    slug = "csc-credential-not-found"
    description = "Invalid parameter credentialID"


class CredentialExpired(CscError):
    slug = "csc-credential-expired"
    description = "The credential has expired"


class CredentialUsed(CscError):
    slug = "csc-credential-used"
    description = "The credential has already signed and its key is destroyed"


class TooManyCredentials(CscError):
    slug = "csc-too-many-credentials"
    description = "Too many unused credentials: use one or let them expire"


class InvalidSad(CscError):
    slug = "csc-invalid-sad"
    description = "Invalid SAD"


class SadAlreadyUsed(InvalidSad):
    slug = "csc-sad-used"
    description = "The SAD has already been used"


class SadExpired(InvalidSad):
    slug = "csc-sad-expired"
    description = "The SAD has expired"


class SadMissing(InvalidSad):
    slug = "csc-sad-missing"
    description = "Missing SAD: send the SAD from credentials/authorize, or a credential token"


class AuthenticationChanged(InvalidSad):
    """The SAD was issued to another authentication of the same person (acr/auth_time)."""

    slug = "csc-authentication-changed"
    description = "The SAD was authorized under another authentication"


class HashesNotAuthorized(InvalidSad):
    slug = "csc-hashes-not-authorized"
    description = "The hashes or hash algorithm are not the ones the SAD authorizes"


class TooManySignatures(InvalidSad):
    slug = "csc-too-many-signatures"
    description = "More signatures than authorized"


class CredentialTokenMismatch(CscError):
    """A v2 credential token (OAuth2 scope=credential) presented for another credential."""

    slug = "csc-credential-token-mismatch"
    description = "The credential token does not authorize this credential"


class UnsupportedSignAlgo(CscError):
    slug = "csc-unsupported-sign-algo"
    description = "Unsupported signAlgo"


class UnsupportedHashAlgo(CscError):
    slug = "csc-unsupported-hash-algo"
    description = "Unsupported hash algorithm"
