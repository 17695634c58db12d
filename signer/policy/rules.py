"""Signing policy: who may sign what, how much, how often, and with whose approval.

The policy is one TOML file (``[policy] file`` in the configuration). It is an ordered list of
``[[rule]]`` tables; **the first rule whose every condition matches decides** (as a firewall
rule set: predictable, and the order is the operator's statement of precedence). A request that
no rule matches is refused (``policy-denied``); a matching rule with ``allow = false`` refuses
too. Without a policy file the signer behaves as before: each issuer's ``profiles`` decide.

Conditions (all optional; a rule without conditions matches everyone, so no rule may follow it):

``issuers``        the token's ``iss`` is one of these (OIDC Core §2)
``subjects``       its ``sub`` is one of these; needs ``issuers`` (``sub`` is unique only per
                   issuer, OIDC Core §2)
``clients``        the relying-party client: RFC 9068 §2.2 ``client_id`` / OIDC ``azp`` of a
                   batch token, the registered client of a web-signing request
``groups``         the ``groups`` claim (issuer setting ``groups_claim``) has one of these
``roles``          the roles claim (RFC 9068 §2.2.3.1; issuer setting ``roles_claim``) has one
``email_domains``  the verified ``email`` (OIDC Core §5.1, ``email_verified`` true) is in one
                   of these domains (exact, case-insensitive; subdomains are listed explicitly)

Decisions (all optional): ``profiles`` and ``levels`` (subsets of qes/qualified/advanced; the
issuer's own ``profiles`` still apply), ``acr`` (the token's ``acr`` must be it, or a stronger
level of the top-level ``acr_levels = ["weakest", …, "strongest"]`` when the file gives one;
in web signing it triggers the step-up login), ``max_digests`` per request, ``rate_limit = {
per_minute = N, per_day = N }`` per identity (``iss`` + ``sub``; fixed UTC windows shared by
all replicas), and ``approvals = { required = M, group = "NAME" }``: M distinct members of an
approver group must approve.

Approver groups: ``[approver_groups.NAME]`` with ``members = [{ issuer = "…", subject = "…" }]``
and/or ``roles``/``groups`` (claim values that make a member; ``issuers`` limits those to some
issuers).

A file that does not parse or does not validate raises :class:`PolicyFileError` naming its line.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from idp_adapter.principal import Principal
from signer.errors import ConfigError, RequestError

__all__ = [
    "LEVELS",
    "PROFILES",
    "AcrRequired",
    "ApprovalRequirement",
    "Decision",
    "Policy",
    "PolicyDenied",
    "PolicyFileError",
    "PolicyLevelNotAllowed",
    "PolicyProfileNotAllowed",
    "PolicyRefusal",
    "PolicyTooManyDigests",
    "RateLimit",
    "RateLimited",
    "Rule",
    "parse_policy",
]

PROFILES = frozenset({"qes", "qualified", "advanced"})
#: Certificate levels (``ca.profiles.Level`` values); today a profile name is its level.
LEVELS = frozenset({"qes", "qualified", "advanced"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


# --- refusals (RFC 9457 problem types at the HTTP edge) -------------------------------------


class PolicyRefusal(RequestError):
    """Base of the refusals decided by the signing policy (logged as refusal entries)."""

    slug = "policy-denied"
    title = "The signing policy does not allow this request"
    status = 403


class PolicyDenied(PolicyRefusal):
    """No rule matches this identity and client, or the matching rule has ``allow = false``."""


class PolicyProfileNotAllowed(PolicyRefusal):
    slug = "policy-profile-not-allowed"
    title = "The signing policy does not allow this certificate profile"


class PolicyLevelNotAllowed(PolicyRefusal):
    slug = "policy-level-not-allowed"
    title = "The signing policy does not allow this certificate level"


class AcrRequired(PolicyRefusal):
    """The token's ``acr`` (OIDC Core §2) is not the one the policy requires."""

    slug = "policy-acr-required"
    title = "The signing policy requires a stronger authentication (acr)"


class PolicyTooManyDigests(PolicyRefusal):
    slug = "policy-too-many-digests"
    title = "The signing policy allows fewer digests per request"


