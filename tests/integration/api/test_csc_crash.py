"""A CSC credential key outlives a killed process (it is a token object, issue 6 item 3) and is
destroyed by the next sweeper: here the start-up sweep of the restarted process, with
30-second credentials (ca.validity_seconds 60 minus the 30-second backdate)."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Callable

import asyncpg
import pytest

from signer.keys.credential import CREDENTIAL_PREFIX
from tests.support.idp import RunningIdp
from tests.support.service import SignerProcess
from tests.support.softhsm import SoftHsmToken

pytestmark = pytest.mark.slow


def _credential_keys(token: SoftHsmToken, credential_id: str) -> list[str]:
    return [
        o.cls
        for o in token.list_objects()
        if o.label.startswith(f"{CREDENTIAL_PREFIX}{credential_id}@")
    ]


async def test_killed_process_leaves_the_key_until_the_next_sweep(
    signer_for: Callable[..., SignerProcess],
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    ca_ready: None,
    batch_token: str,
) -> None:
    # only the start-up sweep runs in this test
    process = signer_for(
        QES__CA__VALIDITY_SECONDS="60", QES__CSC__SWEEP_INTERVAL_SECONDS="300"
    ).start()
    try:
        request = urllib.request.Request(  # noqa: S310 - loopback test server
            f"{process.url}/csc/v1/credentials/list",
            data=b"{}",
            headers={"Authorization": f"Bearer {batch_token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            (credential_id,) = json.load(answer)["credentialIDs"]
        request = urllib.request.Request(  # noqa: S310 - credentials/info makes the key
            f"{process.url}/csc/v1/credentials/info",
            data=json.dumps({"credentialID": credential_id}).encode(),
            headers={"Authorization": f"Bearer {batch_token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            assert json.load(answer)["key"]["status"] == "enabled"
        process.kill(signal.SIGKILL)
        assert sorted(_credential_keys(softhsm_token, credential_id)) == [
            "PRIVATE_KEY",
            "PUBLIC_KEY",
        ]  # a token object: the crash did not take it along

        conn = await asyncpg.connect(database_url)
        try:
            expires = await conn.fetchval(
                "SELECT expires_at FROM csc_credentials WHERE id=$1", credential_id
            )
            time.sleep(max(0.0, expires.timestamp() - time.time()) + 1)
            process.start()  # its start-up sweep runs before it is ready
            row = await conn.fetchrow(
                "SELECT c.state, c.end_reason, r.status, r.failure, r.destruction"
                " FROM csc_credentials c JOIN signing_records r ON r.id = c.record_id"
                " WHERE c.id=$1",
                credential_id,
            )
        finally:
            await conn.close()
    finally:
        process.stop()
    assert (row["state"], row["end_reason"]) == ("destroyed", "expired-unused")
    assert (row["status"], row["failure"]) == ("failed", "csc-credential-expired-unused")
    assert json.loads(row["destruction"]) == {
        "private_destroyed": True,
        "public_destroyed": True,
        "confirmed_absent": True,
    }
    assert _credential_keys(softhsm_token, credential_id) == []
