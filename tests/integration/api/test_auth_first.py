"""Authentication before body validation (issue 17 item 2): on every authenticated operation of
the OpenAPI document that the app serves, a request without a token and with a bad body is
answered 401 (RFC 6750 §3.1), never 400/422 for the body it did not earn the right to send."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from signer.http.openapi import document
from signer.settings.config import load_settings
from tests.support.service import DEV_CONFIG, SignerTestServer, assert_hsm_clean

METHODS = {"get", "post", "put", "patch", "delete"}
#: Malformed JSON with a JSON content type; a PDF upload gets a wrong type on top.
BAD_BODY = b'{"hash_algorithm": [], "hashes": [1, 2'


def _served(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", info.get("formatter") or info.get("path", ""))
        found.add((route.method.lower(), path))
    return found


#: The OAuth2 token endpoint takes its client's credentials in the body too
#: (``client_secret_post``, RFC 6749 §2.3.1), so it reads the body to authenticate; a body that
#: is not a form is ``invalid_request`` 400 there (§5.2). Checked below, not skipped.
TOKEN_ENDPOINT = ("post", "/csc/v2/oauth2/token")


def _authenticated_operations() -> list[tuple[str, str]]:
    """(method, path) of every operation with a non-empty ``security`` requirement but the
    token endpoint."""
    doc = document(load_settings(DEV_CONFIG, env={"QES_HSM_PIN": "1234"}).server)
    return sorted(
        (method, path)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if method in METHODS and op.get("security") and (method, path) != TOKEN_ENDPOINT
    )


def _concrete(path: str) -> str:
    """A path with its parameters filled: numbers for ``{n}``, a UUID for the rest."""
    path = path.replace("{n}", "1").replace("{fmt}", "jsonl")
    return re.sub(r"\{\w+\}", lambda _: str(uuid.uuid4()), path)


OPERATIONS = _authenticated_operations()


def test_the_route_table_has_authenticated_operations() -> None:
    """The parametrization below is not empty: signing, CSC, approvals, audit and admin."""
    paths = {p for _, p in OPERATIONS}
    for needed in (
        "/api/v1/signatures",
        "/api/v1/signatures/pdf",
        "/csc/v2/signatures/signHash",
        "/api/v1/admin/suspensions",
    ):
        assert needed in paths


#: Web signing (and with it the CSC v2 OAuth2 credential flow) on, as the quick start has it.
WEB_SIGNING = {
    "QES__WEB_SIGNING__CLIENT_ID": "demo-signer-web",
    "QES__WEB_SIGNING__ISSUER": "demo_people",
    "QES_WEB_SIGNING_CLIENT_SECRET": "s3cret",
}


@pytest.fixture
async def full_client(
    aiohttp_client: Callable[..., Any], signer_env: dict[str, str], ca_ready: None
) -> AsyncIterator[TestClient]:
    """The app with web signing on, for the RP API (the ``client`` fixture serves the rest)."""
    from signer.app import create_app

    app = create_app(load_settings(DEV_CONFIG, env={**signer_env, **WEB_SIGNING}))
    client = await aiohttp_client(SignerTestServer(app))
    yield client
    await assert_hsm_clean(app)


def _needs_web_signing(path: str) -> bool:
    return path.startswith("/api/v1/signing-requests") or path == TOKEN_ENDPOINT[1]


CORE = [op for op in OPERATIONS if not _needs_web_signing(op[1])]
RP = [op for op in OPERATIONS if _needs_web_signing(op[1])]


async def expect_401(client: TestClient, method: str, path: str) -> None:
    assert (method, path) in _served(client.server.app), f"{method} {path} is not served"
    kwargs: dict[str, Any] = {}
    if method in ("post", "put", "patch"):
        kwargs = {"data": BAD_BODY, "headers": {"Content-Type": "application/json"}}
    resp = await client.request(method.upper(), _concrete(path), **kwargs)
    text = await resp.text()
    assert resp.status == 401, f"{method.upper()} {path}: {resp.status} {text}"
    assert "WWW-Authenticate" in resp.headers


@pytest.mark.parametrize(("method", "path"), CORE, ids=[f"{m} {p}" for m, p in CORE])
async def test_no_token_and_a_bad_body_gets_401(client: TestClient, method: str, path: str) -> None:
    await expect_401(client, method, path)


@pytest.mark.parametrize(("method", "path"), RP, ids=[f"{m} {p}" for m, p in RP])
async def test_no_rp_credentials_and_a_bad_body_gets_401(
    full_client: TestClient, method: str, path: str
) -> None:
    await expect_401(full_client, method, path)


async def test_the_token_endpoint_without_credentials_is_refused(full_client: TestClient) -> None:
    """RFC 6749 §5.2: a form without client credentials is ``invalid_client``, 401."""
    resp = await full_client.post(TOKEN_ENDPOINT[1], data={"grant_type": "authorization_code"})
    assert resp.status == 401, await resp.text()
    assert (await resp.json())["error"] == "invalid_client"
