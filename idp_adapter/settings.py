"""Per-issuer settings, validated when built (a bad value stops the start).

One :class:`IssuerSettings` per trusted OpenID Provider or workload-identity issuer. The
values follow OIDC Discovery 1.0 §3/§4 (issuer URL) and RFC 7519 §4.1 (registered claims).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from ._claims import Template, valid_path
from ._verify import ABSENT_TYP, normalize_typ
from .errors import ConfigError

__all__ = [
    "ALWAYS",
    "DPOP_ALGORITHMS",
    "PROFILES",
    "SUPPORTED_ALGORITHMS",
    "IssuerSettings",
    "check_url",
]

#: Signature levels an identity may be allowed to use.
PROFILES: Final = frozenset({"qes", "qualified", "advanced"})

#: Asymmetric JWS algorithms (RFC 7518 §3, RFC 8037 §3.1, RFC 9864) we can verify;
#: never ``none``, never HS*.
SUPPORTED_ALGORITHMS: Final = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    | {"EdDSA", "Ed25519", "Ed448"}
)

#: ``require_jti = "always"``: a token without ``jti`` is refused (default ``True``: a token
#: that carries one spends it per signing operation; one without is accepted).
ALWAYS: Final = "always"

#: DPoP proof algorithms accepted unless an issuer says otherwise (RFC 9449 §4.3 step 5).
DPOP_ALGORITHMS: Final = ("ES256", "ES384", "EdDSA", "PS256", "RS256")

_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FIELD = re.compile(r"[a-z][a-z0-9_]*")
_MAX_LEEWAY: Final = timedelta(minutes=5)
#: RFC 6838 §4.2 media type name characters (``typ``, RFC 7515 §4.1.9, without ``application/``).
_TYP = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*")


def check_url(value: str, what: str) -> None:
    """https anywhere; plain http only on the loopback host (development IdP)."""
    parts = urlsplit(value)
    if parts.query or parts.fragment or not parts.hostname:
        raise ValueError(f"{what} must be an absolute URL without query or fragment")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return
    raise ValueError(f"{what} must use https (http only on 127.0.0.1/localhost)")


@dataclass(frozen=True)
class IssuerSettings:
    """A trusted issuer: how to verify its tokens and map them to a certificate subject.

    ``subject`` maps certificate-subject fields to templates with ``{claim}`` placeholders
    (dotted paths allowed) and literals, e.g. ``{"serial_number": "PNODE-{sub}"}``.

    Several entries may share one ``issuer`` (one IdP issues both workload tokens, mapped to a
    legal person, and user tokens, mapped to a natural person): ``match_claims`` (exact match,
    type included) selects the entry, the first matching one in configuration order.

    ``grants_roles`` lists the roles this issuer is trusted to grant: only these values of its
    ``roles_claim`` and ``groups_claim`` count (auditor, approver group, admin, policy rules);
    any other is ignored (default: none). Every other trusted issuer can sign, but cannot make
    anyone an auditor or an approver. ``token_types`` are the bearer-token ``typ`` values
    accepted (RFC 9068 §4: ``at+jwt``; ``jwt`` or ``absent`` for workload-identity issuers).

    ``sender_constraint``: ``dpop`` (RFC 9449) or ``mtls`` (RFC 8705 certificate-bound) makes
    every token of this issuer usable only by the holder of its key; plain bearer use is
    refused. ``dpop_algorithms`` are the proof algorithms accepted, ``dpop_max_age`` the
    ``iat`` window of a proof, ``dpop_nonce`` asks for a server nonce (RFC 9449 §9).
    """

    name: str
    issuer: str
    audience: str
    subject_type: Literal["natural", "legal"]
    subject: Mapping[str, str]
    profiles: tuple[str, ...]
    default_profile: str
    algorithms: tuple[str, ...] = ("ES256", "ES384", "RS256", "PS256", "EdDSA")
    leeway: timedelta = timedelta(seconds=30)
    require_jti: bool | Literal["always"] = True
    required_claims: Mapping[str, str | bool | int] = field(default_factory=dict)
    roles_claim: str = "roles"
    groups_claim: str = "groups"
    jwks_uri: str | None = None
    match_claims: Mapping[str, str | bool | int] = field(default_factory=dict)
    grants_roles: frozenset[str] = frozenset()
    token_types: frozenset[str] = frozenset({"at+jwt"})
    sender_constraint: Literal["none", "dpop", "mtls"] = "none"
    dpop_algorithms: tuple[str, ...] = DPOP_ALGORITHMS
    dpop_nonce: bool = False
    dpop_max_age: timedelta = timedelta(seconds=60)
    templates: Mapping[str, Template] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            self._validate()
        except ValueError as exc:
            raise ConfigError(f"issuers.{self.name}: {exc}") from exc

    def _set(self, attr: str, value: Any) -> None:
        object.__setattr__(self, attr, value)

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError("name must match [A-Za-z0-9][A-Za-z0-9_.-]*")
        check_url(self.issuer, "issuer")
        if self.jwks_uri is not None:
            check_url(self.jwks_uri, "jwks_uri")
        if not isinstance(self.audience, str) or not self.audience:
            raise ValueError("audience must be a non-empty string")
        if self.subject_type not in ("natural", "legal"):
            raise ValueError("subject_type must be 'natural' or 'legal'")
        self._validate_subject()
        self._validate_profiles()
        self._validate_algorithms()
        if not isinstance(self.leeway, timedelta) or not (
            timedelta(0) <= self.leeway <= _MAX_LEEWAY
        ):
            raise ValueError("leeway must be a timedelta between 0 and 5 minutes")
        if not isinstance(self.require_jti, bool) and self.require_jti != ALWAYS:
            raise ValueError('require_jti must be true, false or "always"')
        self._set("required_claims", _claim_values(self.required_claims, "required_claims"))
        self._set("match_claims", _claim_values(self.match_claims, "match_claims"))
        if not isinstance(self.roles_claim, str) or not valid_path(self.roles_claim):
            raise ValueError("roles_claim must be a claim name or dotted path")
        if not isinstance(self.groups_claim, str) or not valid_path(self.groups_claim):
            raise ValueError("groups_claim must be a claim name or dotted path")
        self._validate_grants_and_types()
        self._validate_sender_constraint()

    def _validate_sender_constraint(self) -> None:
        if self.sender_constraint not in ("none", "dpop", "mtls"):
            raise ValueError("sender_constraint must be 'none', 'dpop' or 'mtls'")
        algorithms = tuple(self.dpop_algorithms)
        if not algorithms or not all(a in SUPPORTED_ALGORITHMS for a in algorithms):
            raise ValueError("dpop_algorithms must be supported asymmetric algorithms")
        self._set("dpop_algorithms", algorithms)
        if not isinstance(self.dpop_nonce, bool):
            raise ValueError("dpop_nonce must be a boolean")
        if not isinstance(self.dpop_max_age, timedelta) or not (
            timedelta(seconds=1) <= self.dpop_max_age <= _MAX_LEEWAY
        ):
            raise ValueError("dpop_max_age must be between 1 second and 5 minutes")

    def _validate_subject(self) -> None:
        if not isinstance(self.subject, Mapping) or not self.subject:
            raise ValueError("subject must be a non-empty mapping")
        templates: dict[str, Template] = {}
        for key, source in self.subject.items():
            if not isinstance(key, str) or not _FIELD.fullmatch(key):
                raise ValueError(f"subject field {key!r} must match [a-z][a-z0-9_]*")
            if not isinstance(source, str):
                raise ValueError(f"subject.{key} must be a string template")
            try:
                templates[key] = Template.compile(source)
            except ValueError as exc:
                raise ValueError(f"subject.{key}: {exc}") from exc
        self._set("subject", MappingProxyType(dict(self.subject)))
        self._set("templates", MappingProxyType(templates))

    def _validate_profiles(self) -> None:
        profiles = tuple(self.profiles)
        if not profiles or not all(isinstance(p, str) and p in PROFILES for p in profiles):
            raise ValueError(f"profiles must be a non-empty subset of {sorted(PROFILES)}")
        if len(set(profiles)) != len(profiles):
            raise ValueError("profiles must not repeat")
        if self.default_profile not in profiles:
            raise ValueError("default_profile must be one of profiles")
        self._set("profiles", profiles)

    def _validate_grants_and_types(self) -> None:
        grants = self.grants_roles
        if isinstance(grants, str) or not all(isinstance(r, str) and r.strip() for r in grants):
            raise ValueError("grants_roles must be a list of role names")
        self._set("grants_roles", frozenset(grants))
        types = self.token_types
        if isinstance(types, str) or not types or not all(isinstance(t, str) for t in types):
            raise ValueError('token_types must be a non-empty list such as ["at+jwt"]')
        normalized = frozenset(normalize_typ(t) for t in types)
        for typ in normalized:
            if typ != ABSENT_TYP and not _TYP.fullmatch(typ):
                raise ValueError(f"token_types: {typ!r} is not a media type (or {ABSENT_TYP!r})")
        self._set("token_types", normalized)

    def _validate_algorithms(self) -> None:
        algorithms = tuple(self.algorithms)
        if not algorithms:
            raise ValueError("algorithms must not be empty")
        for alg in algorithms:
            if not isinstance(alg, str) or alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"algorithm {alg!r} is never allowed (none/HMAC)")
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"algorithm {alg!r} is not supported")
        self._set("algorithms", algorithms)


def _claim_values(values: object, what: str) -> Mapping[str, str | bool | int]:
    """Validate a claim -> exact value mapping; returns a read-only copy."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{what} must be a mapping")
    for key, value in values.items():
        if not isinstance(key, str) or not valid_path(key):
            raise ValueError(f"{what} key {key!r} is not a claim name")
        if not isinstance(value, str | bool | int):
            raise ValueError(f"{what}.{key} must be a string, boolean or integer")
    return MappingProxyType(dict(values))
