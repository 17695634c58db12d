"""``GET /openapi.json`` names every route the app serves, and nothing it does not: the
document is compared with the aiohttp router of an app with every surface configured."""

from __future__ import annotations

import re

from aiohttp import web

from signer.app import create_app
from signer.http.openapi import document
from signer.settings.config import load_settings
from tests.support.service import DEV_CONFIG

EVERY_SURFACE = {
    "QES_HSM_PIN": "1234",
    "QES__WEB_SIGNING__CLIENT_ID": "demo-signer-web",
    "QES__WEB_SIGNING__ISSUER": "demo_people",
    "QES_WEB_SIGNING_CLIENT_SECRET": "s3cret",
    "QES__AUDIT__UI_CLIENT_ID": "demo-audit-ui",
    "QES__AUDIT__UI_ISSUER": "demo_people",
    "QES_AUDIT_UI_CLIENT_SECRET": "s3cret",
    "QES__APPROVALS__UI_CLIENT_ID": "demo-approvals-ui",
    "QES__APPROVALS__UI_ISSUER": "demo_people",
    "QES_APPROVALS_UI_CLIENT_SECRET": "s3cret",
}
METHODS = {"get", "post", "put", "patch", "delete"}


def _served(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route; ``{n:[0-9]+}`` as ``{n}``, a static prefix as
    ``prefix/{file}``; the HEAD aiohttp adds to each GET is the GET's."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if "prefix" in info:
            path = f"{info['prefix']}/{{file}}"
        else:
            path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", info.get("formatter") or info["path"])
        if route.method.lower() in METHODS:
            found.add((route.method.lower(), path))
    return found


def test_the_document_describes_exactly_the_routes_the_app_serves() -> None:
    settings = load_settings(DEV_CONFIG, env=EVERY_SURFACE)
    assert settings.web_signing and settings.audit.ui and settings.approvals.ui
    doc = document(settings.server)
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops if m in METHODS}
    served = _served(create_app(settings))
    assert served - described == set(), "served but not in /openapi.json"
    assert described - served == set(), "in /openapi.json but not served"


def test_every_path_parameter_is_declared() -> None:
    """OpenAPI 3.1 §4.8.12.1: each template expression of a path is a declared path parameter."""
    doc = document(load_settings(DEV_CONFIG, env=EVERY_SURFACE).server)
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p.get("in") == "path"}
            assert names <= declared, f"{method.upper()} {path}: {sorted(names - declared)}"
