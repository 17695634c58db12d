"""The OpenAPI 3.1 description of every endpoint, its bodies and its errors.

Built from the same problem kinds the middleware renders, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from ca.logentry import ADMIN_ACTIONS
from signer.errors import (
    DatabaseUnavailable,
    HsmUnavailable,
    KeyNotDestroyed,
    KeyPolicyViolation,
    SignerError,
)
from signer.flows import websign as flow
from signer.flows.approvals import (
    AlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    DigestsMismatch,
    NotAnApprover,
    NotPending,
    SelfApproval,
)
from signer.flows.registry import InvalidClient, OutOfScope
from signer.formats import PdfError
from signer.http.api.admin import POLICY_ERRORS, admin_paths
from signer.http.api.models import (
    CertificatePage,
    CertificateRecord,
    SignatureResponse,
    SuspensionTarget,
    TrustBundle,
)
from signer.http.api.models import SignatureRequest as SignatureBody
from signer.http.api.ocsp import REQUEST_TYPE as OCSP_REQUEST
from signer.http.api.ocsp import RESPONSE_TYPE as OCSP_RESPONSE
from signer.http.api.ocsp import OcspRequestExpected
from signer.http.api.tsa import (
    MAX_QUERY_OCTETS,
    QUERY_TYPE,
    REPLY_TYPE,
    NoBuiltinTsa,
    TimeStampQueryExpected,
)
from signer.http.approvals.models import Decision
from signer.http.csc import oauth2_views as csc_oauth2
from signer.http.csc.models import BODIES
from signer.http.csc.openapi import csc_paths
from signer.http.kit.contract import add_edge_answers, only_served, served_operations
from signer.http.kit.links import PEM_CHAIN
from signer.http.kit.models import Problem, schemas
from signer.http.kit.models import ref as ref_to
from signer.http.kit.problems import (
    AuditorRoleRequired,
    BodyTooLarge,
    Forbidden,
    IdempotencyInProgress,
    IdempotencyMismatch,
    IdpUnreachable,
    InvalidLogQuery,
    InvalidRequest,
    LogSizeUnavailable,
    MalformedJson,
    NoCheckpoint,
    NoDigests,
    NotFound,
    TokenReplayed,
    TooManyDigests,
    Unauthenticated,
    UnsupportedAlgorithm,
    UnsupportedFormat,
    UnsupportedMediaType,
    WrongDigestLength,
)
from signer.http.kit.state import SERVICES, Services
from signer.http.sign.models import SigningRequest
from signer.settings.config import ServerSettings
from signer.signing.pipeline import ProfileNotAllowed, SubjectNotIssuable
from signer.signing.timestamping import TimeStampClockSkew, TimeStampUnavailable

PROBLEM = {"$ref": "#/components/schemas/Problem"}
#: Response bodies whose schemas come from models (``signer.http.api.models``).
ANSWERS: tuple[type[BaseModel], ...] = (
    SignatureResponse,
    TrustBundle,
    CertificateRecord,
    CertificatePage,
)
#: Request bodies whose schemas come from models, by surface.
BODY_MODELS: tuple[type[BaseModel], ...] = (
    SignatureBody,
    SuspensionTarget,
    SigningRequest,
    Decision,
    *BODIES.values(),
)
_SIGN_ERRORS: list[type[SignerError]] = [
    MalformedJson,
    InvalidRequest,
    Unauthenticated,
    TokenReplayed,
    Forbidden,
    SubjectNotIssuable,
    ProfileNotAllowed,
    IdempotencyInProgress,
    BodyTooLarge,
    UnsupportedMediaType,
    IdempotencyMismatch,
    UnsupportedAlgorithm,
    UnsupportedFormat,
    WrongDigestLength,
    NoDigests,
    TooManyDigests,
    HsmUnavailable,
    KeyPolicyViolation,
    KeyNotDestroyed,
    DatabaseUnavailable,
    IdpUnreachable,
    TimeStampUnavailable,
    TimeStampClockSkew,
    *POLICY_ERRORS,
]
_TSA_ERRORS: list[type[SignerError]] = [
    NoBuiltinTsa,
    BodyTooLarge,
    TimeStampQueryExpected,
    HsmUnavailable,
]
_OCSP_ERRORS: list[type[SignerError]] = [BodyTooLarge, OcspRequestExpected]
_AUDIT_ERRORS: list[type[SignerError]] = [
    InvalidRequest,
    Unauthenticated,
    AuditorRoleRequired,
    NotFound,
    DatabaseUnavailable,
    IdpUnreachable,
]


def _errors(kinds: list[type[SignerError]]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for kind in kinds:
        by_status.setdefault(kind.status, []).append(kind.slug)
    return {
        str(status): {
            "description": "Problem kinds: " + ", ".join(f"`/problems/{s}`" for s in slugs),
            "content": {"application/problem+json": {"schema": PROBLEM}},
        }
        for status, slugs in sorted(by_status.items())
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """A required JSON request body whose schema is ``model``'s component."""
    return {"required": True, "content": {"application/json": {"schema": ref_to(model)}}}


