"""``/csc/v1/*`` and ``/csc/v2/*``: one set of handlers for both CSC API generations.

Field names of both are accepted (STANDARDS.md §6): v1.0.4.0 ``hash``/``hashAlgo`` and v2
``hashes``/``hashAlgorithmOID``; ``signAlgo`` is an ``ecdsa-with-SHA*`` OID (the hash it names
must agree with the hash algorithm) or v2's ``id-ecPublicKey`` with the hash algorithm given
separately. Every call but ``info`` carries ``Authorization: Bearer`` with a token of a
configured issuer; ``signatures/signHash`` also takes a ``qcsc_…`` credential token (v2 OAuth2
``scope=credential``) as the bearer in place of body ``SAD``.

Errors are CSC's (v1.0.4.0 §10.1, v2.0.0.2 §11.1): HTTP 400, or 401 for the access token,
with ``{"error", "error_description"}``; 503/500 keep the same shape
(``temporarily_unavailable``, ``server_error``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import structlog
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import ValidationError

from idp_adapter.errors import IdentityNotAllowed, IdpUnavailable, InvalidProof, InvalidToken
from idp_adapter.principal import Principal
from signer.errors import RequestError, SignerError
from signer.http.csc.models import BODIES, CscBody
from signer.http.kit.auth import bearer_token, verify_token
from signer.http.kit.body import parse_json, read_body
from signer.http.kit.params import hostile_text
from signer.http.kit.problems import (
    PROOF_DETAIL,
    TOKEN_DETAIL,
    ClientGone,
    refusal_headers,
    translate,
)
from signer.http.kit.refused import log_refusal
from signer.http.kit.state import REQUEST_ID, SERVICES
from signer.signing.csc import (
    EC_PUBLIC_KEY,
    ECDSA_WITH,
    HASH_NAMES,
    HASH_OIDS,
    CscService,
    is_credential_token,
)
from signer.signing.csc_errors import (
    CscError,
    CscInvalidParameter,
    CscInvalidToken,
    CscMalformed,
    SadMissing,
    UnsupportedHashAlgo,
    UnsupportedSignAlgo,
)
from signer.storage.csc import Credential

log = structlog.get_logger(__name__)

CSC = web.AppKey("csc", CscService)
_HANDED_OVER = web.RequestKey("csc_handed_over", bool)
#: The verified bearer of the request; absent when the bearer is a v2 credential token.
_CALLER = web.RequestKey("csc_caller", Principal)
Version = Literal["v1", "v2"]
SPECS: dict[str, str] = {"v1": "1.0.4.0", "v2": "2.0.0.2"}
#: Named curve OIDs (RFC 5480 §2.1.1.1) of the curves credential keys may have.
CURVE_OIDS = {"secp256r1": "1.2.840.10045.3.1.7", "secp384r1": "1.3.132.0.34"}
#: CSC v2 signatureQualifier of each certificate profile.
QUALIFIERS = {"qes": "eu_eidas_qes", "qualified": "eu_eidas_aesqc", "advanced": "eu_eidas_aes"}
_DIGEST_SIZES = {32: "sha256", 48: "sha384", 64: "sha512"}
_HASHES: dict[str, str] = {"v1": "hash", "v2": "hashes"}
_Handler = Callable[[web.Request, Version, dict[str, Any]], Awaitable[Mapping[str, Any]]]


# -- the edge ------------------------------------------------------------------------------------


def route(
    handler: _Handler, version: Version, model: type[CscBody] = CscBody
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap ``handler(request, version, body)`` with body parsing (checked against ``model``,
    ``signer.http.csc.models``) and CSC error bodies."""

    async def wrapped(request: web.Request) -> web.Response:
        try:
            if handler is not info:  # the token before the body: 401 whatever the body holds
                await _authenticate(request)
            body = await _body(request, model)
            return web.json_response(await handler(request, version, body))
        except ClientGone:
            raise  # nobody to answer: logged once by the problem middleware
        except Exception as exc:
            if handler in _SIGNING and not request.get(_HANDED_OVER, False):
                await log_refusal(request, exc, None)
            return error_response(exc, request)

    return wrapped


