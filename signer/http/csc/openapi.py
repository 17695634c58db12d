"""The CSC API's part of ``/openapi.json`` (issue 6): both versions, their bodies and errors."""

from __future__ import annotations

from typing import Any

from signer.http.csc.models import BODIES
from signer.http.kit.models import ref

_B64_LIST = {"type": "array", "items": {"type": "string", "contentEncoding": "base64"}}
_ERROR = {
    "description": "CSC error (400 request, 401 access token; 429/503/500 same shape)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error", "error_description"],
                "properties": {
                    "error": {
                        "enum": [
                            "invalid_request",
                            "invalid_token",
                            "access_denied",
                            "temporarily_unavailable",
                            "server_error",
                        ]
                    },
                    "error_description": {"type": "string"},
                },
            }
        }
    },
}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


#: method -> (summary, description, answer schema); the request body's schema is the method's
#: model (``signer.http.csc.models.BODIES``), a component of the document.
_METHODS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "info": (
        "Service information: specs, methods, oauth2/oauth2Issuer (the v2 OAuth2 base URL), "
        "signAlgorithms (v2)",
        "No authentication. GET is accepted too.",
        _object({"specs": {"type": "string"}, "methods": {"type": "array"}}),
    ),
    "credentials/list": (
        "Reserve a one-shot credential ID for the bearer and list it (no HSM work)",
        "The same ID until it is used or expires. Its key and 10-minute certificate are made by "
        "the first credentials/info or credentials/authorize (at most "
        "csc.max_active_credentials unused ones per identity); it expires with its certificate.",
        _object({"credentialIDs": {"type": "array", "items": {"type": "string"}}}),
    ),
    "credentials/info": (
        "The credential's certificate chain (end-entity first), key algorithms, SCAL 2, multisign;"
        " a reserved credential's key and certificate are made on the first call",
        "Only the owner's credentials; another identity's is 'Invalid parameter credentialID'.",
        _object({"key": {"type": "object"}, "cert": {"type": "object"}, "SCAL": {"const": "2"}}),
    ),
    "credentials/authorize": (
        "A single-use SAD bound to the credential, the bearer's authentication and exactly "
        "these hashes",
        "numSignatures must equal the number of hashes (hash, v1; hashes, v2); the hash "
        "algorithm is hashAlgorithmOID (v2) or follows from the digest length.",
        _object({"SAD": {"type": "string"}, "expiresIn": {"type": "integer"}}),
    ),
    "signatures/signHash": (
        "DER ECDSA signatures of the authorized hashes, in input order; the key is then destroyed",
        "The SAD in the body with the owner's bearer token, or a v2 credential token (qcsc_…) "
        "as the bearer token without SAD. Refused without signing: a used, expired or unknown "
        "SAD, other hashes or more of them than authorized, another identity's credential, an "
        "expired or used credential, an unsupported signAlgo.",
        _object({"signatures": _B64_LIST}),
    ),
    "signatures/timestamp": (
        "An RFC 3161 time-stamp token over a hash (built-in or configured external TSA)",
        "nonce (hex) is echoed in the token.",
        _object({"timestamp": {"type": "string", "contentEncoding": "base64"}}),
    ),
}


def csc_paths() -> dict[str, Any]:
    """``POST /csc/{v1|v2}/{method}`` for every method (v1.0.4.0 and v2.0.0.2 field names)."""
    paths: dict[str, Any] = {}
    for version in ("v1", "v2"):
        for method, (summary, description, answer) in _METHODS.items():
            body = ref(BODIES[method])
            paths[f"/csc/{version}/{method}"] = {
                "post": {
                    "summary": f"CSC {version}: {summary}",
                    "description": description,
                    "tags": ["CSC API"],
                    "security": [] if method == "info" else [{"bearer": []}, {"dpop": []}],
                    "requestBody": {"content": {"application/json": {"schema": body}}},
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {"application/json": {"schema": answer}},
                        },
                        "400": _ERROR,
                        "401": _ERROR,
                        **({} if method == "info" else {"429": _ERROR}),  # signing policy limit
                        "503": _ERROR,
                    },
                }
            }
        paths[f"/csc/{version}/info"]["get"] = {
            "summary": f"CSC {version}: the service's information (also by GET)",
            "tags": ["CSC API"],
            "security": [],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": _METHODS["info"][2]}},
                }
            },
        }
    return paths