def _schemas(server: ServerSettings) -> dict[str, Any]:
    """The component schemas: every one from its model (``signer.http.*.models``)."""
    found = schemas(Problem, *BODY_MODELS, *ANSWERS)
    found["SignatureRequest"]["properties"]["hashes"]["maxItems"] = server.max_digests
    return found


def _query(name: str, description: str, fmt: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if fmt:
        schema["format"] = fmt
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_LOG_ERRORS: list[type[SignerError]] = [InvalidLogQuery, LogSizeUnavailable, NoCheckpoint]
_NOTE = {
    "description": "C2SP tlog-checkpoint in a C2SP signed note (ECDSA P-256, type 0x02)",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}
_PROOF = {"type": "object", "description": "RFC 9162 proof; hashes are base64"}
_ENTRY_PAGE = {
    "type": "object",
    "required": ["items", "next", "tree_size"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "kind", "outcome", "time"],
                "properties": {
                    "index": {"type": "integer"},
                    "kind": {"enum": ["issuance", "refusal", "approval", "admin"]},
                    "outcome": {
                        "enum": [
                            "completed",
                            "failed",
                            "refused",
                            "malformed",
                            "approved",
                            "denied",
                            *ADMIN_ACTIONS,  # kind admin: the act (ca.logentry kind 0x04)
                        ]
                    },
                    "time": {"type": ["string", "null"], "format": "date-time"},
                    "serial": {"type": ["string", "null"]},
                    "subject": {"type": ["string", "null"]},
                    "issuer": {"type": ["string", "null"]},
                    "issuer_name": {"type": ["string", "null"]},
                    "client_id": {"type": ["string", "null"]},
                    "profile": {"type": ["string", "null"]},
                    "reason": {"type": ["string", "null"]},
                    "purged": {"type": "boolean"},
                    "signature_format": {
                        "type": ["string", "null"],
                        "description": "raw, cades, cades-b-lt or pades (entry version 2)",
                    },
                    "claimed_issuer": {
                        "type": ["string", "null"],
                        "description": "refusal before authentication: the iss the token"
                        " claimed, UNVERIFIED (only when it names a trusted issuer)",
                    },
                    "suppressed": {
                        "type": "integer",
                        "description": "reason refusals-suppressed: how many rate-limited"
                        " refusals this aggregate entry stands for (else 0)",
                    },
                    "detail": {
                        "type": ["string", "null"],
                        "description": "kind admin (entry version 3): scopes, grace, or the"
                        " certificate's role and revocation reason",
                    },
                },
            },
        },
        "next": {"type": "integer", "description": "index to continue from"},
        "tree_size": {"type": "integer", "description": "integrated entries"},
    },
}


def _int_query(name: str, description: str, required: bool) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": {"type": "integer", "minimum": 0},
        "description": description,
    }


def _proof(summary: str, first: tuple[str, str], size: tuple[str, str]) -> dict[str, Any]:
    """A public proof endpoint of the log: its required integer parameter, the optional tree
    size it proves against (``(name, description)`` each), a Proof or a log error."""
    return {
        "get": {
            "summary": summary,
            "parameters": [_int_query(*first, True), _int_query(*size, False)],
            "responses": {"200": _json(_PROOF, "Proof"), **_errors(_LOG_ERRORS)},
        }
    }


