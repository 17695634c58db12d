"""Claim look-up and subject templates.

A template such as ``"PNODE-{sub}"`` is compiled once, at settings time, into literal and
placeholder parts. Rendering only ever looks claims up by name (dotted paths walk nested
JSON objects, OIDC Core §5.1 ``address.country``); it never calls ``str.format``, so a
claim value or template cannot reach attributes or indexes (format-string attacks).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import IdentityNotAllowed

__all__ = ["MISSING", "Template", "lookup"]

_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_PATH = re.compile(rf"{_NAME}(?:\.{_NAME})*")
_TOKEN = re.compile(r"\{([^{}]*)\}|([^{}]+)|([{}])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def lookup(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at a dotted ``path``, or :data:`MISSING`."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def valid_path(path: str) -> bool:
    """True when ``path`` is a claim name or a dotted path of claim names."""
    return _PATH.fullmatch(path) is not None


@dataclass(frozen=True)
class Template:
    """A compiled subject template: ``parts`` alternate literals and ``(claim path,)``."""

    source: str
    parts: tuple[str | tuple[str], ...]

    @classmethod
    def compile(cls, source: str) -> Template:
        """Compile ``source``; raise ``ValueError`` on a stray brace or a bad placeholder."""
        parts: list[str | tuple[str]] = []
        for match in _TOKEN.finditer(source):
            placeholder, literal, stray = match.groups()
            if stray is not None:
                raise ValueError(f"unbalanced {stray!r} in template {source!r}")
            if placeholder is not None:
                if not valid_path(placeholder):
                    raise ValueError(f"bad placeholder {{{placeholder}}} in template {source!r}")
                parts.append((placeholder,))
            else:
                parts.append(literal)
        if not parts:
            raise ValueError("empty template")
        return cls(source, tuple(parts))

    @property
    def claims(self) -> tuple[str, ...]:
        """The claim paths this template reads."""
        return tuple(p[0] for p in self.parts if isinstance(p, tuple))

    def render(self, claims: Mapping[str, Any]) -> str:
        """Fill the placeholders from ``claims``; values must be non-empty str or int.

        :raises IdentityNotAllowed: a claim is missing, empty, of another type, or holds
            control characters (the message names the claim).
        """
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = lookup(claims, part[0])
            if value is MISSING or value == "":
                raise IdentityNotAllowed(f"claim {part[0]!r} is required by the subject mapping")
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise IdentityNotAllowed(f"claim {part[0]!r} must be a string or an integer")
            text = str(value)
            if _CONTROL.search(text):
                raise IdentityNotAllowed(f"claim {part[0]!r} contains control characters")
            out.append(text)
        return "".join(out)
