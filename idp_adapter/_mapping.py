"""From verified claims to a :class:`~idp_adapter.principal.Principal`.

OIDC Core §2 (``acr``, ``amr``, ``auth_time``, ``azp``), RFC 9068 §2.2 (``client_id``) and
§2.2.3.1 (roles and groups: RFC 9068 §7.2.1 leaves it to the resource server which issuer it
trusts for them; here only the values listed in the issuer's ``grants_roles``), RFC 7519 §4.1.7
(``jti``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from ._claims import MISSING, lookup
from ._verify import numeric_date
from .errors import IdentityNotAllowed, InvalidToken
from .principal import Principal
from .settings import IssuerSettings

__all__ = ["build_principal", "claims_match", "ungranted_roles"]


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidToken("malformed", f"{name} is not a string")
    return value


def claims_match(expected: Mapping[str, str | bool | int], claims: Mapping[str, Any]) -> str | None:
    """The first claim path whose value differs (exact, type included: ``True`` is not ``1``)."""
    for path, want in expected.items():
        value = lookup(claims, path)
        if type(value) is not type(want) or value != want:
            return path
    return None


def _check_required(settings: IssuerSettings, claims: Mapping[str, Any]) -> None:
    path = claims_match(settings.required_claims, claims)
    if path is not None:
        raise IdentityNotAllowed(f"claim {path!r} does not have the required value")


def _roles(settings: IssuerSettings, claims: Mapping[str, Any]) -> frozenset[str]:
    """The roles claimed that this issuer may grant (``grants_roles``); the rest count not."""
    return _string_set(claims, settings.roles_claim) & settings.grants_roles


def _groups(settings: IssuerSettings, claims: Mapping[str, Any]) -> frozenset[str]:
    return _string_set(claims, settings.groups_claim) & settings.grants_roles


def ungranted_roles(settings: IssuerSettings, claims: Mapping[str, Any]) -> frozenset[str]:
    """Role and group values a verified token claims but its issuer may not grant."""
    try:
        claimed = _string_set(claims, settings.roles_claim) | _string_set(
            claims, settings.groups_claim
        )
    except IdentityNotAllowed:
        return frozenset()
    return claimed - settings.grants_roles


def _string_set(claims: Mapping[str, Any], path: str) -> frozenset[str]:
    """A JSON array of strings, or one space-separated string (as OAuth ``scope``)."""
    value = lookup(claims, path)
    if value is MISSING or value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise IdentityNotAllowed(f"claim {path!r} must be a list of strings")


def _amr(claims: Mapping[str, Any]) -> tuple[str, ...]:
    value = claims.get("amr")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidToken("malformed", "amr is not an array of strings")
    return tuple(value)


def _verified_email(claims: Mapping[str, Any]) -> str | None:
    email = claims.get("email")
    if claims.get("email_verified") is not True or not isinstance(email, str) or not email:
        return None
    return email


def build_principal(
    settings: IssuerSettings, claims: Mapping[str, Any], expires_at: datetime
) -> Principal:
    """Render the subject mapping, enforce ``required_claims``, collect the rest."""
    _check_required(settings, claims)
    attributes = {name: tpl.render(claims) for name, tpl in settings.templates.items()}
    auth_time = numeric_date(claims, "auth_time", required=False)
    return Principal(
        issuer=settings.issuer,
        issuer_name=settings.name,
        subject=claims["sub"],
        client_id=_optional_str(claims, "client_id") or _optional_str(claims, "azp"),
        subject_type=settings.subject_type,
        attributes=MappingProxyType(attributes),
        profiles=settings.profiles,
        default_profile=settings.default_profile,
        roles=_roles(settings, claims),
        token_id=_optional_str(claims, "jti"),
        expires_at=expires_at,
        acr=_optional_str(claims, "acr"),
        amr=_amr(claims),
        auth_time=None if auth_time is None else datetime.fromtimestamp(auth_time, UTC),
        email=_verified_email(claims),
        groups=_groups(settings, claims),
        jkt=_confirmation(claims, "jkt"),
        x5t_s256=_confirmation(claims, "x5t#S256"),
    )


def _confirmation(claims: Mapping[str, Any], method: str) -> str | None:
    """A confirmation method of RFC 7800 §3.1 ``cnf`` (RFC 9449 §6.1, RFC 8705 §3.1)."""
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    if not isinstance(cnf, Mapping):
        raise InvalidToken("malformed", "cnf is not an object")
    return _optional_str(cnf, method)
