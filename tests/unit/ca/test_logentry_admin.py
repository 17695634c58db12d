"""Administrative-action entries (kind 0x04, the kill switch): the module docstring's encoding
re-implemented with the standard library equals what ``ca.logentry`` builds, byte for byte;
personal identifiers and the free-text reason appear only as commitments."""

from __future__ import annotations

import calendar
import hashlib
import hmac
import struct
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from ca.logentry import (
    AdminActionEntry,
    EntryKind,
    LogEntryError,
    PrivacyKey,
    entry_fields,
)

SECRET = bytes(range(32))
KEY = PrivacyKey("2026-01", SECRET)
AT = datetime(2026, 11, 21, 22, 15, 0, 654321, tzinfo=UTC)
ISS = "https://idp.example.com"


def lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def field(name: str, value: bytes) -> bytes:
    return bytes([len(name)]) + name.encode("ascii") + lp(value)


def commit(name: str, record_id: str, value: str | None) -> bytes:
    if value is None:
        return b""
    message = lp(b"qes-log-entry/1") + lp(name.encode()) + lp(record_id.encode())
    return hmac.new(SECRET, message + lp(value.encode()), hashlib.sha256).digest()


def spec(e: AdminActionEntry) -> bytes:
    rid = e.record_id
    micros = calendar.timegm(e.acted_at.utctimetuple()) * 1_000_000 + e.acted_at.microsecond
    return (
        b"qes-log-entry"
        + bytes([2, 4])  # version 2, kind 0x04
        + b"".join(
            [
                field("privacy_key_id", b"2026-01"),
                field("record_id", rid.encode()),
                field("request_id", e.request_id.encode()),
                field("acted_at", struct.pack(">Q", micros)),
                field("action", e.action.encode()),
                field("scope", e.scope.encode()),
                field("actor_issuer", (e.actor_issuer or "").encode()),
                field("actor_subject", commit("actor_subject", rid, e.actor_subject)),
                field("token_issuer", (e.token_issuer or "").encode()),
                field("token_subject", commit("token_subject", rid, e.token_subject)),
                field("client_id", commit("client_id", rid, e.client_id)),
                field("reason", commit("reason", rid, e.reason)),
            ]
        )
    )


def identity() -> AdminActionEntry:
    return AdminActionEntry(
        record_id="6f1c2d1e-0d7a-4c55-8a55-1f8f4a8e9b01",
        request_id="req-1",
        acted_at=AT,
        action="suspend",
        scope="identity",
        actor_issuer=ISS,
        actor_subject="security-officer-7",
        token_issuer=ISS,
        token_subject="erika.mustermann",
        reason="Erika Mustermann reported her laptop stolen",
    )


@pytest.mark.parametrize(
    "entry",
    [
        identity(),
        replace(
            identity(), action="resume", reason=None, actor_issuer=None, actor_subject="cli:ops"
        ),
        replace(
            identity(), scope="client", token_issuer=None, token_subject=None, client_id="payroll"
        ),
        replace(identity(), scope="all", token_issuer=None, token_subject=None),
    ],
)
def test_encoding_matches_the_docstring(entry: AdminActionEntry) -> None:
    encoded = entry.encode(KEY)
    assert encoded == spec(entry)
    kind, fields = entry_fields(encoded)
    assert kind is EntryKind.ADMIN
    assert dict(fields)["scope"] == entry.scope.encode()


def test_no_personal_data_in_clear() -> None:
    encoded = identity().encode(KEY)
    for secret in ("erika", "Mustermann", "security-officer-7", "laptop", "stolen"):
        assert secret.lower().encode() not in encoded.lower()


@pytest.mark.parametrize(
    "changes",
    [
        {"action": "delete"},
        {"scope": "planet"},
        {"scope": "client"},  # an identity given, no client id
        {"scope": "all"},
        {"token_subject": None},
        {"actor_subject": ""},
        {"reason": ""},
        {"acted_at": datetime(2026, 1, 1)},  # naive
    ],
)
def test_invalid_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(LogEntryError):
        replace(identity(), **changes)  # type: ignore[arg-type]
