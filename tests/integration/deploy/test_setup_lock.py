"""deploy/setup.sh installs exactly the committed lock, and refuses a lock it cannot trust."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _copy_project(dest: Path) -> None:
    (dest / "deploy").mkdir()
    shutil.copy(ROOT / "deploy" / "setup.sh", dest / "deploy" / "setup.sh")
    shutil.copytree(ROOT / "requirements", dest / "requirements")
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def test_a_changed_hash_stops_setup_with_a_message_naming_the_set(tmp_path: Path) -> None:
    _copy_project(tmp_path)
    lock = tmp_path / "requirements" / "run.txt"
    text = lock.read_text()
    # Every hash of one package (its wheel and its sdist), so whichever file pip picks is wrong.
    block = re.search(r"^idna==.*?(?=^\S)", text, flags=re.M | re.S)
    assert block is not None, "idna is no longer in the run set: pick another small package"
    forged = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, block.group(0))
    lock.write_text(text.replace(block.group(0), forged))

    done = subprocess.run(
        ["bash", "deploy/setup.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )

    assert done.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in done.stderr
    assert "setup: requirements/run.txt could not be installed as locked" in done.stderr
    assert not (tmp_path / ".venv" / ".qes-run.sha256").exists(), "a refused lock was stamped"


def test_the_two_sets_pin_the_same_versions_and_every_pin_has_a_hash() -> None:
    def pins(name: str) -> dict[str, str]:
        text = (ROOT / "requirements" / name).read_text()
        entries = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)(.*?)(?=^\S|\Z)", text, re.M | re.S)
        for pkg, _version, rest in entries:
            assert "--hash=sha256:" in rest, f"{pkg} in {name} has no hash"
        return {pkg.lower(): version for pkg, version, _ in entries}

    run, test = pins("run.txt"), pins("test.txt")
    assert {"cryptography", "pyhanko", "python-pkcs11", "aiohttp", "asyncpg", "joserfc"} <= set(run)
    assert {"pytest", "playwright", "pkilint", "pyhanko-cli"} <= set(test)
    assert not {"pytest", "playwright", "pkilint", "mypy"} & set(run), "test tools in the run set"
    for pkg, version in run.items():
        assert test.get(pkg) == version, f"{pkg}: run {version}, test {test.get(pkg)}"


def test_the_readme_s_tested_with_table_names_the_locked_versions() -> None:
    readme = (ROOT / "README.md").read_text()
    locked = dict(
        re.findall(
            r"^([A-Za-z0-9_.\-]+)==(\S+)", (ROOT / "requirements" / "run.txt").read_text(), re.M
        )
    )
    rows = {
        "cryptography": "cryptography",
        "pyHanko / pyhanko-certvalidator": "pyhanko",
        "python-pkcs11": "python-pkcs11",
        "aiohttp": "aiohttp",
        "asyncpg": "asyncpg",
        "joserfc": "joserfc",
        "structlog": "structlog",
    }
    for label, pkg in rows.items():
        row = re.search(rf"^\| {re.escape(label)} \| ([^|]+) \|$", readme, re.M)
        assert row is not None, f"README's tested-with table has no row {label!r}"
        assert locked[pkg] in row.group(1), (
            f"README says {row.group(1)} for {pkg}, lock {locked[pkg]}"
        )
