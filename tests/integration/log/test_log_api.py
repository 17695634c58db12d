"""Issue 5 through the HTTP API: the signing response carries the entry's index, checkpoints
verify under signed-note rules with a verifier written here from the C2SP text (not
``ca.checkpoint``), and proofs verify with independent RFC 9162 code (pymerkle, tlog-scales)."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pymerkle import InclusionProof as PymerkleInclusionProof
from pymerkle import verify_inclusion as pymerkle_verify_inclusion
from tlog_scales.tlog import ConsistencyProof as ScalesConsistencyProof
from tlog_scales.tlog import InclusionProof as ScalesInclusionProof

from signer.http.kit.state import SERVICES
from tests.support.service import api_headers
from tests.support.signed_note import verify_note_independently


def open_note_independently(
    note: str, public_key: ec.EllipticCurvePublicKey, name: str
) -> tuple[str, int, bytes]:
    """C2SP signed-note (tests.support.signed_note, written from the spec text) + C2SP
    tlog-checkpoint body: origin, decimal size, base64 root."""
    text = verify_note_independently(note, public_key, name)
    origin, size, root64 = text.rstrip("\n").split("\n")[:3]
    assert origin == name
    return origin, int(size), base64.b64decode(root64, validate=True)


async def _sign(client: TestClient, token: str, **extra: Any) -> Any:
    body = {
        "hash_algorithm": "sha256",
        "hashes": [base64.b64encode(os.urandom(32)).decode()],
        **extra,
    }
    return await client.post("/api/v1/signatures", json=body, headers=api_headers(token))


async def test_response_index_checkpoint_and_proofs_verify_independently(
    client: TestClient, batch_token: str, auditor_token: str
) -> None:
    services = client.app[SERVICES]
    origin = services.settings.log.origin
    public_key = await services.hsm.run(
        lambda s: s.token_key(services.settings.log.key_label).public_key()
    )
    # The trust bundle publishes the verifier key: name+keyID+base64(0x02 || SPKI) (C2SP).
    bundle = await (await client.get("/api/v1/trust-bundle")).json()
    name, key_id_hex, key64 = bundle["log"]["verifier_key"].split("+", 2)
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert name == origin == bundle["log"]["origin"]
    assert base64.b64decode(key64) == b"\x02" + spki
    assert bytes.fromhex(key_id_hex) == hashlib.sha256(spki).digest()[:4]
    first = await _sign(client, batch_token)
    assert first.status == 201
    body = await first.json()
    index = body["log"]["index"]
    assert isinstance(index, int) and body["log"]["proof_url"].endswith(f"index={index}")

    refused = await _sign(client, batch_token, profile="no-such-profile")
    assert refused.status == 403
    second = await (await _sign(client, batch_token)).json()
    assert second["log"]["index"] == index + 2  # the refusal took the index in between

    old = await client.post("/api/v1/log/checkpoints", headers=api_headers(auditor_token))
    assert old.status in (200, 201) and old.content_type == "text/plain"
    _, old_size, old_root = open_note_independently(await old.text(), public_key, origin)
    assert old_size >= index + 3
    more = await (await _sign(client, batch_token)).json()
    new = await client.post("/api/v1/log/checkpoints", headers=api_headers(auditor_token))
    assert new.status == 201
    latest = await client.get("/api/v1/log/checkpoint")
    assert await latest.text() == await new.text()
    _, size, root = open_note_independently(await latest.text(), public_key, origin)
    assert size > more["log"]["index"]

    for idx in (index, index + 1, more["log"]["index"]):
        resp = await client.get(f"/api/v1/log/proof/inclusion?index={idx}")
        assert resp.status == 200
        proof = await resp.json()
        assert proof["tree_size"] == size and proof["checkpoint"] == await latest.text()
        entry = await client.get(f"/api/v1/log/entries/{idx}", headers=api_headers(auditor_token))
        leaf = hashlib.sha256(b"\x00" + base64.b64decode((await entry.json())["entry"])).digest()
        assert base64.b64decode(proof["leaf_hash"]) == leaf
        path = [base64.b64decode(h) for h in proof["hashes"]]
        ScalesInclusionProof(idx, size, path).check(leaf, root)
        # pymerkle's inclusion path is the leaf hash followed by RFC 9162's PATH, 1-based.
        ref = PymerkleInclusionProof("sha256", True, size, idx + 1, _rule(idx, size), [leaf, *path])
        pymerkle_verify_inclusion(leaf, root, ref, index=idx + 1, size=size)

    resp = await client.get(f"/api/v1/log/proof/consistency?old={old_size}&new={size}")
    assert resp.status == 200
    cons = await resp.json()
    path = [base64.b64decode(h) for h in cons["hashes"]]
    ScalesConsistencyProof(old_size, size, path).check(old_root, root)


def _rule(index: int, size: int) -> list[int]:
    """pymerkle's path rule (its own tree computes it); built from a tree of ``size`` dummies."""
    from pymerkle import InmemoryTree

    tree = InmemoryTree(algorithm="sha256")
    for i in range(size):
        tree.append_entry(i.to_bytes(8, "big"))
    rule: list[int] = tree.prove_inclusion(index + 1, size).rule
    return rule


async def test_log_api_errors_are_problem_json(client: TestClient, batch_token: str) -> None:
    bad = await client.get("/api/v1/log/proof/inclusion?index=x")
    assert bad.status == 400 and bad.content_type == "application/problem+json"
    assert (await bad.json())["type"] == "/problems/invalid-log-query"
    beyond = await client.get(f"/api/v1/log/proof/inclusion?index=0&size={2**62}")
    assert beyond.status == 404
    assert (await beyond.json())["type"] == "/problems/log-size-unavailable"
    entry = await client.get("/api/v1/log/entries/0", headers=api_headers(batch_token))
    assert entry.status == 403
    publish = await client.post("/api/v1/log/checkpoints")
    assert publish.status == 401