def _service(request: web.Request) -> CscService:
    """The CSC service, for a request that passed the edge's checks: from here on the service
    logs its own refusals (with the requester), so the edge no longer does."""
    request[_HANDED_OVER] = True
    return request.app[CSC]


async def _body(request: web.Request, model: type[CscBody]) -> dict[str, Any]:
    raw = await read_body(request) if request.can_read_body else b""
    if not raw.strip():
        return {}
    if request.content_type != "application/json":
        raise CscMalformed(f"content type {request.content_type!r}")
    try:
        body = parse_json(raw, check_text=False)  # check_parameters names the field
    except RequestError as exc:  # malformed, too deep, NUL or unpaired surrogate
        raise CscMalformed(f"{exc.slug}: {exc}") from exc
    if not isinstance(body, dict):
        raise CscMalformed("body is not a JSON object")
    check_parameters(body, model)
    return body


def check_parameters(body: dict[str, Any], model: type[CscBody]) -> None:
    """Refuse text no store or log can hold (NUL, lone surrogate: ``signer.http.kit.params``)
    and parameters of the wrong type, naming the parameter when it is one of the method's."""
    where = hostile_text(body)
    if where is not None:
        name = where.split("/")[1]
        if name not in model.model_fields:
            raise CscMalformed(f"{where}: NUL or lone surrogate")
        raise CscInvalidParameter(name, "holds a NUL or a lone surrogate")
    try:
        model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        if not error["loc"]:
            raise CscMalformed(error["type"]) from exc
        raise CscInvalidParameter(str(error["loc"][0]), error["type"]) from exc


def error_response(exc: BaseException, request: web.Request) -> web.Response:
    """A CSC error body for ``exc``; details go to the log with the request id only. The
    headers are the batch API's (:func:`refusal_headers`): a 401 for a DPoP proof carries
    ``WWW-Authenticate: DPoP error=...`` and, for ``use_dpop_nonce``, a fresh ``DPoP-Nonce``
    (RFC 9449 §7.1, §8, §9)."""
    status, error, description = _classify(exc)
    level = "warning" if status < 500 else "error"
    if status == 500 and not isinstance(exc, SignerError):
        log.exception("csc_unhandled_error", path=request.path)
    else:
        getattr(log, level)(
            "csc_request_failed",
            path=request.path,
            error=error,
            kind=getattr(exc, "slug", type(exc).__name__),
            detail=str(exc) or type(exc).__name__,
        )
    kind = translate(exc)  # the batch API's kind of refusal: the same challenge and nonce
    return web.json_response(
        {"error": error, "error_description": description},
        status=status,
        headers=refusal_headers(None if kind is None else kind[0], status),
    )


def _classify(exc: BaseException) -> tuple[int, str, str]:
    if isinstance(exc, CscError):
        return exc.status, exc.error, exc.description
    if isinstance(exc, InvalidToken):
        detail = TOKEN_DETAIL.get(exc.reason, "The access token is invalid")
        return 401, "invalid_token", detail
    if isinstance(exc, InvalidProof):  # RFC 9449 §7.1
        error = "use_dpop_nonce" if exc.reason == "nonce" else "invalid_dpop_proof"
        return 401, error, PROOF_DETAIL.get(exc.reason, "The DPoP proof is invalid")
    if isinstance(exc, IdentityNotAllowed):
        return 400, "access_denied", "This identity may not use the signing service"
    if isinstance(exc, IdpUnavailable):
        return 503, "temporarily_unavailable", "The identity provider is unavailable"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return 400, "invalid_request", "The request body is too large"
    if isinstance(exc, RequestError) and exc.status == 429:  # policy rate limit (RFC 6585 §4)
        return 429, "access_denied", exc.title
    if isinstance(exc, RequestError):  # policy refusals of the pipeline (profile, subject)
        return 400, "access_denied" if exc.status == 403 else "invalid_request", exc.title
    if isinstance(exc, SignerError) and exc.status == 503:
        return 503, "temporarily_unavailable", exc.title
    return 500, "server_error", "Internal error"


