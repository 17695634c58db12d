"""ca/ stays pure: cryptography-level imports only, no clock, no I/O (DESIGN.md "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ca

PACKAGE = Path(ca.__file__).parent
ALLOWED_ROOTS = {
    "__future__",
    "asn1crypto",
    "ca",
    "collections",
    "cryptography",
    "dataclasses",
    "datetime",
    "enum",
    "functools",
    "json",  # canonical transcript lines (ca.ceremony): pure, no I/O
    "re",
    "secrets",
    "typing",
    "unicodedata",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "open", "urlopen", "getenv"}


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_module_imports_and_calls(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "ca").split(".")[0]} if node.level == 0 else {"ca"}
        else:
            roots = set()
        assert roots <= ALLOWED_ROOTS, f"{path.name}:{node.lineno} imports {roots}"
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            assert name not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {name}()"
