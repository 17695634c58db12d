"""SQL text put together once, at import, from fixed parts: never from a value.

Values always travel as bind parameters (``$1``…). What varies between a module's statements is
only which columns they read or return; :class:`Columns` names them once, and every name must
match the identifier allow-list below (a column, optionally ``alias.column`` and ``AS name``),
checked when the module is imported. :func:`sql` joins literal parts and column lists with
spaces. Nothing here accepts or formats anything that a request carries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Columns", "sql"]

_NAME = re.compile(r"(?:[a-z]\.)?[a-z_][a-z0-9_]*(?: AS [a-z_][a-z0-9_]*)?")


@dataclass(frozen=True)
class Columns:
    """A fixed list of column names (each checked against the allow-list)."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in self.names:
            if not _NAME.fullmatch(name):
                raise ValueError(f"not a column name: {name!r}")

    @classmethod
    def of(cls, text: str) -> Columns:
        """``"a, b, c.d AS e"`` as a list: the way the statements spell them."""
        return cls(tuple(part.strip() for part in text.split(",")))

    def without(self, *names: str) -> Columns:
        return Columns(tuple(n for n in self.names if n not in names))

    def __add__(self, other: Columns) -> Columns:
        return Columns(self.names + other.names)

    def __str__(self) -> str:
        return ", ".join(self.names)


def sql(*parts: str | Columns) -> str:
    """One statement from literal parts and column lists, joined by single spaces."""
    return " ".join(str(part) for part in parts)