async def _authenticate(request: web.Request) -> None:
    """Verify the bearer token (a ``qcsc_`` credential token is checked by the service, in
    ``signatures/signHash`` only); verifying never spends its ``jti``."""
    token = _bearer(request)
    if not is_credential_token(token):
        request[_CALLER] = await verify_token(request, token)


async def _principal(request: web.Request) -> Principal:
    principal: Principal | None = request.get(_CALLER)
    if principal is None:
        raise CscInvalidToken("a credential token is only accepted by signatures/signHash")
    return principal


def _bearer(request: web.Request) -> str:
    token = bearer_token(request)
    if token is None:
        raise CscInvalidToken("no bearer token")
    return token


# -- parameters ----------------------------------------------------------------------------------


def _text(body: Mapping[str, Any], *names: str, required: bool = True) -> str | None:
    """The first of ``names`` present in ``body`` (v1 name first, then v2's)."""
    for name in names:
        if name in body:
            value = body[name]
            if not isinstance(value, str) or not value or len(value) > 1024:
                raise CscInvalidParameter(name, "must be a non-empty string")
            return value
    if required:
        raise CscInvalidParameter(names[0], "missing")
    return None


def _flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise CscInvalidParameter(name, "must be true or false")
    return value


def _credential_id(body: Mapping[str, Any]) -> str:
    value = _text(body, "credentialID")
    assert value is not None
    if len(value) > 64:
        raise CscInvalidParameter("credentialID", "too long")
    return value


def _hashes(
    body: Mapping[str, Any], limit: int, version: Version = "v1"
) -> tuple[str, tuple[bytes, ...]]:
    """(parameter name, decoded digests) from v1 ``hash`` or v2 ``hashes`` (either is
    accepted on both paths; a missing one is named as the path's version calls it)."""
    name = "hash" if "hash" in body else "hashes" if "hashes" in body else _HASHES[version]
    items = body.get(name)
    if not isinstance(items, list) or not items:
        raise CscInvalidParameter(name, "must be a non-empty list of base64 strings")
    if len(items) > limit:
        raise CscInvalidParameter(name, f"more than {limit} hashes")
    digests = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise CscInvalidParameter(name, f"[{i}] is not a string")
        try:
            digests.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise CscInvalidParameter(name, f"[{i}] is not base64") from exc
    if len({len(d) for d in digests}) != 1 or len(digests[0]) not in _DIGEST_SIZES:
        raise CscInvalidParameter(name, "hashes must be SHA-256, SHA-384 or SHA-512 digests")
    return name, tuple(digests)


def _hash_oid(body: Mapping[str, Any], digests: tuple[bytes, ...], name: str) -> str:
    """The hash algorithm OID: v1 ``hashAlgo`` or v2 ``hashAlgorithmOID``; when neither is given
    (v1 ``credentials/authorize`` has no such parameter) the digest length names it."""
    oid = _text(body, "hashAlgo", "hashAlgorithmOID", required=False)
    if oid is None:
        return HASH_OIDS[_DIGEST_SIZES[len(digests[0])]]
    if oid not in HASH_NAMES:
        raise UnsupportedHashAlgo(f"hash algorithm {oid}")
    if _DIGEST_SIZES[len(digests[0])] != HASH_NAMES[oid]:
        raise CscInvalidParameter(name, f"digests are not {HASH_NAMES[oid]} digests")
    return oid


