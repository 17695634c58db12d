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
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from signer.flows.registry import InvalidClient, RegistryError, RpRegistry, check_redirect_uri
from signer.flows.webhooks import Webhooks, delivery_json
from signer.flows.websign import Order, SigningRequestNotFound, WebSigning
from signer.http.kit.body import read_json
from signer.http.kit.links import with_proof_url
from signer.http.kit.models import validate
from signer.http.kit.paths import path_id
from signer.http.kit.problems import InvalidRequest, UnsupportedFormat
from signer.http.kit.state import REQUEST_ID, SERVICES, WEB_SIGNING
from signer.http.sign.models import Document, ExpectedSigner, SigningRequest
from signer.settings.config import DIGEST_SIZES
from signer.storage.signing_requests import RpClient, StoredRequest

RP_REGISTRY = web.AppKey("rp_registry", RpRegistry)
WEBHOOKS = web.AppKey("webhooks", Webhooks)


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


def _printable(value: str | None, name: str) -> str | None:
    if value is not None and not value.isprintable():
        raise InvalidRequest(f"{name} must be printable characters")
    return value


def _documents(
    docs: list[Document], algorithm: str, kind: str
) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    """Labels and values: a ``digest`` per document, or a ``pdf`` (format 'pades')."""
    labels, values = [], []
    for i, doc in enumerate(docs):
        text = doc.pdf if kind == "pdf" else doc.digest
        if text is None or doc.model_fields_set != {"label", kind}:
            raise InvalidRequest(f"documents[{i}] must have exactly label and {kind}")
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"documents[{i}].{kind} is not base64") from exc
        if kind == "digest" and len(value) != DIGEST_SIZES[algorithm]:
            raise InvalidRequest(f"documents[{i}].digest is not a {algorithm} digest")
        if kind == "pdf" and not value.startswith(b"%PDF-"):
            raise InvalidRequest(f"documents[{i}].pdf is not a PDF")
        labels.append(_printable(doc.label, "label") or "")
        values.append(value)
    return tuple(labels), tuple(values)


def _signer(value: ExpectedSigner | None) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if len(value.model_fields_set) != 1 or (value.subject or value.email) is None:
        raise InvalidRequest('signer must be {"subject": …} or {"email": …}')
    email = _printable(value.email, "signer.email")
    if email is not None and "@" not in email:
        raise InvalidRequest("signer.email is not an e-mail address")
    return _printable(value.subject, "signer.subject"), email


def _webhook_url(url: str | None) -> str | None:
    """Optional; https, or http on loopback, no fragment (checked like redirect URIs)."""
    if url is None:
        return None
    try:
        return check_redirect_uri(_printable(url, "webhook_url") or "")
    except RegistryError as exc:
        raise InvalidRequest(f"webhook_url: {exc}".replace("redirect URI", "URI")) from exc


def parse_order(body: Any) -> Order:
    """Validate the body (model: ``SigningRequest``); every bad field is a 422 problem naming
    it (RFC 9457)."""
    parsed = validate(SigningRequest, body, {"format": UnsupportedFormat})
    kind = "pdf" if parsed.format == "pades" else "digest"
    if parsed.level is not None and kind != "pdf":
        raise InvalidRequest("level applies to format pades only")
    labels, values = _documents(parsed.documents, parsed.hash_algorithm, kind)
    subject, email = _signer(parsed.signer)
    return Order(
        labels=labels,
        digests=() if kind == "pdf" else values,
        pdfs=values if kind == "pdf" else (),
        hash_algorithm=parsed.hash_algorithm,
        format=parsed.format,
        profile=parsed.profile,
        redirect_uri=_printable(parsed.redirect_uri, "redirect_uri") or "",
        state=_printable(parsed.state, "state") or "",
        acr=_printable(parsed.acr, "acr"),
        expected_subject=subject,
        expected_email=email,
        webhook_url=_webhook_url(parsed.webhook_url),
        level=parsed.level or "b-t",
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
    webhook = delivery_json(req)
    if webhook is not None:
        body["webhook"] = webhook
    return body


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
    request_id = path_id(request, SigningRequestNotFound("not a request id"))
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
