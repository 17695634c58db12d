"""Example web app (relying party) that sends a person to qes-signer to sign an upload.

DEMO ONLY: keeps its few values in process memory and a cookie. It shows the whole contract:

1. the person uploads a file: a PDF goes to the signer, which adds the signature field and
   returns the signed PDF (PAdES B-T); any other file is only hashed (it never leaves the app)
   and gets a detached CAdES B-T signature;
2. ``POST /api/v1/signing-requests`` with the app's client id and secret (HTTP Basic), the
   label and the PDF (format ``pades``) or SHA-256 (format ``cades``), the registered redirect
   URI and a fresh ``state`` (bound to this browser by a cookie, RFC 6749 §10.12);
3. the browser goes to ``sign_url``, logs in at the IdP, consents, and comes back with
   ``id`` and ``state`` (or ``error``);
4. the app checks ``state``, fetches ``GET /api/v1/signing-requests/{id}`` (and for a PDF its
   ``signed_pdf_url``) and offers the signed PDF or the ``.p7s``, and the certificate chain, for
   download.

    qes client add "Example RP" --redirect-uri http://127.0.0.1:8090/signed
    QES_RP_CLIENT_ID=… QES_RP_CLIENT_SECRET=… python deploy/example-rp/rp.py

Environment: ``QES_URL`` (default http://127.0.0.1:8780), ``QES_RP_URL`` (this app's own
base URL, default http://127.0.0.1:8090), ``QES_RP_CLIENT_ID``, ``QES_RP_CLIENT_SECRET``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

STATE_COOKIE = "example-rp-state"


@dataclass
class Config:
    signer_url: str
    own_url: str
    client_id: str
    client_secret: str
    #: state -> request id; a real app keeps this in its own database.
    pending: dict[str, str] = field(default_factory=dict)

    @property
    def redirect_uri(self) -> str:
        return f"{self.own_url}/signed"


CONFIG = web.AppKey("config", Config)


def page(title: str, body: str) -> web.Response:
    return web.Response(
        text=f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}"
        f"</title><body><h1>{html.escape(title)}</h1>{body}</body></html>",
        content_type="text/html",
    )


async def index(request: web.Request) -> web.Response:
    return page(
        "Example RP: sign a file",
        '<form method=post action="/start" enctype="multipart/form-data">'
        "<label>File <input type=file name=file required></label> "
        "<button type=submit>Sign with qes-signer</button></form>",
    )


async def start(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    form = await request.post()
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        raise web.HTTPBadRequest(text="no file")
    content = upload.file.read()
    state = secrets.token_urlsafe(24)
    label = upload.filename or "document"
    if content.lstrip().startswith(b"%PDF-"):
        document = {"label": label, "pdf": base64.b64encode(content).decode()}
        fmt = "pades"
    else:
        digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
        document = {"label": label, "digest": digest}
        fmt = "cades"
    body = {
        "documents": [document],
        "format": fmt,
        "redirect_uri": cfg.redirect_uri,
        "state": state,
    }
    auth = {"Authorization": aiohttp.encode_basic_auth(cfg.client_id, cfg.client_secret)}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{cfg.signer_url}/api/v1/signing-requests", json=body, headers=auth) as r,
    ):
        created: dict[str, Any] = await r.json()
        if r.status != 201:
            return page("The signer refused the request", html.escape(str(created)))
    cfg.pending[state] = created["id"]
    resp = web.Response(status=303, headers={"Location": created["sign_url"]})
    resp.set_cookie(STATE_COOKIE, state, httponly=True, samesite="Lax", max_age=1800)
    return resp


async def signed(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    state = request.query.get("state", "")
    mine = request.cookies.get(STATE_COOKIE, "")
    if not state or not secrets.compare_digest(state, mine) or state not in cfg.pending:
        return page("Unknown or foreign state", "<p>This answer was not for this browser.</p>")
    request_id = cfg.pending.pop(state)
    if "error" in request.query:
        return page("Not signed", f"<p id=error>{html.escape(request.query['error'])}</p>")
    if request.query.get("id") != request_id:
        return page("Unexpected request id", "")
    auth = {"Authorization": aiohttp.encode_basic_auth(cfg.client_id, cfg.client_secret)}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{cfg.signer_url}/api/v1/signing-requests/{request_id}", headers=auth) as r,
    ):
        result: dict[str, Any] = await r.json()
    if result.get("status") != "completed":
        return page("Not signed", f"<p id=error>{html.escape(str(result.get('status')))}</p>")
    signed_result = result["result"]
    doc = signed_result["documents"][0]
    chain = base64.b64encode(signed_result["chain"].encode()).decode()
    host = urlsplit(signed_result["record_url"]).netloc
    if "signed_pdf_url" in doc:
        async with (
            aiohttp.ClientSession() as http,
            http.get(doc["signed_pdf_url"], headers=auth) as r,
        ):
            pdf = base64.b64encode(await r.read()).decode()
        download = (
            f'<a id=pdf download="signed.pdf" href="data:application/pdf;base64,{pdf}">'
            "Download the signed PDF</a> "
        )
    else:
        download = (
            f'<a id=p7s download="signature.p7s" href="data:application/pkcs7-signature;'
            f'base64,{doc["signature"]}">Download signature (.p7s)</a> '
        )
    return page(
        "Signed",
        f"<p id=label>{html.escape(doc['label'])}</p>"
        f"<p>Certificate serial <code id=serial>{html.escape(signed_result['serial'])}</code>"
        f" (record at {html.escape(host)})</p>"
        f"<p>{download}"
        f'<a id=chain download="chain.pem" href="data:application/x-pem-file;base64,{chain}">'
        "Download certificate chain</a></p>",
    )


def make_app(cfg: Config) -> web.Application:
    app = web.Application()
    app[CONFIG] = cfg
    app.router.add_get("/", index)
    app.router.add_post("/start", start)
    app.router.add_get("/signed", signed)
    return app


if __name__ == "__main__":
    own = os.environ.get("QES_RP_URL", "http://127.0.0.1:8090")
    config = Config(
        signer_url=os.environ.get("QES_URL", "http://127.0.0.1:8780"),
        own_url=own,
        client_id=os.environ["QES_RP_CLIENT_ID"],
        client_secret=os.environ["QES_RP_CLIENT_SECRET"],
    )
    parts = urlsplit(own)
    web.run_app(make_app(config), host=parts.hostname or "127.0.0.1", port=parts.port or 8090)