def _sign_algo(body: Mapping[str, Any], digests: tuple[bytes, ...], name: str) -> str:
    """Check ``signAlgo`` (and ``signAlgoParams``) and return the hash algorithm OID."""
    sign_algo = _text(body, "signAlgo")
    if sign_algo not in ECDSA_WITH and sign_algo != EC_PUBLIC_KEY:
        raise UnsupportedSignAlgo(f"signAlgo {sign_algo}")
    if body.get("signAlgoParams") not in (None, ""):
        raise CscInvalidParameter("signAlgoParams", "ECDSA takes no parameters")
    given = "hashAlgo" in body or "hashAlgorithmOID" in body
    if sign_algo == EC_PUBLIC_KEY and not given:
        raise CscInvalidParameter("hashAlgorithmOID", "required with signAlgo id-ecPublicKey")
    oid = _hash_oid(body, digests, name)
    if sign_algo in ECDSA_WITH and HASH_OIDS[ECDSA_WITH[sign_algo]] != oid:
        raise CscInvalidParameter("hashAlgo", f"does not match signAlgo {sign_algo}")
    return oid


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- endpoints -----------------------------------------------------------------------------------


async def info(request: web.Request, version: Version, body: dict[str, Any]) -> Mapping[str, Any]:
    """``info`` (v1.0.4.0 §11.1, v2.0.0.2 §11.1): what pyHanko and v2 clients need, including
    ``oauth2``/``oauth2Issuer`` of the v2 credential flow when it is on (:data:`OAUTH2_INFO`)."""
    services = request.app[SERVICES]
    oauth2 = request.app.get(OAUTH2_INFO)
    methods = [m for m, _ in ENDPOINTS] + list(request.app.get(EXTRA_METHODS, ()))
    answer: dict[str, Any] = {
        "specs": SPECS[version],
        "name": "qes-signer",
        "region": services.settings.ca.names.country,
        "lang": "en-US",
        "description": "Remote signing with one-shot HSM keys and 10-minute certificates",
        "authType": ["external", "oauth2code"] if oauth2 else ["external"],
        "methods": methods,
    }
    if oauth2:
        answer["oauth2"] = oauth2["oauth2"]
    if version == "v2":
        answer |= {
            **({"oauth2Issuer": oauth2["oauth2Issuer"]} if oauth2 else {}),
            "asynchronousOperationMode": False,
            "validationInfo": False,
            "signAlgorithms": {"algos": list(ECDSA_WITH), "algoParams": []},
        }
    return answer


async def credentials_list(
    request: web.Request, version: Version, body: dict[str, Any]
) -> Mapping[str, Any]:
    """``credentials/list``: the bearer's reserved one-shot credential; no HSM work (its key
    and 10-minute certificate are made by the first ``credentials/info`` or ``authorize``,
    ``signer.signing.csc``)."""
    principal = await _principal(request)
    user = _text(body, "userID", required=False)
    if user is not None and user != principal.subject:
        raise CscInvalidParameter("userID", "not the bearer's identity")
    credential_id = await _service(request).reserve(principal, request[REQUEST_ID])
    answer: dict[str, Any] = {"credentialIDs": [credential_id]}
    if version == "v2" and _flag(body, "credentialInfo", False):
        described = _describe_reserved(request.app[CSC])
        answer["credentialInfos"] = [{"credentialID": credential_id, **described}]
    return answer


async def credentials_info(
    request: web.Request, version: Version, body: dict[str, Any]
) -> Mapping[str, Any]:
    """``credentials/info``; a reserved credential is made now (its certificate is what the
    client asks for), once: later calls describe the same one."""
    principal = await _principal(request)
    csc = request.app[CSC]
    credential_id = _credential_id(body)
    made = await _service(request).made_from_reservation(
        principal, credential_id, request[REQUEST_ID]
    )
    credential = made or await csc.credential(principal, credential_id)
    return _describe(csc, credential, version, body)


