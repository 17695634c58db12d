"""``/api/v1/signing-requests``: a web app (relying party) sends a person to sign.

The RP authenticates with its client id and secret, HTTP Basic (RFC 7617; both parts
form-urlencoded first, RFC 6749 §2.3.1). ``POST`` registers documents (label + digest) and
returns the ``sign_url`` to send the browser to; ``GET …/{id}`` returns the status and, once
signed, the signatures, certificate chain and audit record. Only the RP that created a request
can read it; anyone else gets 404.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from ca.profiles import Level
from signer.flows.registry import InvalidClient, RegistryError, RpRegistry, check_redirect_uri
from signer.flows.webhooks import Webhooks
from signer.flows.websign import Order, SigningRequestNotFound, WebSigning
from signer.http.kit.body import read_json
from signer.http.kit.links import with_proof_url
from signer.http.kit.problems import InvalidRequest, UnsupportedFormat
from signer.http.kit.state import REQUEST_ID, SERVICES, WEB_SIGNING
from signer.settings.config import DIGEST_SIZES
from signer.signing.pipeline import FORMATS
from signer.storage.signing_requests import RpClient, StoredRequest

RP_REGISTRY = web.AppKey("rp_registry", RpRegistry)
WEBHOOKS = web.AppKey("webhooks", Webhooks)
MAX_DOCUMENTS = 100
_FIELDS = {
    "documents", "hash_algorithm", "format", "profile", "redirect_uri", "state", "acr",
    "webhook_url",
}  # fmt: skip


async def authenticate_rp(request: web.Request) -> RpClient:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise InvalidClient("no HTTP Basic credentials")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, ValueError) as exc:
        raise InvalidClient("malformed Basic credentials") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise InvalidClient("malformed Basic credentials")
    return await request.app[RP_REGISTRY].authenticate(unquote(client_id), unquote(secret))


def _text(body: Mapping[str, Any], key: str, limit: int, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit or not value.isprintable():
        raise InvalidRequest(f"{key} must be 1..{limit} printable characters")
    return value


def _documents(items: Any, algorithm: str, kind: str) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    """Labels and values: a ``digest`` per document, or a ``pdf`` (format 'pades')."""
    if not isinstance(items, list) or not 0 < len(items) <= MAX_DOCUMENTS:
        raise InvalidRequest(f"documents must be a list of 1..{MAX_DOCUMENTS} objects")
    labels, values = [], []
    for i, doc in enumerate(items):
        if not isinstance(doc, dict) or set(doc) != {"label", kind}:
            raise InvalidRequest(f"documents[{i}] must have exactly label and {kind}")
        label = _text(doc, "label", 200)
        try:
            value = base64.b64decode(doc[kind], validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise InvalidRequest(f"documents[{i}].{kind} is not base64") from exc
        if kind == "digest" and len(value) != DIGEST_SIZES[algorithm]:
            raise InvalidRequest(f"documents[{i}].digest is not a {algorithm} digest")
        if kind == "pdf" and not value.startswith(b"%PDF-"):
            raise InvalidRequest(f"documents[{i}].pdf is not a PDF")
        assert label is not None
        labels.append(label)
        values.append(value)
    return tuple(labels), tuple(values)


def _signer(value: Any) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict) or len(value) != 1 or not set(value) <= {"subject", "email"}:
        raise InvalidRequest('signer must be {"subject": …} or {"email": …}')
    subject = _text(value, "subject", 255, required=False)
    email = _text(value, "email", 254, required=False)
    if email is not None and "@" not in email:
        raise InvalidRequest("signer.email is not an e-mail address")
    return subject, email


def _webhook_url(body: Mapping[str, Any]) -> str | None:
    """Optional; https, or http on loopback, no fragment (checked like redirect URIs)."""
    url = _text(body, "webhook_url", 2000, required=False)
    if url is None:
        return None
    try:
        return check_redirect_uri(url)
    except RegistryError as exc:
        raise InvalidRequest(f"webhook_url: {exc}".replace("redirect URI", "URI")) from exc


def parse_order(body: Any) -> Order:
    """Validate the body; every bad field is a 422 problem naming it (RFC 9457)."""
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    unknown = set(body) - _FIELDS - {"signer"}
    if unknown:
        raise InvalidRequest(f"unknown fields {sorted(unknown)}")
    algorithm = body.get("hash_algorithm", "sha256")
    if algorithm not in DIGEST_SIZES:
        raise InvalidRequest(f"hash_algorithm must be one of {sorted(DIGEST_SIZES)}")
    fmt = body.get("format", "cades")
    if fmt not in FORMATS:
        raise UnsupportedFormat(f"format {fmt!r}")
    profile = _text(body, "profile", 32, required=False)
    if profile is not None and profile not in {level.value for level in Level}:
        raise InvalidRequest(f"profile must be one of {[level.value for level in Level]}")
    kind = "pdf" if fmt == "pades" else "digest"
    labels, values = _documents(body.get("documents"), algorithm, kind)
    subject, email = _signer(body.get("signer"))
    return Order(
        labels=labels,
        digests=() if kind == "pdf" else values,
        pdfs=values if kind == "pdf" else (),
        hash_algorithm=algorithm,
        format=fmt,
        profile=profile,
        redirect_uri=_text(body, "redirect_uri", 2000) or "",
        state=_text(body, "state", 512) or "",
        acr=_text(body, "acr", 255, required=False),
        expected_subject=subject,
        expected_email=email,
        webhook_url=_webhook_url(body),
    )


def _summary(req: StoredRequest, flow: WebSigning) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(req.id),
        "status": req.status,
        "sign_url": flow.sign_url(req.id),
        "created_at": req.created_at.isoformat(),
        "expires_at": req.expires_at.isoformat(),
        "format": req.format,
        "hash_algorithm": req.hash_algorithm,
        "documents": [
            {"label": label, "digest": base64.b64encode(d).decode()}
            for label, d in zip(req.labels, req.digests, strict=True)
        ],
    }
    if req.ended_at is not None:
        body["ended_at"] = req.ended_at.isoformat()
    if req.signer_subject is not None:
        body["signer"] = {"subject": req.signer_subject}
    if req.error is not None:
        body["error"] = req.error
    if req.webhook_url is not None:
        body["webhook"] = {
            "url": req.webhook_url,
            "attempts": req.webhook_attempts,
            "last_result": req.webhook_result,
            "last_attempt_at": _iso(req.webhook_attempted_at),
            "delivered_at": _iso(req.webhook_delivered_at),
        }
    return body


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def create_signing_request(request: web.Request) -> web.Response:
    rp = await authenticate_rp(request)  # 401 before any body check
    body = await read_json(request)
    order = parse_order(body)
    flow = request.app[WEB_SIGNING]
    req = await flow.create(rp, order, http_id=request[REQUEST_ID])
    return web.json_response(
        _summary(req, flow), status=201, headers={"Location": f"{request.path}/{req.id}"}
    )


async def _owned(request: web.Request) -> tuple[WebSigning, StoredRequest]:
    """The request named in the path, if the authenticated RP made it (else 404)."""
    rp = await authenticate_rp(request)
    try:
        request_id = uuid.UUID(request.match_info["id"])
    except ValueError as exc:
        raise SigningRequestNotFound("not a request id") from exc
    flow = request.app[WEB_SIGNING]
    req = await flow.get(request_id)
    if req.client_id != rp.client_id:
        raise SigningRequestNotFound("another relying party's request")
    return flow, req


async def show_signing_request(request: web.Request) -> web.Response:
    flow, req = await _owned(request)
    body = _summary(req, flow)
    if req.result is not None:
        public_url = request.app[SERVICES].settings.server.public_url
        body["result"] = with_proof_url(req.result, public_url)
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def signed_pdf(request: web.Request) -> web.Response:
    """Format 'pades': the signed PDF of document ``n`` (1-based), owner only."""
    flow, req = await _owned(request)
    number = int(request.match_info["n"])  # the route allows digits only
    return web.Response(
        body=await flow.signed_pdf(req, number),
        content_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="signed-{number}.pdf"',
            "Cache-Control": "no-store",
        },
    )
