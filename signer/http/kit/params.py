"""Hostile text and times at the edge (issue 17): refused before they reach storage or the log.

PostgreSQL's ``text`` cannot hold U+0000, and a lone surrogate (``"\\ud800"``, legal in a JSON
string escape, RFC 8259 §8.2) cannot be encoded as UTF-8 for the database or a log entry; a time
such as ``9999-12-31T23:59:59-14:00`` has no UTC instant in Python's range. Each is a client
error (400/422 problem+json), not a database failure. One guard serves every surface: the JSON
body reader, the query and path of every route (``contract.text_middleware``), and the parsers of
times (:func:`utc_instant`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

#: Keys a pointer may name (field-like); a pointer never carries other text the client chose.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def text_fault(value: str) -> str | None:
    """Why ``value`` cannot be stored or logged as text, or None when it can."""
    if "\x00" in value:
        return "holds a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate"
    return None


def hostile_text(value: Any) -> str | None:
    """The JSON pointer (RFC 6901) of the first string of a parsed JSON value (keys included)
    that :func:`text_fault` refuses, or None. A refused key, or a value under a key that is not
    name-like, is pointed at by its object: the pointer repeats no text but field-like names
    and indices, never the hostile text itself.

    A plain scan first (the common case: nothing found, and it runs on every JSON body); the
    pointer is worked out only for a value that has a fault."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _faulty(item):
                return _pointer(value)
        elif isinstance(item, dict):
            for key in item:
                if _faulty(key):
                    return _pointer(value)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _faulty(text: str) -> bool:
    # ASCII text cannot hold a surrogate: only the rare non-ASCII string is encoded.
    return "\x00" in text or (not text.isascii() and text_fault(text) is not None)


def _pointer(value: Any) -> str:
    """The pointer of the first faulty string of ``value`` (which has one). Below a key that is
    not name-like the pointer stops growing: it names that key's object."""
    stack: list[tuple[str, bool, Any]] = [("", True, value)]
    while stack:
        pointer, named, item = stack.pop()
        if isinstance(item, str):
            if _faulty(item):
                return pointer or "/"
        elif isinstance(item, dict):
            for key, child in item.items():
                if _faulty(key):
                    return pointer or "/"
                name_like = named and _NAME.match(key) is not None
                stack.append((f"{pointer}/{key}" if name_like else pointer, name_like, child))
        elif isinstance(item, list):
            for i, child in enumerate(item):
                stack.append((f"{pointer}/{i}" if named else pointer, named, child))
    return "/"


def utc_instant(parsed: datetime) -> datetime:
    """``parsed`` (aware) as a UTC instant; ValueError when it has none in range (a time near
    year 1 or 9999 with an offset that carries it past either end)."""
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("time out of range") from exc
