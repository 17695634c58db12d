"""Admin API of the kill switch (issue 7): suspend and resume identities, clients, the signer;
and which policy file a replica enforces (``GET /api/v1/admin/policy``).

``GET /api/v1/admin/suspensions`` lists what is suspended; ``POST /api/v1/admin/suspensions``
suspends (201; 200 when it already was), ``POST /api/v1/admin/suspensions/resume`` resumes
(200; 404 ``not-suspended``). The body names the target::

    {"scope": "identity", "issuer": "https://idp…", "subject": "alice", "reason": "…"}
    {"scope": "client", "client_id": "payroll"}
    {"scope": "all"}

A bearer token with the admin role (``[policy] admin_role``, default ``qes-admin``) is needed.
Each action is logged (``ca.logentry`` kind 0x04) and reaches every replica within a second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from signer.errors import DatabaseUnavailable, SignerError
from signer.http.api.models import SuspensionTarget
from signer.http.kit.auth import authenticate
from signer.http.kit.body import read_json
from signer.http.kit.models import ref, validate
from signer.http.kit.problems import Forbidden, InvalidRequest
from signer.http.kit.state import REQUEST_ID, SERVICES, Services
from signer.policy.enforcement import (
    ApprovalRequired,
    Gate,
    NotSuspended,
    Suspended,
    UnknownIssuer,
    resolve_issuer,
)
from signer.policy.rules import (
    AcrRequired,
    PolicyDenied,
    PolicyLevelNotAllowed,
    PolicyProfileNotAllowed,
    PolicyTooManyDigests,
    RateLimited,
)
from signer.storage.policy import AdminAction, Suspension, Target


class AdminRoleRequired(Forbidden):
    slug = "admin-role-required"
    title = "This endpoint needs a token with the administrator role"


class KillSwitchUnavailable(SignerError):
    slug = "kill-switch-unavailable"
    title = "The kill switch is not available in this process"
    status = 503


def suspension_json(s: Suspension) -> dict[str, Any]:
    t = s.target
    return {
        "scope": t.scope,
        "issuer": t.token_issuer,
        "subject": t.token_subject,
        "client_id": t.client_id,
        "reason": s.action.reason,
        "suspended_at": s.action.acted_at.isoformat(),
        "action_id": str(s.action.id),
    }


def parse_target(body: Any) -> tuple[Target, str | None]:
    """The body (model: ``SuspensionTarget``) as the kill switch's target and reason."""
    parsed = validate(SuspensionTarget, body)
    wanted = {"identity": ("issuer", "subject"), "client": ("client_id",), "all": ()}
    for name in ("issuer", "subject", "client_id"):
        if (name in wanted[parsed.scope]) != (getattr(parsed, name) is not None):
            need = " and ".join(wanted[parsed.scope]) or "no target fields"
            raise InvalidRequest(f"scope {parsed.scope!r} takes {need}")
    target = Target(parsed.scope, parsed.issuer, parsed.subject, parsed.client_id)
    return target, parsed.reason


async def _admin(request: web.Request) -> tuple[Services, Gate, str | None, str]:
    services: Services = request.app[SERVICES]
    principal = await authenticate(request)
    role = services.settings.policy.admin_role
    if role not in principal.roles:
        raise AdminRoleRequired(f"{principal.subject} lacks role {role!r}")
    gate = services.signing.gate
    if gate is None:
        raise KillSwitchUnavailable("no gate wired")
    return services, gate, principal.issuer, principal.subject


async def list_suspensions(request: web.Request) -> web.Response:
    _, gate, _, _ = await _admin(request)
    items = await gate.suspensions.list()
    return web.json_response({"suspensions": [suspension_json(s) for s in items]})


def _resolved(services: Services, target: Target) -> Target:
    if target.token_issuer is None:
        return target
    issuer = resolve_issuer(services.settings, target.token_issuer)
    return Target("identity", token_issuer=issuer, token_subject=target.token_subject)


