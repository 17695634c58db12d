"""Administrative-action entries (kind 0x04: the kill switch, and from version 3 every admin
act, issue 15 item 5): the module docstring's encoding re-implemented with the standard library
equals what ``ca.logentry`` builds, byte for byte, in version 2 (suspensions logged before) and
3; personal identifiers and the free-text reason appear only as commitments."""

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
    entry_version,
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


def spec(e: AdminActionEntry, version: int = 3) -> bytes:
    rid = e.record_id
    micros = calendar.timegm(e.acted_at.utctimetuple()) * 1_000_000 + e.acted_at.microsecond
    serial = e.certificate_serial or 0
    later = [
        field("detail", (e.detail or "").encode()),
        field("certificate_serial", serial.to_bytes((serial.bit_length() + 7) // 8, "big")),
        field("target_sha256", e.target_sha256 or b""),
    ]
    return (
        b"qes-log-entry"
        + bytes([version, 4])  # kind 0x04
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
                *(later if version == 3 else []),
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
    assert encoded == spec(entry) and entry_version(encoded) == 3
    kind, fields = entry_fields(encoded)
    assert kind is EntryKind.ADMIN
    assert dict(fields)["scope"] == entry.scope.encode()
    # A suspension logged before version 3 still rebuilds, byte for byte.
    old = entry.encode(KEY, version=2)
    assert old == spec(entry, version=2) and entry_version(old) == 2
    assert entry_fields(old)[0] is EntryKind.ADMIN


CERT_SHA256 = hashlib.sha256(b"a certificate").digest()


def act(action: str, scope: str, detail: str | None, **target: object) -> AdminActionEntry:
    return AdminActionEntry(
        record_id="0b5e7c43-9a43-4f3e-b7a1-2d6c1f0e8a77", request_id="cli-1", acted_at=AT,
        action=action, scope=scope, actor_issuer=None, actor_subject="cli:ops", detail=detail,
        **target,  # type: ignore[arg-type]
    )  # fmt: skip


def client_act(action: str, detail: str | None = None) -> AdminActionEntry:
    return act(action, "client", detail, client_id="rp-0123456789abcdef")


def certificate_act(action: str, detail: str) -> AdminActionEntry:
    return act(
        action, "certificate", detail, certificate_serial=0x7F3A_0000_0000_0001,
        target_sha256=CERT_SHA256,
    )  # fmt: skip


@pytest.mark.parametrize(
    "entry",
    [
        client_act("client-add", "api:web-signing format:pades"),
        client_act("client-rotate", "grace=3600"),
        client_act("client-scope", "*"),
        client_act("client-revoke"),
        certificate_act("certificate-revoke", "tsa keyCompromise"),
        certificate_act("ca-replace", "issuing"),
        act("policy-load", "policy", "rules=3", target_sha256=CERT_SHA256),
    ],
)
def test_version_3_acts_match_the_docstring(entry: AdminActionEntry) -> None:
    encoded = entry.encode(KEY)
    assert encoded == spec(entry) and entry_version(encoded) == 3
    fields = dict(entry_fields(encoded)[1])
    assert fields["action"] == entry.action.encode()
    assert fields["detail"] == (entry.detail or "").encode()
    assert b"rp-0123456789abcdef" not in encoded and b"ops" not in encoded  # committed
    if entry.scope == "certificate":
        assert fields["certificate_serial"] == bytes.fromhex("7f3a000000000001")
    if entry.scope in ("certificate", "policy"):
        assert fields["target_sha256"] == CERT_SHA256
    with pytest.raises(LogEntryError):  # version 2 knew only suspend and resume
        entry.encode(KEY, version=2)


def test_version_3_holds_only_admin_entries() -> None:
    v3 = client_act("client-revoke").encode(KEY)
    with pytest.raises(LogEntryError):  # a v3 admin entry without its v3 fields
        entry_fields(v3[:13] + b"\x03" + v3[14:].split(b"\x06detail")[0])
    with pytest.raises(LogEntryError):  # no issuance (or refusal, approval) in version 3
        entry_fields(b"qes-log-entry\x03\x01")
    with pytest.raises(LogEntryError):  # and a version-2 admin entry has no detail
        entry_fields(v3[:13] + b"\x02" + v3[14:])


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
        {"action": "client-add"},  # a client act on an identity
        {"certificate_serial": 5},  # a certificate on an identity act
        {"detail": ""},
    ],
)
def test_invalid_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(LogEntryError):
        replace(identity(), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"action": "certificate-revoke"},  # a certificate act on a client
        {"scope": "certificate"},  # no serial
        {"target_sha256": CERT_SHA256},  # a SHA-256 on a client act
        {"action": "policy-load"},  # a policy act on a client
        {"scope": "policy", "client_id": None},  # a policy without its SHA-256
    ],
)
def test_invalid_version_3_acts_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(LogEntryError):
        replace(client_act("client-add"), **changes)  # type: ignore[arg-type]
    with pytest.raises(LogEntryError):
        replace(certificate_act("ca-replace", "root"), target_sha256=b"short")
    with pytest.raises(LogEntryError):
        replace(certificate_act("ca-replace", "root"), certificate_serial=0)