class RateLimited(PolicyRefusal):
    """Per-identity rate limit reached (RFC 6585 §4); ``retry_after`` is in seconds (RFC 9110
    §10.2.3), when the window that is full frees."""

    slug = "rate-limited"
    title = "Too many signing requests for this identity; retry later"
    status = 429

    def __init__(self, message: str = "", *, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class PolicyFileError(ConfigError):
    """A policy file that does not parse or validate; ``line`` is 1-based (0: unknown)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalRequirement:
    required: int  # m
    group: str  # name of an approver group defined in the policy file

    def __post_init__(self) -> None:
        if self.required < 1:
            raise ValueError("approvals.required must be at least 1")


@dataclass(frozen=True)
class RateLimit:
    per_minute: int | None
    per_day: int | None

    def __post_init__(self) -> None:
        if self.per_minute is None and self.per_day is None:
            raise ValueError("rate_limit needs per_minute and/or per_day")


@dataclass(frozen=True)
class Decision:
    rule: str  # the matching rule's name (for logs/errors)
    profiles: frozenset[str]  # allowed certificate profiles
    levels: frozenset[str]  # allowed levels (e.g. advanced/qualified)
    required_acr: str | None
    max_digests: int | None
    rate_limit: RateLimit | None
    approvals: ApprovalRequirement | None
    #: The ``acr`` values that satisfy ``required_acr``: it and every stronger level of the
    #: file's ``acr_levels`` (weakest first); just ``required_acr`` without ``acr_levels``.
    acr_accepted: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.required_acr is not None and not self.acr_accepted:
            object.__setattr__(self, "acr_accepted", (self.required_acr,))

    def check_profile(self, profile: str) -> None:
        """Refuse a certificate profile or level this decision does not allow."""
        if profile not in self.profiles:
            raise PolicyProfileNotAllowed(f"rule {self.rule!r}: profile {profile!r}")
        if profile not in self.levels:  # a profile name is its level (ca.profiles.Level)
            raise PolicyLevelNotAllowed(f"rule {self.rule!r}: level {profile!r}")

    def check(self, principal: Principal, *, profile: str, digests: int) -> None:
        """Refuse a request this decision does not cover (profile, level, ``acr``, count).

        ``acr`` values are issuer-defined and unordered (OIDC Core §2), so the order comes from
        the file's ``acr_levels``; the web flow asks for it with ``acr_values`` (step-up)."""
        self.check_profile(profile)
        if self.required_acr is not None and principal.acr not in self.acr_accepted:
            raise AcrRequired(f"rule {self.rule!r}: acr {principal.acr!r}")
        if self.max_digests is not None and digests > self.max_digests:
            raise PolicyTooManyDigests(f"rule {self.rule!r}: {digests} > {self.max_digests}")


@dataclass(frozen=True)
class Conditions:
    """What a rule matches; ``None`` = any. Within a condition any listed value matches; all
    given conditions must match."""

    issuers: frozenset[str] | None = None
    subjects: frozenset[str] | None = None
    clients: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    roles: frozenset[str] | None = None
    email_domains: frozenset[str] | None = None

    @property
    def matches_everyone(self) -> bool:
        return all(getattr(self, f) is None for f in _CONDITIONS)

    def matches(self, principal: Principal, client_id: str | None) -> bool:
        if self.issuers is not None and principal.issuer not in self.issuers:
            return False
        if self.subjects is not None and principal.subject not in self.subjects:
            return False
        if self.clients is not None and client_id not in self.clients:
            return False
        if self.groups is not None and self.groups.isdisjoint(principal.groups):
            return False
        if self.roles is not None and self.roles.isdisjoint(principal.roles):
            return False
        if self.email_domains is not None:
            domain = _email_domain(principal.email)
            if domain is None or domain not in self.email_domains:
                return False
        return True


@dataclass(frozen=True)
class Rule:
    name: str
    conditions: Conditions
    allow: bool
    decision: Decision


@dataclass(frozen=True)
class Identity:
    issuer: str
    subject: str


@dataclass(frozen=True)
class ApproverGroup:
    """Members by identity, and/or by a role or group claim (limited to ``issuers``)."""

    name: str
    members: frozenset[Identity] = frozenset()
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    issuers: frozenset[str] | None = None

    def contains(self, principal: Principal) -> bool:
        if Identity(principal.issuer, principal.subject) in self.members:
            return True
        if self.issuers is not None and principal.issuer not in self.issuers:
            return False
        return not (
            self.roles.isdisjoint(principal.roles) and self.groups.isdisjoint(principal.groups)
        )


@dataclass(frozen=True)
class Policy:
    """An ordered rule set; pure and immutable (the reloader swaps whole policies)."""

    rules: tuple[Rule, ...]
    approver_groups: Mapping[str, ApproverGroup] = field(default_factory=dict)

    def decide(self, principal: Principal, *, client_id: str | None) -> Decision:
        """The first matching rule's decision; :class:`PolicyDenied` when none allows."""
        for rule in self.rules:
            if rule.conditions.matches(principal, client_id):
                if not rule.allow:
                    raise PolicyDenied(f"rule {rule.name!r} denies {principal.subject}")
                return rule.decision
        raise PolicyDenied(f"no policy rule matches {principal.subject} (client {client_id})")

    def is_member(self, group: str, principal: Principal) -> bool:
        """Whether ``principal`` belongs to the approver group (unknown group: no one)."""
        found = self.approver_groups.get(group)
        return found is not None and found.contains(principal)


def _email_domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].lower()


