"""Opening and closing: clear errors for wrong PIN, unknown token or module; readiness."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from signer.errors import HsmUnavailable
from signer.keys import Hsm, HsmSettings
from signer.secrets import Secret
from tests.support.softhsm import SoftHsmToken

_OPEN_WITH_WRONG_PIN = """
import sys
from signer.errors import HsmUnavailable
from signer.keys import Hsm, HsmSettings
from signer.secrets import Secret
try:
    Hsm.open(HsmSettings(module=sys.argv[1], token_label=sys.argv[2], pin=Secret("0000-wrong")))
except HsmUnavailable as exc:
    print("HsmUnavailable:", exc)
    sys.exit(0)
print("opened with a wrong PIN")
sys.exit(1)
"""


def test_wrong_pin_in_a_fresh_process_is_hsm_unavailable(softhsm_token: SoftHsmToken) -> None:
    child = softhsm_token.python(
        _OPEN_WITH_WRONG_PIN,
        softhsm_token.module,
        softhsm_token.label,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, out + err
    assert f"login to token {softhsm_token.label!r} failed: PIN incorrect" in out


def test_wrong_pin_while_this_process_is_logged_in(hsm: Hsm, softhsm_token: SoftHsmToken) -> None:
    with pytest.raises(HsmUnavailable, match="PIN differs"):
        Hsm.open(softhsm_token.settings(pin="0000-wrong"))
    assert hsm.run_sync(lambda s: s.has_token_key("it-hsm-p256"))  # the open Hsm is unharmed


def test_unknown_token_label_names_it(softhsm_token: SoftHsmToken) -> None:
    settings = HsmSettings(softhsm_token.module, "no-such-token", Secret(softhsm_token.pin))
    with pytest.raises(HsmUnavailable, match="no token labelled 'no-such-token'"):
        Hsm.open(settings)


_LOG_IN_AND_OUT = """
import os, signal, sys, time
import pkcs11
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))  # ends between logins, never in one
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
print("logging in and out", flush=True)
while not stop:
    try:
        with token.open(user_pin=os.environ["QES_TEST_PIN"]):
            pass
    except pkcs11.exceptions.GeneralError:  # our own lookups and logins race it too
        pass
    time.sleep(0.005)  # logins as close together as a starting group's
"""


def test_token_is_found_while_another_process_logs_in(softhsm_token: SoftHsmToken) -> None:
    """SoftHSM rewrites its token file at every login; a process looking the token up
    meanwhile sees no token or CKR_GENERAL_ERROR (STANDARDS.md §8). Workers starting together
    meet exactly this: the lookup must ride it out, not fail the start."""
    child = softhsm_token.python(
        _LOG_IN_AND_OUT, softhsm_token.module, softhsm_token.label, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline()
        for _ in range(300):
            Hsm.open(softhsm_token.settings(sessions=1)).close()
        assert child.poll() is None, "the process logging in beside us stopped early"
    finally:
        child.terminate()
        child.wait(30)


_OPEN_A_TOKEN_MADE_AFTER_START = """
import sys
from signer.keys import Hsm, HsmSettings
from signer.keys._module import load_module
from signer.secrets import Secret
load_module(sys.argv[1], ())  # C_Initialize: SoftHSM reads its tokens now, and only now
print("initialised", flush=True)
sys.stdin.readline()  # the token is made meanwhile
Hsm.open(HsmSettings(sys.argv[1], sys.argv[2], Secret(sys.argv[3]))).close()
print("opened")
"""


def test_a_token_missing_from_the_slot_list_read_at_start_is_found(tmp_path: Path) -> None:
    """SoftHSM reads its tokens at C_Initialize only: a token whose file another process was
    rewriting then (or one made since) stays out of the slot list. At start, with no login of
    its own on the module yet, the process re-initialises it and looks again."""
    first = SoftHsmToken.create(tmp_path / "hsm", "first")
    child = first.python(
        _OPEN_A_TOKEN_MADE_AFTER_START, first.module, "late", "4321",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline() == "initialised\n"
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "late", "--so-pin", "8765",
         "--pin", "4321"],
        env=first.env(), check=True, capture_output=True,
    )  # fmt: skip
    out, err = child.communicate("go\n", timeout=60)
    assert child.returncode == 0 and out == "opened\n", err


def test_missing_module_names_it() -> None:
    settings = HsmSettings("/nonexistent/libpkcs11.so", "x", Secret("1234"))
    with pytest.raises(HsmUnavailable, match=r"module not found: /nonexistent/libpkcs11\.so"):
        Hsm.open(settings)


async def test_second_hsm_shares_the_login_and_closing_it_spares_the_first(
    hsm: Hsm, softhsm_token: SoftHsmToken
) -> None:
    key = await hsm.run(lambda s: s.generate_ephemeral())
    second = Hsm.open(softhsm_token.settings(sessions=1))
    assert await second.ready()
    other = await second.run(lambda s: s.generate_ephemeral())
    second.close()
    second.close()  # idempotent
    assert not await second.ready()
    with pytest.raises(HsmUnavailable, match="closed"):
        await second.run(lambda s: None)
    # The second Hsm's session objects died with its session; the first's key still works.
    assert (
        hsm.run_sync(lambda s: s.object_summary()).count(("qes-ephemeral", "PRIVATE_KEY", False))
        == 1
    )
    sig = await hsm.run(lambda s: key.private.sign_digest(b"\x01" * 32))
    assert sig
    assert (await hsm.run(lambda s: s.destroy(key))).confirmed_absent
    assert await hsm.ready()
    del other
