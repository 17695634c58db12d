"""Every module imports on its own, and imports point inward (DESIGN.md, "Layout and the
direction of imports": ``signer`` -> ``ca``, ``signer`` -> ``idp_adapter``, never back, and
``ca`` and ``idp_adapter`` know nothing of each other)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ca", "idp_adapter", "signer")


def _modules(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_each_module_imports_in_a_fresh_interpreter() -> None:
    """An import cycle shows only when a module is the first of its cycle to be imported, so
    each module is imported first in a clean interpreter of its own."""
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        "OURS = ('ca', 'idp_adapter', 'signer')\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] in OURS]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    modules = [m for package in PACKAGES for m in _modules(package) if m != "signer.__main__"]
    shares = max(1, os.cpu_count() or 1)  # one interpreter per core, each on every n-th module
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, *modules[i::shares]],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(shares)
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, out + err


@pytest.mark.parametrize(
    ("package", "forbidden"), [("ca", {"signer", "idp_adapter"}), ("idp_adapter", {"signer", "ca"})]
)
def test_inner_packages_import_nothing_outward(package: str, forbidden: set[str]) -> None:
    outward = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in _imported(path)
        if name.split(".")[0] in forbidden
    }
    assert not outward


def _contract(contract_id: str) -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["id"] == contract_id)


def _layer_names(contract: dict[str, object]) -> set[str]:
    layers = contract["layers"]
    assert isinstance(layers, list)
    return {name.strip() for layer in layers for name in layer.split("|")}


@pytest.mark.parametrize(
    ("contract_id", "package"), [("floors", "signer"), ("surfaces", "signer/http")]
)
def test_every_module_stands_on_a_floor(contract_id: str, package: str) -> None:
    """The layer contracts only bind the modules they name: a new flat module or surface that
    no layer names would escape them, so each child of the package must be on a floor."""
    children = {
        p.stem if p.is_file() else p.name
        for p in (ROOT / package).iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert children - _layer_names(_contract(contract_id)) == set()


def test_import_contracts_hold() -> None:
    """`lint-imports` (the contracts in pyproject.toml) passes; deploy/test.sh runs it too, this
    keeps a plain `pytest` run honest."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