# --- parsing ---------------------------------------------------------------------------------

_CONDITIONS = ("issuers", "subjects", "clients", "groups", "roles", "email_domains")
_DECISIONS = ("allow", "profiles", "levels", "acr", "max_digests", "rate_limit", "approvals")
_RULE_KEYS = frozenset({"name", *_CONDITIONS, *_DECISIONS})
_GROUP_KEYS = frozenset({"members", "roles", "groups", "issuers"})
_SYNTAX_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_SYNTAX_EOF = re.compile(r"\s*\(at end of document\)$")


class _Invalid(Exception):
    """A semantic error at a key path, mapped to a line by :class:`_Lines`."""

    def __init__(self, path: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.path = tuple(path)
        self.message = message


def parse_policy(text: str) -> Policy:
    """Parse and validate a policy file; :class:`PolicyFileError` names the offending line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text) from exc
    try:
        return _policy(raw)
    except _Invalid as exc:
        raise PolicyFileError(_Lines(text).find(exc.path), exc.message) from None


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str) -> PolicyFileError:
    message = str(exc)
    at = _SYNTAX_POS.search(message)
    if at is not None:
        line, column = int(at.group(1)), int(at.group(2))
        return PolicyFileError(line, f"column {column}: {message[: at.start()]}")
    if _SYNTAX_EOF.search(message):
        last = max(1, len(text.splitlines()))
        return PolicyFileError(last, f"at the end of the file: {_SYNTAX_EOF.sub('', message)}")
    return PolicyFileError(0, message)


def _policy(raw: Mapping[str, Any]) -> Policy:
    unknown = sorted(set(raw) - {"rule", "approver_groups", "acr_levels"})
    if unknown:
        raise _Invalid(
            (unknown[0],),
            f"unknown key {unknown[0]!r} (expected [[rule]] tables and [approver_groups.NAME])",
        )
    groups_raw = raw.get("approver_groups", {})
    if not isinstance(groups_raw, dict):
        raise _Invalid(("approver_groups",), "approver_groups must be a table of groups")
    groups = {name: _group(name, body) for name, body in groups_raw.items()}
    rules_raw = raw.get("rule", [])
    if not isinstance(rules_raw, list) or not all(isinstance(r, dict) for r in rules_raw):
        raise _Invalid(("rule",), "rule must be an array of tables ([[rule]])")
    if not rules_raw:
        raise _Invalid(("rule",), "the policy has no [[rule]]: it would refuse every request")
    acr_levels: tuple[str, ...] = ()
    if "acr_levels" in raw:
        acr_levels = tuple(raw["acr_levels"]) if isinstance(raw["acr_levels"], list) else ()
        _strings(raw["acr_levels"], ("acr_levels",))
        if len(set(acr_levels)) != len(acr_levels):
            raise _Invalid(("acr_levels",), "acr_levels must not repeat a value")
    rules: list[Rule] = []
    for i, body in enumerate(rules_raw):
        rule = _rule(i, body, groups, acr_levels)
        if rules and rules[-1].conditions.matches_everyone:
            raise _Invalid(
                ("rule", i),
                f"rule {rule.name!r} can never match: rule "
                f"{rules[-1].name!r} before it matches everyone",
            )
        if any(r.name == rule.name for r in rules):
            raise _Invalid(("rule", i, "name"), f"rule name {rule.name!r} is used twice")
        rules.append(rule)
    return Policy(rules=tuple(rules), approver_groups=groups)


def _strings(
    value: Any, path: tuple[str | int, ...], *, allowed: frozenset[str] | None = None
) -> frozenset[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _Invalid(path, f"{path[-1]} must be a non-empty list of non-empty strings")
    if allowed is not None:
        bad = sorted(set(value) - allowed)
        if bad:
            raise _Invalid(path, f"{path[-1]}: unknown {bad[0]!r} (one of {sorted(allowed)})")
    return frozenset(value)


def _count(value: Any, path: tuple[str | int, ...], *, limit: int = 10_000_000) -> int:
    if type(value) is not int or not 1 <= value <= limit:
        raise _Invalid(path, f"{path[-1]} must be an integer between 1 and {limit}")
    return value


def _group(name: str, body: Any) -> ApproverGroup:
    path: tuple[str | int, ...] = ("approver_groups", name)
    if not _NAME.fullmatch(name):
        raise _Invalid(path, f"approver group name {name!r} must match {_NAME.pattern}")
    if not isinstance(body, dict):
        raise _Invalid(path, f"approver_groups.{name} must be a table")
    unknown = sorted(set(body) - _GROUP_KEYS)
    if unknown:
        raise _Invalid(
            (*path, unknown[0]),
            f"unknown key {unknown[0]!r} in approver group {name!r} (one of {sorted(_GROUP_KEYS)})",
        )
    members: set[Identity] = set()
    for j, member in enumerate(body.get("members", [])):
        if (
            not isinstance(member, dict)
            or set(member) != {"issuer", "subject"}
            or not all(isinstance(v, str) and v for v in member.values())
        ):
            raise _Invalid(
                (*path, "members", j),
                f'approver_groups.{name}.members[{j}] must be {{ issuer = "…", subject = "…" }}',
            )
        members.add(Identity(member["issuer"], member["subject"]))
    group = ApproverGroup(
        name=name,
        members=frozenset(members),
        roles=_strings(body["roles"], (*path, "roles")) if "roles" in body else frozenset(),
        groups=_strings(body["groups"], (*path, "groups")) if "groups" in body else frozenset(),
        issuers=_strings(body["issuers"], (*path, "issuers")) if "issuers" in body else None,
    )
    if not (group.members or group.roles or group.groups):
        raise _Invalid(path, f"approver group {name!r} has no members, roles or groups")
    return group


def _rule(
    i: int,
    body: Mapping[str, Any],
    groups: Mapping[str, ApproverGroup],
    acr_levels: tuple[str, ...],
) -> Rule:
    path: tuple[str | int, ...] = ("rule", i)
    unknown = sorted(set(body) - _RULE_KEYS)
    if unknown:
        raise _Invalid(
            (*path, unknown[0]), f"unknown key {unknown[0]!r} in rule (one of {sorted(_RULE_KEYS)})"
        )
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _Invalid((*path, "name"), f"every rule needs a name matching {_NAME.pattern}")
    cond = {key: _strings(body[key], (*path, key)) for key in _CONDITIONS if key in body}
    if "email_domains" in cond:
        cond["email_domains"] = frozenset(d.lower().lstrip("@") for d in cond["email_domains"])
    if "subjects" in cond and "issuers" not in cond:
        raise _Invalid(
            (*path, "subjects"),
            "subjects needs issuers: a sub is unique only per issuer (OIDC Core §2)",
        )
    allow = body.get("allow", True)
    if not isinstance(allow, bool):
        raise _Invalid((*path, "allow"), "allow must be true or false")
    acr = body.get("acr")
    if acr is not None and (not isinstance(acr, str) or not acr):
        raise _Invalid((*path, "acr"), "acr must be a non-empty string")
    accepted: tuple[str, ...] = ()
    if acr is not None and acr_levels:
        if acr not in acr_levels:
            raise _Invalid((*path, "acr"), f"acr {acr!r} is not one of acr_levels")
        accepted = acr_levels[acr_levels.index(acr) :]
    decision = Decision(
        rule=name,
        profiles=_strings(body["profiles"], (*path, "profiles"), allowed=PROFILES)
        if "profiles" in body
        else PROFILES,
        levels=_strings(body["levels"], (*path, "levels"), allowed=LEVELS)
        if "levels" in body
        else LEVELS,
        required_acr=acr,
        max_digests=_count(body["max_digests"], (*path, "max_digests"), limit=100_000)
        if "max_digests" in body
        else None,
        rate_limit=_rate_limit(body["rate_limit"], (*path, "rate_limit"))
        if "rate_limit" in body
        else None,
        approvals=_approvals(body["approvals"], (*path, "approvals"), groups)
        if "approvals" in body
        else None,
        acr_accepted=accepted,
    )
    return Rule(name=name, conditions=Conditions(**cond), allow=allow, decision=decision)


def _rate_limit(value: Any, path: tuple[str | int, ...]) -> RateLimit:
    if not isinstance(value, dict) or not value:
        raise _Invalid(path, "rate_limit must be a table { per_minute = N, per_day = N }")
    unknown = sorted(set(value) - {"per_minute", "per_day"})
    if unknown:
        raise _Invalid(
            (*path, unknown[0]), f"unknown key {unknown[0]!r} in rate_limit (per_minute, per_day)"
        )
    per_minute = (
        _count(value["per_minute"], (*path, "per_minute")) if "per_minute" in value else None
    )
    per_day = _count(value["per_day"], (*path, "per_day")) if "per_day" in value else None
    return RateLimit(per_minute=per_minute, per_day=per_day)


def _approvals(
    value: Any, path: tuple[str | int, ...], groups: Mapping[str, ApproverGroup]
) -> ApprovalRequirement:
    if not isinstance(value, dict) or set(value) != {"required", "group"}:
        raise _Invalid(path, 'approvals must be { required = M, group = "NAME" }')
    required = _count(value["required"], (*path, "required"), limit=100)
    group = value["group"]
    if not isinstance(group, str) or group not in groups:
        raise _Invalid(
            (*path, "group"), f"approvals.group {group!r} is not defined in [approver_groups]"
        )
    found = groups[group]
    if not (found.roles or found.groups) and required > len(found.members):
        raise _Invalid(
            (*path, "required"),
            f"approvals.required is {required} but group "
            f"{group!r} has only {len(found.members)} members",
        )
    return ApprovalRequirement(required=required, group=group)


# --- line mapping for semantic errors ---------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")


class _Lines:
    """Maps a key path (``("rule", 2, "rate_limit", "per_day")``) back to a 1-based line.

    tomllib keeps no positions, so this scans the text: table headers delimit blocks, and the
    first ``key =`` in the block is the key's line. When a key is not written on a line of its
    own (an inline table), the line of the enclosing key or table is named instead."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        # (line number, header path, is array-of-tables)
        self._headers: list[tuple[int, tuple[str, ...], bool]] = []
        for n, line in enumerate(self._lines, start=1):
            m = _HEADER.match(line)
            if m is not None:
                parts = tuple(p.strip().strip("\"'") for p in m.group(2).split("."))
                self._headers.append((n, parts, m.group(1) == "[["))

    def find(self, path: tuple[str | int, ...]) -> int:
        if not path:
            return 1
        if path[0] == "rule" and len(path) >= 2 and isinstance(path[1], int):
            return self._in_array("rule", path[1], path[2:])
        if path[0] == "approver_groups" and len(path) >= 2:
            block = self._block(("approver_groups", str(path[1])))
            if block is not None:
                return self._key_in(block, path[2:]) or block[0]
            block = self._block(("approver_groups",))
            if block is not None:
                return self._key_line(block, str(path[1])) or block[0]
        top = self._key_line((1, self._end_of_root()), str(path[0]))
        if top:
            return top
        for n, parts, _ in self._headers:
            if parts[0] == path[0]:
                return n
        return 1

    def _end_of_root(self) -> int:
        return self._headers[0][0] - 1 if self._headers else len(self._lines)

    def _block(self, header: tuple[str, ...]) -> tuple[int, int] | None:
        for idx, (n, parts, _) in enumerate(self._headers):
            if parts == header:
                end = (
                    self._headers[idx + 1][0] - 1
                    if idx + 1 < len(self._headers)
                    else len(self._lines)
                )
                return n, end
        return None

    def _in_array(self, name: str, index: int, rest: tuple[str | int, ...]) -> int:
        starts = [
            idx for idx, (_, parts, array) in enumerate(self._headers) if array and parts == (name,)
        ]
        if index >= len(starts):
            return self._key_line((1, self._end_of_root()), name) or 1
        first = starts[index]
        start = self._headers[first][0]
        # The element's block runs to the next header that is not one of its sub-tables.
        end = len(self._lines)
        sub: dict[str, int] = {}
        for n, parts, _ in self._headers[first + 1 :]:
            if len(parts) > 1 and parts[0] == name:
                sub.setdefault(parts[1], n)
                continue
            end = n - 1
            break
        if rest and isinstance(rest[0], str) and rest[0] in sub:
            sub_start = sub[rest[0]]
            sub_end = min([n - 1 for n in sub.values() if n > sub_start] + [end])
            return self._key_in((sub_start, sub_end), rest[1:]) or sub_start
        own_end = min([n - 1 for n in sub.values()] + [end])
        return self._key_in((start, own_end), rest) or start

    def _key_in(self, block: tuple[int, int], rest: tuple[str | int, ...]) -> int:
        """The line of the first string key of ``rest`` in the block (0: not found)."""
        for key in rest:
            if isinstance(key, str):
                return self._key_line(block, key)
        return 0

    def _key_line(self, block: tuple[int, int], key: str) -> int:
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*(=|\.)")
        for n in range(block[0], block[1] + 1):
            if 0 < n <= len(self._lines) and pattern.match(self._lines[n - 1]):
                return n
        return 0