def _der(summary: str, media_type: str) -> dict[str, Any]:
    """A public GET of one DER object of ``media_type``: a CA certificate or a CRL."""
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": "DER", "content": {media_type: {}}}},
        }
    }


def _generation_der(summary: str, media_type: str) -> dict[str, Any]:
    """:func:`_der` of one issuing CA generation, named by its key identifier: what the CRL
    distribution point and caIssuers of a TSA certificate point to."""
    operation = _der(summary, media_type)
    operation["get"]["parameters"] = [
        {
            "name": "key_id",
            "in": "path",
            "required": True,
            "description": "the generation's subjectKeyIdentifier, lower-case hex",
            "schema": {"type": "string", "pattern": "^[0-9a-f]+$"},
        }
    ]
    operation["get"]["responses"].update(_errors([NotFound]))
    return operation


def _log_paths(bearer: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The transparency log (issue 5): public checkpoints and proofs, auditor entries."""
    audit = _errors([Unauthenticated, AuditorRoleRequired, InvalidLogQuery, NotFound])
    size = "tree size (default: the latest checkpoint's)"
    return {
        "/api/v1/log/checkpoint": {
            "get": {
                "summary": "Latest signed checkpoint",
                "responses": {"200": _NOTE, **_errors([NoCheckpoint])},
            }
        },
        "/api/v1/log/checkpoints": {
            "post": {
                "summary": "Integrate now and publish a checkpoint (auditors)",
                "security": bearer,
                "responses": {"201": _NOTE, "200": _NOTE, **audit},
            }
        },
        "/api/v1/log/proof/inclusion": _proof(
            "RFC 9162 §2.1.3 inclusion proof", ("index", "leaf index"), ("size", size)
        ),
        "/api/v1/log/proof/consistency": _proof(
            "RFC 9162 §2.1.4 consistency proof", ("old", "old tree size"), ("new", size)
        ),
        "/api/v1/log/entries": {
            "get": {
                "summary": "Entries from an index with decoded fields, filtered (auditors)",
                "security": bearer,
                "parameters": [
                    _int_query("from", "first index to scan (default 0)", False),
                    _int_query("limit", "entries to scan, 1..1000 (default 100)", False),
                    _query("subject", "token subject (refusals: matched by keyed commitment)"),
                    _query("issuer", "token issuer (iss)"),
                    _query("client_id", "relying-party client id"),
                ],
                "responses": {"200": _json(_ENTRY_PAGE, "Entries"), **audit},
            }
        },
        "/api/v1/log/entries/{idx}": {
            "get": {
                "summary": "One log entry's canonical bytes (auditors)",
                "security": bearer,
                "parameters": [
                    {"name": "idx", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "responses": {"200": _json({"type": "object"}, "Entry"), **audit},
            }
        },
    }


def _web_signing_paths() -> dict[str, Any]:
    """Issue 4: web apps (relying parties, HTTP Basic with client id + secret) send a person
    to ``sign_url``; only the owning RP reads the result."""
    basic: list[dict[str, list[str]]] = [{"rp_basic": []}]
    errors: list[type[SignerError]] = [
        MalformedJson, InvalidRequest, UnsupportedFormat, InvalidClient, OutOfScope,
        flow.UnregisteredRedirect, flow.UnsupportedAcr, PdfError,
    ]  # fmt: skip
    read_errors: list[type[SignerError]] = [InvalidClient, flow.SigningRequestNotFound]
    status = {"type": "object", "description": "id, status, sign_url, documents, result"}
    return {
        "/api/v1/signing-requests": {
            "post": {
                "summary": "Create a signing request; send the browser to its sign_url",
                "security": basic,
                "requestBody": _body(SigningRequest),
                "responses": {"201": _json(status, "Created"), **_errors(errors)},
            }
        },
        "/api/v1/signing-requests/{id}": {
            "get": {
                "summary": "Status and, once completed, signatures, chain and record URL",
                "security": basic,
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json(status, "The request"),
                    **_errors(read_errors),
                },
            }
        },
        "/api/v1/signing-requests/{id}/documents/{n}.pdf": {
            "get": {
                "summary": "Signed PDF n (from 1) of a completed PAdES request",
                "security": basic,
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "n", "in": "path", "required": True, "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": {
                        "description": "The signed PDF",
                        "content": {"application/pdf": {"schema": {}}},
                    },
                    **_errors(read_errors),
                },
            }
        },
    }


def _approval_paths(bearer: list[dict[str, list[str]]]) -> dict[str, Any]:
    """m-of-n approval of batch signatures (issue 7, ``signer.http.approvals``)."""
    status = {
        "type": "object",
        "required": ["id", "status", "status_url", "expires_at", "documents", "approval"],
        "description": "A held request; once completed also every field of the 201 signing "
        "response (serial, signatures, certificate, chain, record_url, key, log), and "
        "document_url for a PDF upload",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"enum": ["pending", "signing", "completed", "failed", "denied", "expired"]},
            "status_url": {"type": "string"},
            "expires_at": {"type": "string", "format": "date-time"},
            "requester": {"type": "object"},
            "reason": {"type": ["string", "null"]},
            "documents": {"type": "array", "items": {"type": "object"}},
            "digest_commitment": {
                "type": "string",
                "description": "hex SHA-256(u32(len(d1)) d1 ... u32(len(dn)) dn): send it back "
                "to approve or deny exactly these digests",
            },
            "approval": {"type": "object", "description": "group, required, approvals, decisions"},
        },
    }
    decide_errors: list[type[SignerError]] = [
        MalformedJson, InvalidRequest, Unauthenticated, NotAnApprover, SelfApproval,
        ApprovalNotFound, AlreadyDecided, NotPending, DigestsMismatch, ApprovalExpired,
        DatabaseUnavailable,
    ]  # fmt: skip
    path_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    body = _body(Decision)

    def decide(summary: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "security": bearer,
                "parameters": path_id,
                "requestBody": body,
                "responses": {"200": _json(status, "The request after it"),
                              **_errors(decide_errors)},
            }
        }  # fmt: skip

    return {
        "/api/v1/approval-requests": {
            "get": {
                "summary": "Pending requests of the approver groups the caller belongs to",
                "security": bearer,
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"requests": {"items": status}}},
                        "Oldest first",
                    ),
                    **_errors([Unauthenticated, ApprovalNotFound]),
                },
            }
        },
        "/api/v1/approval-requests/{id}": {
            "get": {
                "summary": "Status of a held request (its requester or an approver)",
                "security": bearer,
                "parameters": path_id,
                "responses": {
                    "200": _json(status, "The request"),
                    **_errors([Unauthenticated, ApprovalNotFound]),
                },
            }
        },
        "/api/v1/approval-requests/{id}/document.pdf": {
            "get": {
                "summary": "The signed PDF of a completed PDF upload",
                "security": bearer,
                "parameters": path_id,
                "responses": {
                    "200": {
                        "description": "The signed PDF",
                        "content": {"application/pdf": {"schema": {"type": "string"}}},
                    },
                    **_errors([Unauthenticated, ApprovalNotFound, NotFound]),
                },
            }
        },
        "/api/v1/approval-requests/{id}/approve": decide(
            "Approve the exact digests (the m-th approval signs)"
        ),
        "/api/v1/approval-requests/{id}/deny": decide("Deny (one denial ends the request)"),
    }


HELD = {
    "description": "Held for m-of-n approval: Location is the status URL",
    "headers": {"Location": {"schema": {"type": "string"}}},
}


#: The browser surfaces' routes: pages (HTML), redirects (303, to the IdP or the next page) and
#: files. Not an API; listed so that the document names every route the service serves.
#: (path, method, what it answers, summary)
BROWSER_ROUTES: tuple[tuple[str, str, str, str], ...] = (
    ("/sign/{id}", "get", "redirect", "Web signing: the signer's login for a request"),
    ("/sign/callback", "get", "redirect", "Web signing: the IdP's answer (RFC 6749 §4.1.2)"),
    ("/sign/{id}/consent", "get", "html", "Web signing: what will be signed; Sign or Cancel"),
    ("/sign/{id}/consent", "post", "redirect", "Web signing: the decision, back to the app"),
    ("/sign/{id}/documents/{n}", "get", "pdf", "Web signing: a PDF as the app sent it"),
    ("/sign/static/{file}", "get", "file", "Web signing: stylesheet"),
    ("/sign/static/base/{file}", "get", "file", "Web signing: the shared stylesheet"),
    ("/csc/v2/oauth2/callback", "get", "redirect", "CSC OAuth2: the IdP's answer"),
    ("/csc/v2/oauth2/consent/{id}", "get", "html", "CSC OAuth2: the owner's consent page"),
    ("/csc/v2/oauth2/consent/{id}", "post", "redirect", "CSC OAuth2: the owner's decision"),
    ("/audit", "get", "html", "Audit UI: search the signing records"),
    ("/audit/records/{serial}", "get", "html", "Audit UI: one record"),
    ("/audit/administration", "get", "html", "Audit UI: the admin acts, as logged"),
    ("/audit/export.{fmt}", "get", "file", "Audit UI: export the search (jsonl or csv)"),
    ("/audit/manifest.{fmt}.json", "get", "file", "Audit UI: the export's signed manifest"),
    ("/audit/login", "get", "redirect", "Audit UI: log in at the IdP"),
    ("/audit/callback", "get", "redirect", "Audit UI: the IdP's answer"),
    ("/audit/logout", "post", "redirect", "Audit UI: end the session (CSRF token)"),
    ("/audit/logged-out", "get", "html", "Audit UI: logged out"),
    ("/audit/static/{file}", "get", "file", "Audit UI: stylesheet"),
    ("/approvals", "get", "html", "Approvals UI: the requests waiting for you"),
    ("/approvals/{id}", "get", "html", "Approvals UI: one request, every digest"),
    ("/approvals/{id}/decide", "post", "redirect", "Approvals UI: approve or deny"),
    ("/approvals/login", "get", "redirect", "Approvals UI: log in at the IdP"),
    ("/approvals/callback", "get", "redirect", "Approvals UI: the IdP's answer"),
    ("/approvals/logout", "post", "redirect", "Approvals UI: end the session (CSRF token)"),
    ("/approvals/logged-out", "get", "html", "Approvals UI: logged out"),
    ("/approvals/static/{file}", "get", "file", "Approvals UI: stylesheet"),
)
_ANSWERS = {
    "html": {"200": {"description": "HTML page", "content": {"text/html": {"schema": {}}}}},
    "redirect": {"303": {"description": "See Other: the IdP, the next page or the app"}},
    "pdf": {"200": {"description": "PDF", "content": {"application/pdf": {"schema": {}}}}},
    "file": {"200": {"description": "File"}},
}


def _browser_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, method, answer, summary in BROWSER_ROUTES:
        names = re.findall(r"\{(\w+)\}", path)
        parameters = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]
        paths.setdefault(path, {})[method] = {
            "summary": summary,
            "tags": ["Browser pages"],
            "parameters": parameters,
            "responses": _ANSWERS[answer],
        }
    return paths


def document(server: ServerSettings) -> dict[str, Any]:
    """The document, with the answers of the edge added to every operation
    (``signer.http.kit.contract``)."""
    doc = _document(server)
    add_edge_answers(doc["paths"])
    return doc


def _document(server: ServerSettings) -> dict[str, Any]:
    ref = "#/components/schemas/"
    # Either scheme: a Bearer token, or a DPoP-bound one with its proof (RFC 9449 §7.1).
    bearer: list[dict[str, list[str]]] = [{"bearer": []}, {"dpop": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "qes-signer",
            "version": "1",
            "description": "Remote signing with ephemeral HSM keys and 10-minute "
            "certificates (eIDAS AdES/QES).",
        },
        "servers": [{"url": server.public_url}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "dpop": {
                    "type": "http",
                    "scheme": "DPoP",
                    "description": "RFC 9449: Authorization: DPoP <token> (a JWT access token)"
                    " and a DPoP proof header",
                },
                "rp_basic": {"type": "http", "scheme": "basic"},
            },
            "schemas": _schemas(server),
        },
        "paths": {
            "/api/v1/signatures": {
                "post": {
                    "summary": "Sign digests with a fresh key and a 10-minute certificate",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "maxLength": 255},
                        }
                    ],
                    "requestBody": _body(SignatureBody),
                    "responses": {
                        "201": _json({"$ref": ref + "SignatureResponse"}, "Signed"),
                        "202": HELD,
                        "200": _json(
                            {"$ref": ref + "SignatureResponse"},
                            "Replay of an earlier response for the same Idempotency-Key",
                        ),
                        **_errors(_SIGN_ERRORS),
                    },
                }
            },
            "/api/v1/signatures/pdf": {
                "post": {
                    "summary": "Sign a whole PDF (PAdES B-T, B-LT or B-LTA), get the signed PDF",
                    "description": (
                        "The service adds an invisible signature field, signs its byte range "
                        "with a fresh key and 10-minute certificate, time-stamps the signature "
                        "and returns the signed PDF. The record's URL is in the Link header. "
                        "level b-lt adds the validation data of the CA and TSA certificates "
                        "(certificates, CRLs) in the document security store, b-lta then a "
                        "document time-stamp (ETSI EN 319 142-1); `qes ltv extend` adds further "
                        "archive time-stamps later. "
                        f"At most {server.max_pdf_bytes} octets."
                    ),
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "profile",
                            "in": "query",
                            "required": False,
                            "schema": {"enum": ["qes", "qualified", "advanced"]},
                        },
                        {
                            "name": "field",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "maxLength": 64, "default": "Signature1"},
                        },
                        {
                            "name": "level",
                            "in": "query",
                            "required": False,
                            "description": "PAdES baseline level of the returned PDF (also "
                            "when the request is held for approval and signed later)",
                            "schema": {"enum": ["b-t", "b-lt", "b-lta"], "default": "b-t"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/pdf": {"schema": {"type": "string"}}},
                    },
                    "responses": {
                        "201": {
                            "description": "The signed PDF",
                            "headers": {
                                "Qes-Certificate-Serial": {"schema": {"type": "string"}},
                                "Link": {"schema": {"type": "string"}},
                            },
                            "content": {"application/pdf": {"schema": {"type": "string"}}},
                        },
                        "202": HELD,
                        **_errors([*_SIGN_ERRORS, PdfError]),
                    },
                }
            },
            "/api/v1/certificates": {
                "get": {
                    "summary": "Search issued certificates (auditor role)",
                    "security": bearer,
                    "parameters": [
                        _query("subject", "token subject"),
                        _query("issuer", "token issuer"),
                        _query("client_id", "client id"),
                        _query("serial", "serial, hex"),
                        _query("status", "issued, completed or failed"),
                        _query("email", "the certificate's e-mail address (case-insensitive)"),
                        _query("since", "created at or after", "date-time"),
                        _query("until", "created before", "date-time"),
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                        _query("cursor", "next_cursor of the previous page"),
                    ],
                    "responses": {
                        "200": _json({"$ref": ref + "CertificatePage"}, "A page"),
                        **_errors(_AUDIT_ERRORS),
                    },
                }
            },
            "/api/v1/certificates/{serial}": {
                "get": {
                    "summary": "One issued certificate and its record (auditor role)",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "serial",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-fA-F]+$"},
                        }
                    ],
                    "responses": {
                        "200": _json({"$ref": ref + "CertificateRecord"}, "The record"),
                        **_errors(_AUDIT_ERRORS),
                    },
                }
            },
            **_log_paths(bearer),
            **_web_signing_paths(),
            **_approval_paths(bearer),
            **admin_paths(bearer, _errors),
            **csc_paths(),
            **csc_oauth2.openapi_paths(),
            **_browser_paths(),
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": {"200": _json({"type": "object"}, "Alive")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: database and HSM",
                    "responses": {
                        "200": _json({"type": "object"}, "Ready"),
                        "503": _json({"type": "object"}, "Not ready"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
            "/problems/{slug}": {
                "get": {
                    "summary": "Explanation of a problem type",
                    "parameters": [
                        {
                            "name": "slug",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "HTML", "content": {"text/html": {}}},
                        "404": {
                            "description": "Unknown problem type",
                            "content": {"application/problem+json": {"schema": PROBLEM}},
                        },
                    },
                }
            },
            "/ca/root.cer": _der("Root CA certificate (DER)", "application/pkix-cert"),
            "/ca/issuing.cer": _der("Issuing CA certificate (DER)", "application/pkix-cert"),
            "/ca/root.crl": _der(
                "The root CA's CRL (over the issuing CA certificate)", "application/pkix-crl"
            ),
            "/ca/issuing.crl": _der(
                "The issuing CA's CRL (over the TSA certificate)", "application/pkix-crl"
            ),
            "/ca/issuing/{key_id}.cer": _generation_der(
                "An issuing CA generation's certificate (DER)", "application/pkix-cert"
            ),
            "/ca/issuing/{key_id}.crl": _generation_der(
                "An issuing CA generation's CRL (over the TSA certificates it certified)",
                "application/pkix-crl",
            ),
            "/api/v1/trust-bundle": {
                "get": {
                    "summary": "Certificates relying parties trust: root, issuing CA, TSA",
                    "description": (
                        "Public. JSON by default; the concatenated PEM with "
                        f"`Accept: {PEM_CHAIN}` (RFC 8555 §9.1)."
                    ),
                    "responses": {
                        "200": {
                            "description": "The bundle",
                            "content": {
                                "application/json": {"schema": {"$ref": ref + "TrustBundle"}},
                                PEM_CHAIN: {"schema": {"type": "string"}},
                            },
                        }
                    },
                }
            },
            "/tsa": {
                "post": {
                    "summary": "RFC 3161 time-stamp authority (built-in TSA only)",
                    "description": (
                        "Public, no authentication: the organisation's time-stamping service, "
                        "usable by `openssl ts` and any RFC 3161 client (RFC 3161 §3.4). The "
                        "body is a DER TimeStampReq; the answer a DER TimeStampResp, signed by "
                        "the TSA key in the HSM. A malformed or unacceptable query is answered "
                        "with 200 and a rejection PKIStatusInfo (RFC 3161 §2.4.2). 404 when the "
                        "service is configured with an external TSA."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            QUERY_TYPE: {
                                "schema": {
                                    "type": "string",
                                    "contentMediaType": QUERY_TYPE,
                                    "maxLength": MAX_QUERY_OCTETS,
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "TimeStampResp: granted, or a rejection",
                            "content": {REPLY_TYPE: {}},
                        },
                        **_errors(_TSA_ERRORS),
                    },
                }
            },
            **_ocsp_paths(),
        },
    }


def _ocsp_paths() -> dict[str, Any]:
    """``/ocsp``: the RFC 6960 responder for the issuing CA and TSA certificates."""
    answer = {
        "description": (
            "OCSPResponse: successful (signed by the delegated responder), or malformedRequest, "
            "unauthorized or tryLater (unsigned)"
        ),
        "content": {OCSP_RESPONSE: {}},
    }
    about = (
        "Public, no authentication: the status (good, revoked with time and reason, unknown) "
        "of the issuing CA and TSA certificates (RFC 6960), signed by a delegated responder "
        "(id-kp-OCSPSigning, id-pkix-ocsp-nocheck) whose key is in the HSM. A request that "
        "is no usable OCSPRequest is answered with 200 and malformedRequest (§4.2.1)."
    )
    return {
        "/ocsp": {
            "post": {
                "summary": "OCSP responder (RFC 6960 §A.1, POST)",
                "description": about,
                "requestBody": {
                    "required": True,
                    "content": {OCSP_REQUEST: {"schema": {"type": "string"}}},
                },
                "responses": {"200": answer, **_errors(_OCSP_ERRORS)},
            }
        },
        "/ocsp/{request}": {
            "get": {
                "summary": "OCSP responder (RFC 6960 §A.1, GET)",
                "description": about,
                "parameters": [
                    {
                        "name": "request",
                        "in": "path",
                        "required": True,
                        "description": "the DER OCSPRequest, base64, then URL-encoded",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": answer},
            }
        },
    }


async def openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the document for this deployment's configuration: only the
    operations its router serves."""
    services: Services = request.app[SERVICES]
    doc = document(services.settings.server)
    doc["paths"] = only_served(doc["paths"], served_operations(request.app))
    return web.json_response(doc)
