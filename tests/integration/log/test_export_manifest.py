"""Signed export manifests: the audit UI's manifest is a C2SP signed note of the log key whose
text is ``<origin>/export`` and the manifest JSON. Its signature is checked with a verifier
written from the spec (tests.support.signed_note), it can never pass as a checkpoint, and
`qes audit verify --export --manifest` accepts the real export and rejects an edited export,
an edited manifest, a broken signature and a checkpoint that is not in the log."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ca.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)
from signer.http.audit import export as exports
from signer.http.kit.state import SERVICES
from signer.storage.log import StoredCheckpoint
from signer.storage.records import RecordFilter
from tests.support.service import DEV_CONFIG, run_qes, sign_random
from tests.support.signed_note import verify_note_independently


async def _qes_verify(env: dict[str, str], export: Path, manifest: Path) -> tuple[int, str, str]:
    return await run_qes(
        *("audit", "verify", "--config", str(DEV_CONFIG)),
        *("--export", str(export), "--manifest", str(manifest)),
        env=env,
    )


async def _export(client: TestClient, flt: RecordFilter, fmt: str, **kw: Any) -> tuple[bytes, Any]:
    """The export and its signed manifest, made by the functions the audit UI views call."""
    services = client.app[SERVICES]
    as_of = datetime.now(UTC)
    checkpoint = (
        await services.publisher.publish(force=True) or await services.log.latest_checkpoint()
    )
    pinned = exports.pinned(flt, as_of)
    data = b"".join([chunk async for chunk in exports.chunks(services.records, pinned, fmt)])
    manifest = await exports.signed_manifest(
        await exports.manifest(
            services.records,
            pinned,
            fmt,
            query={"subject": "demo-batch"},
            as_of=as_of,
            now=datetime.now(UTC),
            checkpoint=kw.get("checkpoint", checkpoint),
        ),
        exported_by={"issuer": "https://idp.example.com", "subject": "carol"},
        origin=services.settings.log.origin,
        sign=services.publisher.sign_note,
    )
    return data, manifest


async def _sign(client: TestClient, token: str) -> None:
    status, _ = await sign_random(client, token)
    assert status == 201


async def test_manifest_is_a_signed_note_and_the_cli_verifies_exports(
    client: TestClient, batch_token: str, signer_env: dict[str, str], tmp_path: Path
) -> None:
    services = client.app[SERVICES]
    origin = services.settings.log.origin
    public_key = await services.hsm.run(
        lambda s: s.token_key(services.settings.log.key_label).public_key()
    )
    since = datetime.now(UTC)
    await _sign(client, batch_token)
    await _sign(client, batch_token)
    flt = RecordFilter(subject="demo-batch", since=since)
    data, manifest = await _export(client, flt, "jsonl")

    text = verify_note_independently(manifest["signed_note"], public_key, origin)
    first, body, end = text.split("\n")
    assert first == origin + "/export" and end == ""
    signed = json.loads(body)
    assert signed == {k: v for k, v in manifest.items() if k != "signed_note"}
    assert signed["rows"] == 2 and signed["sha256"] == hashlib.sha256(data).hexdigest()
    assert signed["exported_by"]["subject"] == "carol"
    assert signed["checkpoint"]["size"] >= 2
    with pytest.raises(CheckpointError):  # a manifest never passes as a checkpoint
        open_checkpoint(manifest["signed_note"], NoteVerifier(origin, public_key), origin)

    await _sign(client, batch_token)  # the log grows past the manifest's checkpoint
    await services.publisher.publish(force=True)
    export_file, manifest_file = tmp_path / "export.jsonl", tmp_path / "manifest.json"
    export_file.write_bytes(data)
    manifest_file.write_text(json.dumps(manifest))
    code, out, err = await _qes_verify(signer_env, export_file, manifest_file)
    assert code == 0, err
    assert out.startswith("export verified: 2 rows")
    assert f"(size {signed['checkpoint']['size']}) is consistent" in out

    csv_data, csv_manifest = await _export(client, flt, "csv")
    csv_file, csv_manifest_file = tmp_path / "export.csv", tmp_path / "manifest-csv.json"
    csv_file.write_bytes(csv_data)
    csv_manifest_file.write_text(json.dumps(csv_manifest))
    code, out, err = await _qes_verify(signer_env, csv_file, csv_manifest_file)
    assert code == 0, err
    assert out.startswith("export verified: 3 rows")

    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(data.replace(b"completed", b"failed", 1))
    code, _, err = await _qes_verify(signer_env, edited, manifest_file)
    assert code == 1 and "SHA-256 differs" in err and len(err.strip().splitlines()) == 1

    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps({**manifest, "rows": 1}))
    code, _, err = await _qes_verify(signer_env, export_file, fewer)
    assert code == 1 and "field rows differs" in err

    note = manifest["signed_note"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**manifest, "signed_note": note.replace('"rows":2', '"rows":3')}))
    code, _, err = await _qes_verify(signer_env, export_file, broken)
    assert code == 1 and "signature" in err

    # A checkpoint the log key signed but that is not a prefix of this log (a fork).
    size = signed["checkpoint"]["size"]
    forked_note = await services.hsm.run(
        lambda s: sign_checkpoint(
            Checkpoint(origin, size, b"\x07" * 32),
            NoteSigner(origin, s.token_key(services.settings.log.key_label)),
        )
    )
    forked = StoredCheckpoint(size, b"\x07" * 32, forked_note, datetime.now(UTC))
    fork_data, fork_manifest = await _export(client, flt, "jsonl", checkpoint=forked)
    fork_export, fork_file = tmp_path / "fork.jsonl", tmp_path / "fork.json"
    fork_export.write_bytes(fork_data)
    fork_file.write_text(json.dumps(fork_manifest))
    code, _, err = await _qes_verify(signer_env, fork_export, fork_file)
    assert code == 1 and "not in the log" in err, err
