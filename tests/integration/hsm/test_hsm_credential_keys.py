"""CSC credential keys (issue 6, item 3): token objects that another process can sign with and
destroy, never extractable, and confirmed gone after destruction."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from signer.errors import HsmUnavailable
from signer.hsm import Hsm
from signer.hsm.credential import credential_label, label_expiry
from tests.support.softhsm import SoftHsmToken

# A second process, through signer.hsm as a replica would: find the key by label, sign a digest,
# destroy the pair, print the signature and the destruction receipt.
_OTHER_PROCESS = r"""
import json, os, sys
from signer.hsm import Hsm, HsmSettings
from signer.secrets import Secret
hsm = Hsm.open(HsmSettings(module=sys.argv[1], token_label=sys.argv[2],
                           pin=Secret(os.environ["QES_TEST_PIN"]), sessions=1))
label, digest = sys.argv[3], bytes.fromhex(sys.argv[4])
def work(s):
    signature = s.credential_key(label).sign_digest(digest)
    return signature, s.destroy_labelled(label)
signature, destruction = hsm.run_sync(work)
hsm.close()
print(json.dumps({"signature": signature.hex(), "destruction": destruction.as_dict()}))
"""


def test_label_carries_the_expiry() -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, 250_000, tzinfo=UTC)
    label = credential_label("AbC-_1", expires)
    assert label == f"qes-cred:AbC-_1@{int(expires.timestamp()) + 1}"
    assert label_expiry(label) == expires.replace(microsecond=0) + timedelta(seconds=1)
    assert label_expiry("qes-tsa") is None
    with pytest.raises(ValueError, match="cannot be used"):
        credential_label("no:colons", expires)


def test_another_process_signs_with_the_key_and_destroys_it(
    hsm: Hsm, softhsm_token: SoftHsmToken
) -> None:
    label = credential_label("it-cross-process", datetime.now(UTC) + timedelta(minutes=10))
    key = hsm.run_sync(lambda s: s.generate_credential_key(label))
    assert key.evidence.as_dict() == {
        "local": True,
        "never_extractable": True,
        "always_sensitive": True,
        "extractable": False,
        "sensitive": True,
        "token": True,
    }
    assert label in hsm.run_sync(lambda s: s.credential_labels())
    # An independent process (plain python-pkcs11) sees both halves as token objects.
    seen = [o for o in softhsm_token.list_objects() if o.label == label]
    assert sorted(o.cls for o in seen) == ["PRIVATE_KEY", "PUBLIC_KEY"]
    assert all(o.token for o in seen)

    digest = hashlib.sha256(b"signed by the other replica").digest()
    proc = softhsm_token.python(
        _OTHER_PROCESS, softhsm_token.module, softhsm_token.label, label, digest.hex(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["destruction"] == {
        "private_destroyed": True,
        "public_destroyed": True,
        "confirmed_absent": True,
    }
    key.private.public_key().verify(
        bytes.fromhex(result["signature"]), digest, ec.ECDSA(Prehashed(hashes.SHA256()))
    )
    # Gone for this process too, and for an independent one.
    assert label not in hsm.run_sync(lambda s: s.credential_labels())
    with pytest.raises(HsmUnavailable, match="no private key"):
        hsm.run_sync(lambda s: s.credential_key(label))
    assert [o for o in softhsm_token.list_objects() if o.label == label] == []
    # Destroying again is not an error: nothing was there, and nothing is.
    again = hsm.run_sync(lambda s: s.destroy_labelled(label))
    assert again.as_dict() == {
        "private_destroyed": False,
        "public_destroyed": False,
        "confirmed_absent": True,
    }


def test_credential_labels_must_use_the_prefix(hsm: Hsm) -> None:
    with pytest.raises(ValueError, match="qes-cred:"):
        hsm.run_sync(lambda s: s.generate_credential_key("it-not-a-credential"))


# A second replica's worker: credential keys made, used and destroyed in a loop for a while.
_CHURN = r"""
import os, sys, time
from datetime import UTC, datetime, timedelta
from signer.hsm import Hsm, HsmSettings
from signer.hsm.credential import credential_label
from signer.secrets import Secret
hsm = Hsm.open(HsmSettings(module=sys.argv[1], token_label=sys.argv[2],
                           pin=Secret(os.environ["QES_TEST_PIN"]), sessions=2))
target, end, n = int(sys.argv[3]), time.monotonic() + 120, 0
while n < target and time.monotonic() < end:
    label = credential_label(f"churn-{os.getpid()}-{n}", datetime.now(UTC) + timedelta(minutes=5))
    hsm.run_sync(lambda s: (s.generate_credential_key(label),
                            s.credential_key(label).sign_digest(bytes(32)),
                            s.destroy_labelled(label)))
    n += 1
hsm.close()
print(n)
"""


def test_credential_key_churn_in_threads_and_two_processes_fails_nothing(
    hsm: Hsm, softhsm_token: SoftHsmToken
) -> None:
    """CSC credentials made, used and destroyed at once by several sessions of this process
    (and a sweeper listing them) and by another process. Unserialised, SoftHSM failed such
    concurrent token-object writes of one process with CKR_GENERAL_ERROR and left half a key
    pair behind, and listed another process's changes twice ("ambiguous")."""
    cycles = 20  # per churner: counted, not timed, so a loaded machine churns as much
    other = softhsm_token.python(
        _CHURN, softhsm_token.module, softhsm_token.label, str(cycles),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    end = time.monotonic() + 120  # a safety net only; the counts below are what is asserted
    failures: list[BaseException] = []
    made = [0, 0]
    churning = threading.Event()

    def churn(worker: int) -> None:
        while made[worker] < cycles and time.monotonic() < end:
            label = credential_label(
                f"churn-{worker}-{made[worker]}", datetime.now(UTC) + timedelta(minutes=5)
            )
            try:
                hsm.run_sync(
                    lambda s, lb=label: (
                        s.generate_credential_key(lb),
                        s.credential_key(lb).sign_digest(bytes(32)),
                        s.destroy_labelled(lb),
                    )
                )
                made[worker] += 1
            except Exception as exc:
                failures.append(exc)

    def sweep() -> None:
        while not churning.is_set():
            try:
                hsm.run_sync(lambda s: s.credential_labels())
            except Exception as exc:
                failures.append(exc)

    churners = [threading.Thread(target=churn, args=(i,)) for i in range(2)]
    sweeper = threading.Thread(target=sweep)
    for t in [*churners, sweeper]:
        t.start()
    for t in churners:
        t.join()
    out, err = other.communicate(timeout=180)
    churning.set()
    sweeper.join()
    assert other.returncode == 0, err
    assert failures == []
    assert made == [cycles, cycles] and int(out) == cycles
    leftover = [o for o in softhsm_token.list_objects() if o.label.startswith("qes-cred:")]
    assert leftover == []
    assert [o for o in hsm.run_sync(lambda s: s.object_summary()) if not o[0]] == []