def _describe_reserved(csc: CscService) -> dict[str, Any]:
    """A reserved credential (CSC v2 §11.4 ``credentialInfos``): no key or certificate yet,
    so key ``status`` "disabled" and no certificates; ``credentials/info`` makes both."""
    return {
        "description": "Reserved one-shot credential: credentials/info or authorize makes its key",
        "key": {"status": "disabled", "algo": list(ECDSA_WITH), "len": 256},
        "cert": {"certificates": []},
        "authMode": "implicit",
        "SCAL": "2",
        "multisign": csc.settings.max_signatures,
        "lang": "en-US",
    }


def _describe(
    csc: CscService, credential: Credential, version: Version, body: Mapping[str, Any]
) -> dict[str, Any]:
    """``credentials/info`` (v1.0.4.0 §11.5): the chain end-entity first (``certificates``
    "chain"), ``key.algo`` with the ecdsa-with-SHA* OIDs, ``multisign``, ``SCAL`` "2"."""
    which = body.get("certificates", "single")
    if which not in ("none", "single", "chain"):
        raise CscInvalidParameter("certificates", "must be none, single or chain")
    cert = x509.load_der_x509_certificate(credential.record.certificate_der)
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):  # the HSM makes EC keys only
        raise TypeError(f"credential {credential.id}: not an EC key")
    chain = [cert, *csc.chain][: {"none": 0, "single": 1, "chain": 3}[which]]
    usable = credential.state == "active" and credential.expires_at > csc.now()
    cert_info: dict[str, Any] = {
        "status": "valid" if credential.expires_at > csc.now() else "expired",
        "certificates": [_b64(c.public_bytes(Encoding.DER)) for c in chain],
    }
    if _flag(body, "certInfo", False):
        cert_info |= {
            "issuerDN": cert.issuer.rfc4514_string(),
            "serialNumber": format(cert.serial_number, "x"),
            "subjectDN": cert.subject.rfc4514_string(),
            "validFrom": cert.not_valid_before_utc.strftime("%Y%m%d%H%M%SZ"),
            "validTo": cert.not_valid_after_utc.strftime("%Y%m%d%H%M%SZ"),
        }
    described: dict[str, Any] = {
        "description": "One-shot credential: its key is destroyed after its authorized signatures",
        "key": {
            "status": "enabled" if usable else "disabled",
            "algo": list(ECDSA_WITH),
            "len": public.curve.key_size,
            "curve": CURVE_OIDS[public.curve.name],
        },
        "cert": cert_info,
        "authMode": "implicit",
        "SCAL": "2",
        "multisign": csc.settings.max_signatures,
        "lang": "en-US",
    }
    if version == "v2":
        described["signatureQualifier"] = QUALIFIERS.get(credential.record.profile)
    return described


async def credentials_authorize(
    request: web.Request, version: Version, body: dict[str, Any]
) -> Mapping[str, Any]:
    """``credentials/authorize`` (v1.0.4.0 §11.6): a single-use SAD bound to the exact hashes
    (SCAL 2: ``hash``/``hashes`` required, ``numSignatures`` equal to their count)."""
    principal = await _principal(request)
    csc = request.app[CSC]
    credential_id = _credential_id(body)
    name, digests = _hashes(body, csc.settings.max_signatures, version)
    count = body.get("numSignatures")
    if not isinstance(count, int) or isinstance(count, bool) or count != len(digests):
        raise CscInvalidParameter("numSignatures", f"must equal the number of {name}")
    oid = _hash_oid(body, digests, name)
    authorized = await _service(request).authorize(
        principal, credential_id, oid, digests, request[REQUEST_ID]
    )
    return {"SAD": authorized.secret, "expiresIn": authorized.expires_in}


