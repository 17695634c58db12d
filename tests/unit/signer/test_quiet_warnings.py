"""Other packages' deprecation warnings stay away from the person; ours, and errors, still show."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from cryptography.utils import CryptographyDeprecationWarning

from signer.settings.logging import quiet_third_party_warnings


def _shown(category: type[Warning], module: str) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        quiet_third_party_warnings()
        warnings.warn_explicit("notice", category, filename="x.py", lineno=1, module=module)
    return bool(caught)


@pytest.mark.parametrize(
    "category", [CryptographyDeprecationWarning, DeprecationWarning, PendingDeprecationWarning]
)
def test_a_dependency_s_deprecation_is_hidden(category: type[Warning]) -> None:
    assert not _shown(category, "pyhanko.sign.signers.pdf_cms")
    assert not _shown(category, "aiohttp.web_app")


@pytest.mark.parametrize("module", ["signer.cli", "signer", "ca.authority", "idp_adapter.jwks"])
def test_a_deprecation_in_our_own_code_still_shows(module: str) -> None:
    assert _shown(DeprecationWarning, module)
    assert _shown(CryptographyDeprecationWarning, module)


@pytest.mark.parametrize("module", ["pyhanko.sign", "signerx", "cax.thing"])
def test_other_warning_categories_from_dependencies_still_show(module: str) -> None:
    assert _shown(UserWarning, module)
    assert _shown(RuntimeWarning, module)


def test_packages_named_like_ours_are_not_ours() -> None:
    assert not _shown(DeprecationWarning, "signerx")
    assert not _shown(DeprecationWarning, "cax.thing")


def test_qes_prints_nothing_but_its_own_output() -> None:
    """The real entry point, in a fresh interpreter that imports pyHanko (cryptography 51 warns)."""
    code = (
        "import sys; from signer.cli.main import main; "
        "sys.argv = ['qes', '--help']; "
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "import signer.formats.pdf  # imports pyHanko's signers (DSA deprecation in crypto 51)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stderr == ""


def test_the_soak_bench_prints_no_dependency_warning() -> None:
    """`bench/soak.py` is an entry point of its own (it imports pyHanko through the test
    support code): its output starts with its own lines."""
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-W", "default", str(root / "bench" / "soak.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stderr == ""
    assert done.stdout.startswith("usage: soak.py")
