"""``GET /openapi.json`` names every route the app serves, and nothing it does not: the
document is compared with the aiohttp router of an app with every surface configured."""

from __future__ import annotations

import re
import uuid

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from signer.app import create_app
from signer.http.kit.contract import METHODS, only_served, served_operations
from signer.http.openapi import document
from signer.settings.config import load_settings
from tests.support.service import DEV_CONFIG, EVERY_SURFACE


def test_the_document_describes_exactly_the_routes_the_app_serves() -> None:
    settings = load_settings(DEV_CONFIG, env={**EVERY_SURFACE, "QES_HSM_PIN": "1234"})
    assert settings.web_signing and settings.audit.ui and settings.approvals.ui
    doc = document(settings.server)
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops if m in METHODS}
    served = served_operations(create_app(settings))
    assert served - described == set(), "served but not in /openapi.json"
    assert described - served == set(), "in /openapi.json but not served"


def test_every_path_parameter_is_declared() -> None:
    """OpenAPI 3.1 §4.8.12.1: each template expression of a path is a declared path parameter."""
    doc = document(load_settings(DEV_CONFIG, env={**EVERY_SURFACE, "QES_HSM_PIN": "1234"}).server)
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p.get("in") == "path"}
            assert names <= declared, f"{method.upper()} {path}: {sorted(names - declared)}"


def test_the_served_document_leaves_out_the_surfaces_that_are_off() -> None:
    """``GET /openapi.json`` keeps only what this deployment's router serves (issue 17): with
    web signing and the UIs off, their operations are not described, every other one is."""
    settings = load_settings(DEV_CONFIG, env={"QES_HSM_PIN": "1234"})
    assert settings.web_signing is None
    served = served_operations(create_app(settings))
    paths = only_served(document(settings.server)["paths"], served)
    described = {(m, p) for p, ops in paths.items() for m in ops if m in METHODS}
    assert described == served
    assert "/api/v1/signing-requests" not in paths and "/audit" not in paths


def _value(parameter: re.Match[str]) -> str:
    """A value the route pattern of a path parameter takes."""
    return {"{id}": str(uuid.uuid4()), "{fmt}": "csv"}.get(parameter.group(0), "1")


async def test_every_method_the_document_does_not_describe_gets_405_with_allow() -> None:
    """RFC 9110 §15.5.6, for every described path: a method it does not describe is 405 with
    ``Allow`` naming exactly the described ones (and HEAD with GET, RFC 9110 §9.3.2)."""
    settings = load_settings(DEV_CONFIG, env={**EVERY_SURFACE, "QES_HSM_PIN": "1234"})
    app = create_app(settings)
    for path, ops in document(settings.server)["paths"].items():
        described = {m.upper() for m in ops if m in METHODS}
        allowed = described | ({"HEAD"} if "GET" in described else set())
        concrete = re.sub(r"\{\w+\}", _value, path)
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} - allowed:
            match = await app.router.resolve(make_mocked_request(method, concrete, app=app))
            refusal = match.http_exception
            assert isinstance(refusal, web.HTTPMethodNotAllowed), (method, path)
            assert set(refusal.allowed_methods) == allowed, (method, path)
