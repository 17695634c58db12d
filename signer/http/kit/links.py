"""Links the API puts in its bodies: where a log entry's inclusion proof is served."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PEM_CHAIN = "application/pem-certificate-chain"  # RFC 8555 §9.1


def proof_url(public_url: str, index: int) -> str:
    return f"{public_url}/api/v1/log/proof/inclusion?index={index}"


def with_proof_url(response: Mapping[str, Any], public_url: str) -> Mapping[str, Any]:
    """Add ``log.proof_url`` next to the ``log.index`` the pipeline (or the stored idempotent
    response) carries: the inclusion proof, available once a checkpoint covers the entry."""
    entry = response.get("log")
    if not isinstance(entry, Mapping) or not isinstance(entry.get("index"), int):
        return response
    index = entry["index"]
    return {**response, "log": {**entry, "proof_url": proof_url(public_url, index)}}
