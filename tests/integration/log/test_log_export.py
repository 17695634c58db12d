"""`qes audit export-log` and `qes audit verify --log-export`: an auditor's copy of the log is
checked offline (no database, no HSM: only the verifier key from the trust bundle) against the
signed checkpoint it carries; any change to the copy fails and names what it can."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ec

from ca.checkpoint import NoteVerifier
from tests.support.service import DEV_CONFIG, api_headers, run_qes, sign_random


async def verify_offline(path: Path, vkey: str) -> tuple[int, str, str]:
    # No --config and no database URL: the export and the key are all it has.
    return await run_qes("audit", "verify", "--log-export", str(path), "--vkey", vkey)


def rewrite(source: Path, target: Path, edit: object) -> Path:
    lines = source.read_text().splitlines(keepends=True)
    assert callable(edit)
    target.write_text("".join(edit(lines)))
    return target


async def test_exported_log_verifies_offline_and_any_change_is_caught(
    client: TestClient,
    batch_token: str,
    auditor_token: str,
    signer_env: dict[str, str],
    tmp_path: Path,
) -> None:
    for _ in range(3):
        status, _ = await sign_random(client, batch_token)
        assert status == 201
    published = await client.post("/api/v1/log/checkpoints", headers=api_headers(auditor_token))
    assert published.status in (200, 201)
    vkey = (await (await client.get("/api/v1/trust-bundle")).json())["log"]["verifier_key"]

    export = tmp_path / "log.jsonl"
    code, out, err = await run_qes(
        "audit", "export-log", str(export), "--config", str(DEV_CONFIG), env=signer_env
    )
    assert code == 0, err
    lines = export.read_text().splitlines(keepends=True)
    size = len(lines) - 1
    assert size >= 3 and f"exported {size} entries" in out
    code, out, err = await verify_offline(export, vkey)
    assert code == 0, err
    assert out.startswith(f"log export verified: {size} entries")

    def alter(ls: list[str]) -> list[str]:
        row = json.loads(ls[2])
        entry = bytearray(base64.b64decode(row["entry"]))
        entry[-1] ^= 1
        row["entry"] = base64.b64encode(bytes(entry)).decode()
        return [*ls[:2], json.dumps(row) + "\n", *ls[3:]]

    cases = {
        "altered": (alter, "root differs from the signed checkpoint"),
        "deleted": (lambda ls: [*ls[:2], *ls[3:]], "entry 1: expected entry 1, found 2"),
        "swapped": (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "entry 0: expected entry 0"),
        "truncated": (lambda ls: ls[:-1], f"ends at {size - 1} of {size}"),
        "extended": (lambda ls: [*ls, ls[-1]], f"entry {size}: the export goes on past"),
        "garbage": (lambda ls: [*ls[:2], "{not json\n", *ls[3:]], "entry 1: not an export line"),
    }
    for name, (edit, why) in cases.items():
        code, _, err = await verify_offline(rewrite(export, tmp_path / f"{name}.jsonl", edit), vkey)
        assert code == 1 and why in err, (name, err)
        assert err.count("\n") == 1, err  # one line

    name = vkey.split("+", 1)[0]  # the log's own name, another key: the signature must fail
    other = NoteVerifier(name, ec.generate_private_key(ec.SECP256R1()).public_key()).vkey()
    code, _, err = await verify_offline(export, other)
    assert code == 1 and "export header" in err, err
