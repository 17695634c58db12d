"""A dev IdP with the policy tests' workload clients, and the policy file they are checked by."""

from __future__ import annotations

import base64
import os
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.idp import DEMO_CLIENTS, RunningIdp
from tests.support.service import api_headers

MFA = "urn:qes-signer:dev-idp:mfa"


def bot(client_id: str, **claims: Any) -> dict[str, Any]:
    """A client-credentials client acting for an organisation (as the demo's demo-batch)."""
    return {
        "client_id": client_id,
        "client_secret": f"demo-only-{client_id}-secret",
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "scope": "sign",
        "claims": {
            "identity_type": "organisation",
            "org_name": "Policy Test GmbH",
            "org_id": "NTRDE-HRB777777",
            "organizationIdentifier": "NTRDE-HRB777777",
            "country": "DE",
            **claims,
        },
    }


BOTS = [
    bot("pol-treasury", groups=["treasury"]),
    bot("pol-denied"),
    bot("pol-nomatch"),
    bot("pol-minute"),
    bot("pol-day"),
    bot("pol-digests"),
    bot("pol-acr"),
    bot("pol-approve"),
    bot("pol-victim"),
    bot("pol-admin", roles=["qes-admin"]),
    bot("pol-csc"),
    bot("pol-retry"),
    bot("pol-csc-retry"),
]
CLIENTS = [*DEMO_CLIENTS, *BOTS]


def policy_text(issuer: str) -> str:
    """First match wins; one rule per rule kind the tests check."""
    return f"""\
# policy tests (first match wins)
[[rule]]
name = "blocked-subject"
issuers = ["{issuer}"]
subjects = ["pol-denied"]
allow = false

[[rule]]
name = "admins"
roles = ["qes-admin"]
profiles = ["advanced"]

[[rule]]
name = "treasury"
groups = ["treasury"]
profiles = ["advanced", "qualified"]
levels = ["advanced"]

[[rule]]
name = "minute-bot"
clients = ["pol-minute"]
rate_limit = {{ per_minute = 2 }}

[[rule]]
name = "day-bot"
clients = ["pol-day"]
rate_limit = {{ per_minute = 100, per_day = 3 }}

[[rule]]
name = "digest-bot"
clients = ["pol-digests"]
max_digests = 2

[[rule]]
name = "strong-client"
clients = ["pol-acr"]
acr = "{MFA}"

[[rule]]
name = "csc-bot"
clients = ["pol-csc"]
max_digests = 2
rate_limit = {{ per_minute = 3 }}

[[rule]]
name = "retry-bots"
clients = ["pol-retry", "pol-csc-retry"]
rate_limit = {{ per_minute = 100, per_day = 2 }}

[[rule]]
name = "needs-approval"
clients = ["pol-approve"]
approvals = {{ required = 1, group = "treasurers" }}

[[rule]]
name = "people"
email_domains = ["example.com"]
levels = ["advanced", "qualified"]

[[rule]]
name = "workloads"
issuers = ["{issuer}"]
clients = ["demo-batch", "pol-victim"]

[approver_groups.treasurers]
roles = ["treasurer"]
"""


async def token(idp: RunningIdp, client_id: str) -> str:
    return await idp.client_token(client_id, f"demo-only-{client_id}-secret")


async def post_sign(
    client: TestClient,
    bearer: str,
    *,
    n: int = 1,
    profile: str | None = None,
    operation: bool = True,
) -> tuple[int, Any, Any]:
    """POST n random SHA-256 digests (raw); status, body, headers. ``operation=False``: no
    ``Idempotency-Key``, so the token's ``jti`` is the operation (``api_headers``)."""
    body: dict[str, Any] = {
        "hash_algorithm": "sha256",
        "hashes": [base64.b64encode(os.urandom(32)).decode() for _ in range(n)],
    }
    if profile is not None:
        body["profile"] = profile
    resp = await client.post(
        "/api/v1/signatures", json=body, headers=api_headers(bearer, operation=operation)
    )
    return resp.status, await resp.json(), resp.headers