async def sign_hash(
    request: web.Request, version: Version, body: dict[str, Any]
) -> Mapping[str, Any]:
    """``signatures/signHash`` (v1.0.4.0 §11.9, v2.0.0.2 §11.10): DER ECDSA signatures in the
    order of the hashes. The SAD comes in the body (with the owner's bearer token) or is the
    bearer token itself (a v2 credential token)."""
    token = _bearer(request)
    csc = request.app[CSC]
    credential_id = _credential_id(body)
    if body.get("operationMode", "S") != "S":
        raise CscInvalidParameter("operationMode", "only synchronous operation (S)")
    name, digests = _hashes(body, csc.settings.max_signatures, version)
    oid = _sign_algo(body, digests, name)
    sad = _text(body, "SAD", required=False)
    principal: Principal | None = request.get(_CALLER)
    if principal is None:  # a v2 credential token
        if sad is not None:
            raise CscInvalidParameter("SAD", "not with a credential token")
        secret = token
    else:
        if sad is None:
            raise SadMissing("no SAD and no credential token")
        secret = sad
    signatures = await _service(request).sign_hash(
        principal=principal,
        secret=secret,
        credential_id=credential_id,
        hash_oid=oid,
        digests=digests,
        request_id=request[REQUEST_ID],
    )
    return {"signatures": [_b64(s) for s in signatures]}


async def time_stamp(
    request: web.Request, version: Version, body: dict[str, Any]
) -> Mapping[str, Any]:
    """``signatures/timestamp`` (v1.0.4.0 §11.10): an RFC 3161 token over ``hash`` from the
    built-in TSA (or the configured external one), echoing ``nonce`` (hex) when given."""
    await _principal(request)
    name = "hash"
    value = _text(body, "hash")
    assert value is not None
    _, digests = _hashes({name: [value]}, 1)
    oid = _text(body, "hashAlgo", "hashAlgorithmOID")
    if oid not in HASH_NAMES:
        raise UnsupportedHashAlgo(f"hash algorithm {oid}")
    if _DIGEST_SIZES[len(digests[0])] != HASH_NAMES[oid]:
        raise CscInvalidParameter("hash", f"is not a {HASH_NAMES[oid]} digest")
    nonce_text = _text(body, "nonce", required=False)
    nonce = None
    if nonce_text is not None:
        try:
            nonce = int(nonce_text, 16)
        except ValueError as exc:
            raise CscInvalidParameter("nonce", "must be hexadecimal") from exc
        if not 0 < nonce < 1 << 160:
            raise CscInvalidParameter("nonce", "must be 1 to 160 bits")
    token = await request.app[CSC].time_stamp(digests[0], HASH_NAMES[oid], nonce)
    return {"timestamp": _b64(token)}


#: Every method of both versions: ``POST /csc/{v1|v2}/{method}``.
ENDPOINTS: tuple[tuple[str, _Handler], ...] = (
    ("info", info),
    ("credentials/list", credentials_list),
    ("credentials/info", credentials_info),
    ("credentials/authorize", credentials_authorize),
    ("signatures/signHash", sign_hash),
    ("signatures/timestamp", time_stamp),
)
#: The methods that create, authorize or use a key: a refusal of theirs before the service takes
#: over (bad token, bad parameters) goes to the transparency log like any signing refusal.
_SIGNING = frozenset((credentials_list, credentials_authorize, sign_hash))
#: Further CSC methods another module serves (e.g. ``oauth2/authorize``), listed by ``info``.
EXTRA_METHODS = web.AppKey("csc_extra_methods", list)
#: ``oauth2`` (base URI) and ``oauth2Issuer`` of the v2 OAuth2 credential flow, when it is on.
OAUTH2_INFO = web.AppKey("csc_oauth2_info", dict)


def add_routes(app: web.Application) -> None:
    versions: tuple[Version, ...] = ("v1", "v2")
    for version in versions:
        for method, handler in ENDPOINTS:
            app.router.add_post(f"/csc/{version}/{method}", route(handler, version, BODIES[method]))
        app.router.add_get(f"/csc/{version}/info", route(info, version, BODIES["info"]))
