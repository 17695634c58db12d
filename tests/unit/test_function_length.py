"""No function in ca/, idp_adapter/ or signer/ is longer than 60 lines (DESIGN.md, "Style":
handlers stay short), except the data declarations named below: functions that only build
one literal (the OpenAPI document's parts), which read as data, not as logic."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1].parent
LIMIT = 60
#: path:function -> why it may be longer. Each is one dict literal and nothing else.
DATA_DECLARATIONS = {
    "signer/http/openapi.py:_document": "the OpenAPI 3.1 document's skeleton, one literal",
    "signer/http/openapi.py:_approval_paths": "OpenAPI paths of the approvals API, one literal",
    "signer/http/csc/oauth2_views.py:openapi_paths": "OpenAPI paths of CSC OAuth2, one literal",
}


def _functions() -> dict[str, int]:
    found = {}
    for package in ("ca", "idp_adapter", "signer"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = f"{path.relative_to(ROOT).as_posix()}:{node.name}"
                    assert node.end_lineno is not None
                    length = node.end_lineno - node.lineno + 1
                    found[name] = max(length, found.get(name, 0))
    return found


def _only_builds_a_literal(name: str) -> bool:
    path, function = name.split(":")
    tree = ast.parse((ROOT / path).read_text())
    node = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function
    )
    body = [
        s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
    ]
    return bool(body) and isinstance(body[-1], ast.Return) and isinstance(body[-1].value, ast.Dict)


def test_no_function_is_longer_than_the_limit() -> None:
    too_long = {
        name: length
        for name, length in _functions().items()
        if length > LIMIT and name not in DATA_DECLARATIONS
    }
    assert too_long == {}


def test_the_named_data_declarations_exist_and_are_data() -> None:
    """The exceptions stay honest: each still exists, still needs the exception, and still
    ends in returning one dict literal."""
    functions = _functions()
    for name in DATA_DECLARATIONS:
        assert functions.get(name, 0) > LIMIT, f"{name}: gone or short now, drop the exception"
        assert _only_builds_a_literal(name), f"{name}: not a data declaration"