async def _act(request: web.Request, action: str) -> tuple[Gate, Target, AdminAction | None]:
    """Suspend or resume the target in the body, as the administrator who sent it."""
    services, gate, issuer, subject = await _admin(request)  # a non-admin learns nothing more
    target, reason = parse_target(await read_json(request))
    target = _resolved(services, target)
    done = await gate.suspensions.act(
        action,
        target,
        actor_issuer=issuer,
        actor_subject=subject,
        request_id=request[REQUEST_ID],
        reason=reason,
    )
    return gate, target, done


async def suspend(request: web.Request) -> web.Response:
    gate, target, done = await _act(request, "suspend")
    current = [s for s in await gate.suspensions.list() if s.target == target]
    body: dict[str, Any] = {"suspended": True, "changed": done is not None}
    if current:
        body["suspension"] = suspension_json(current[0])
    return web.json_response(body, status=201 if done is not None else 200)


async def resume(request: web.Request) -> web.Response:
    _, _, done = await _act(request, "resume")
    assert done is not None  # resume raises NotSuspended otherwise
    return web.json_response({"suspended": False, "action_id": str(done.id)})


async def show_policy(request: web.Request) -> web.Response:
    """The rule set this replica enforces: file, SHA-256, rule names, when it was loaded, and
    the last refused version since (``rejected``); ``{"file": null}`` without a policy file."""
    _, gate, _, _ = await _admin(request)
    if gate.policy is None:
        return web.json_response({"file": None})
    status = gate.policy.status
    return web.json_response(
        {
            "file": status.file,
            "sha256": status.sha256,
            "rules": list(status.rules),
            "loaded_at": status.loaded_at.isoformat(),
            "rejected": status.rejected,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/admin/policy", show_policy)
    app.router.add_get("/api/v1/admin/suspensions", list_suspensions)
    app.router.add_post("/api/v1/admin/suspensions", suspend)
    app.router.add_post("/api/v1/admin/suspensions/resume", resume)


#: What the policy and the kill switch add to every signing endpoint's problems.
POLICY_ERRORS: list[type[SignerError]] = [
    PolicyDenied,
    PolicyProfileNotAllowed,
    PolicyLevelNotAllowed,
    AcrRequired,
    PolicyTooManyDigests,
    ApprovalRequired,
    Suspended,
    RateLimited,
]


def admin_paths(
    bearer: list[dict[str, list[str]]], errors: Callable[[list[type[SignerError]]], Any]
) -> dict[str, Any]:
    """OpenAPI 3.1 paths of the kill switch (``signer.http.openapi`` merges them)."""
    body = {"required": True, "content": {"application/json": {"schema": ref(SuspensionTarget)}}}
    ok = {"description": "Done", "content": {"application/json": {"schema": {"type": "object"}}}}
    common = [AdminRoleRequired, DatabaseUnavailable]
    return {
        "/api/v1/admin/policy": {
            "get": {
                "summary": "The signing policy this replica enforces (administrator role)",
                "description": (
                    "file, sha256 and rule names of the rule set in force, loaded_at, and "
                    "rejected: the error of the last refused version since (null when the "
                    "file on disk is the one in force)."
                ),
                "security": bearer,
                "responses": {"200": ok, **errors(common)},
            }
        },
        "/api/v1/admin/suspensions": {
            "get": {
                "summary": "What is suspended (administrator role)",
                "security": bearer,
                "responses": {"200": ok, **errors(common)},
            },
            "post": {
                "summary": "Suspend an identity, an RP client or the whole signer",
                "description": (
                    "Effective on every replica within a second; logged (entry kind 0x04). "
                    "201 when it changed something, 200 when it was already suspended. "
                    "Suspended requests get 403 `/problems/suspended`."
                ),
                "security": bearer,
                "requestBody": body,
                "responses": {
                    "201": ok,
                    "200": ok,
                    **errors([InvalidRequest, UnknownIssuer, *common]),
                },
            },
        },
        "/api/v1/admin/suspensions/resume": {
            "post": {
                "summary": "Lift a suspension",
                "security": bearer,
                "requestBody": body,
                "responses": {
                    "200": ok,
                    **errors([InvalidRequest, UnknownIssuer, NotSuspended, *common]),
                },
            }
        },
    }
