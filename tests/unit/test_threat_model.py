"""The threat model names real tests (issue 17 item 11): every pytest node id in
``docs/threat-model.md`` is a test function that exists in that file (read with ``ast``, not
imported, so nothing of the suite runs; a parametrized id counts by its base name), every
threat names at least one, and ``SECURITY.md`` says how to report and what to expect."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1].parent
MODEL = ROOT / "docs" / "threat-model.md"
NODE_ID = re.compile(r"`(tests/[\w/]+\.py)((?:::\w+)+)(?:\[[^\]`]*\])?`")
THREAT_ROW = re.compile(r"^\| (T\d+) \|")


def collected_tests(path: Path) -> set[str]:
    """``name`` of each module-level test and ``Class::name`` of each test in a class."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name.startswith("test"):
                found.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            found |= {
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                and item.name.startswith("test")
            }
    return found


def named(text: str) -> list[tuple[str, str]]:
    return [(m[1], m[2].removeprefix("::")) for m in NODE_ID.finditer(text)]


def test_every_named_test_exists() -> None:
    text = MODEL.read_text(encoding="utf-8")
    ids = named(text)
    assert len(ids) >= 50, "the threat model names the tests that cover each threat"
    missing = []
    for file, name in ids:
        path = ROOT / file
        if not path.is_file() or name not in collected_tests(path):
            missing.append(f"{file}::{name}")
    assert missing == [], f"named in docs/threat-model.md but not in the suite: {missing}"


def test_every_threat_names_a_test() -> None:
    rows = [
        line for line in MODEL.read_text(encoding="utf-8").splitlines() if THREAT_ROW.match(line)
    ]
    assert len(rows) >= 20
    numbers = [THREAT_ROW.match(row)[1] for row in rows]  # type: ignore[index]
    assert len(set(numbers)) == len(numbers), "threat numbers are unique"
    bare = [n for n, row in zip(numbers, rows, strict=True) if not named(row)]
    assert bare == [], f"threats without a test: {bare}"
    for section in ("## Assets", "## Actors", "## Trust boundaries"):
        assert section in MODEL.read_text(encoding="utf-8")


def test_the_check_itself_catches_a_missing_test(tmp_path: Path) -> None:
    """A name that is not a test, a parametrized id and a class member, read the same way."""
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import pytest\n@pytest.mark.parametrize('x', [1])\ndef test_a(x): ...\n"
        "async def test_b(): ...\ndef helper(): ...\nclass TestC:\n    def test_d(self): ...\n"
    )
    assert collected_tests(sample) == {"test_a", "test_b", "TestC::test_d"}
    found = named(
        "`tests/x/test_sample.py::test_a[1-sha256]` and `tests/x/test_s.py::TestC::test_d`"
    )
    assert found == [("tests/x/test_sample.py", "test_a"), ("tests/x/test_s.py", "TestC::test_d")]


@pytest.mark.parametrize(
    "needle",
    ["## Reporting a vulnerability", "## What to expect", "## Supported versions", "threat-model"],
)
def test_security_policy_has_its_sections(needle: str) -> None:
    assert needle in (ROOT / "SECURITY.md").read_text(encoding="utf-8")
