"""A signature result as the JSON value every surface returns (batch API, web signing, held
requests): plain data, no HTTP."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from signer.signing.pipeline import SignatureResult


def render_result(result: SignatureResult, public_url: str) -> Mapping[str, Any]:
    pem = result.certificate.public_bytes(Encoding.PEM).decode()
    return {
        "serial": result.serial,
        "profile": result.profile,
        "format": result.format,
        "signature_algorithm": "ecdsa",
        "signatures": [base64.b64encode(s).decode() for s in result.signatures],
        "certificate": pem,
        "chain": pem + result.chain_pem,
        "not_before": result.certificate.not_valid_before_utc.isoformat(),
        "not_after": result.certificate.not_valid_after_utc.isoformat(),
        "record_url": f"{public_url}/api/v1/certificates/{result.serial}",
        "key": {"evidence": result.evidence.as_dict(), "destruction": result.destruction.as_dict()},
    }
