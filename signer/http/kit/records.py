"""Signing records as JSON values and page cursors: shared by the certificates API and the
audit UI's exports and pages."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signer.http.kit.params import utc_instant
from signer.http.kit.problems import InvalidRequest
from signer.signing.timestamping import gen_time
from signer.storage.records import Cursor, SigningRecord


def summary(rec: SigningRecord) -> dict[str, Any]:
    return {
        "serial": rec.serial,
        "status": rec.status,
        "created_at": rec.created_at.isoformat(),
        "completed_at": rec.completed_at.isoformat() if rec.completed_at else None,
        "subject_dn": rec.subject_dn,
        "email": rec.email,
        "identity": {
            "issuer": rec.token_issuer,
            "issuer_name": rec.issuer_name,
            "subject": rec.token_subject,
            "client_id": rec.client_id,
            "subject_type": rec.subject_type,
        },
        "profile": rec.profile,
        "not_before": rec.not_before.isoformat(),
        "not_after": rec.not_after.isoformat(),
        "hash_algorithm": rec.hash_algorithm,
        "signature_format": rec.signature_format,
        "digest_count": len(rec.digests),
        "signed_count": rec.signed_count,
        "key_evidence": dict(rec.key_evidence),
        "key_destroyed": bool(rec.destruction and rec.destruction.get("confirmed_absent")),
        "failure": rec.failure,
        "purged": rec.purged,
    }


def detail(rec: SigningRecord) -> dict[str, Any]:
    body = summary(rec)
    body["certificate"] = None
    if not rec.purged:
        cert = x509.load_der_x509_certificate(rec.certificate_der)
        body["certificate"] = cert.public_bytes(Encoding.PEM).decode()
    body["digests"] = [base64.b64encode(d).decode() for d in rec.digests]
    body["destruction"] = dict(rec.destruction) if rec.destruction else None
    body["request_id"] = rec.request_id
    body["time_stamps"] = [
        {"gen_time": gen_time(token).isoformat(), "token": base64.b64encode(token).decode()}
        for token in rec.time_stamps
    ]
    return body


def encode_cursor(rec: SigningRecord) -> str:
    raw = json.dumps([rec.created_at.isoformat(), str(rec.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        created, ident = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("cursor time without offset")
        return Cursor(utc_instant(when), uuid.UUID(ident))
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:
        raise InvalidRequest("cursor is invalid") from exc


def email_notice(before: datetime) -> str:
    """Said with an e-mail search while older records' e-mails are still being filled in."""
    return (
        f"E-mail not recorded yet for records created before {before.isoformat()}: it is being"
        " read from their certificates (signer.translog.backfill, at the service's start);"
        " until then an e-mail search may miss them. Search them by identity, name or serial."
    )
