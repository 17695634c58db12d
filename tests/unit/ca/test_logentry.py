"""Log entries: the module docstring is a spec an auditor can implement, and nothing leaks.

``spec_*`` below re-implement the version-1 and version-2 encodings from the docstring alone,
with the standard library (struct, hmac, hashlib), the way an external auditor would; the
entries ``ca.logentry`` builds must equal them byte for byte.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from ca.authority import IssuingCA
from ca.errors import CaError
from ca.logentry import (
    SUPPRESSED_REASON,
    EntryKind,
    IssuanceEntry,
    LogEntryError,
    PrivacyKey,
    RefusalEntry,
    Requester,
    RequestSummary,
    decode_time,
    digests_sha256,
    entry_fields,
    entry_version,
    time_stamps_sha256,
)
from ca.merkle import CompactRange, LeafHashReader, inclusion_proof, leaf_hash, verify_inclusion
from ca.profiles import Level, NaturalPerson

SECRET = bytes(range(32))
KEY = PrivacyKey("2026-01", SECRET)
ISSUED = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
COMPLETED = ISSUED + timedelta(milliseconds=42)
SUBJECT = "c1f0a6f2-3a54-4c3b-9f58-7d5b0b1f2a10"
EMAIL = "erika.mustermann@example.com"
CLIENT = "payroll-web-app"
GIVEN, SURNAME = "Erika", "Mustermann"
DIGESTS = (hashlib.sha256(b"doc 1").digest(), hashlib.sha256(b"doc 2").digest())
EVIDENCE = {"local": True, "never_extractable": True, "always_sensitive": True}
DESTRUCTION = {"private_destroyed": True, "public_destroyed": True, "confirmed_absent": True}


def make_certificate() -> x509.Certificate:
    """A deterministic certificate (Ed25519 signatures) carrying personal names."""
    ca_key = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    subject_key = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x02" * 32)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.GIVEN_NAME, GIVEN),
            x509.NameAttribute(NameOID.SURNAME, SURNAME),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{GIVEN} {SURNAME}"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, EMAIL),
        ]
    )
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Issuing CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(0x0123456789ABCDEF0123)
        .not_valid_before(datetime(2026, 3, 1, 11, 59, tzinfo=UTC))
        .not_valid_after(datetime(2026, 3, 1, 12, 9, tzinfo=UTC))
        .sign(ca_key, None)
    )


CERT = make_certificate()
REQUESTER = Requester(
    issuer_name="corporate-idp",
    token_issuer="https://idp.example.com/realms/staff",
    token_subject=SUBJECT,
    email=EMAIL,
    client_id=CLIENT,
)
REQUEST = RequestSummary(
    profile="qes", subject_type="natural", hash_algorithm="sha256", digests=DIGESTS
)


def issuance(**changes: Any) -> IssuanceEntry:
    entry = IssuanceEntry(
        record_id="7d3c5a8e-1f0b-4c8e-9a51-3e2f6b7c8d90",
        request_id="req-0001",
        issued_at=ISSUED,
        completed_at=COMPLETED,
        requester=REQUESTER,
        request=REQUEST,
        certificate=CERT,
        key_evidence=EVIDENCE,
        destruction=DESTRUCTION,
        signed_count=2,
    )
    return replace(entry, **changes)


def refusal(**changes: Any) -> RefusalEntry:
    entry = RefusalEntry(
        record_id="0b9e2d4c-6a71-4f3e-8c15-2d9a7b6e5f40",
        request_id="req-0002",
        refused_at=ISSUED,
        requester=REQUESTER,
        request=REQUEST,
        reason="policy.profile_not_allowed",
    )
    return replace(entry, **changes)


# -- The spec, re-implemented with the standard library ------------------------------------------


def lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def spec_field(name: str, value: bytes) -> bytes:
    return bytes([len(name)]) + name.encode("ascii") + lp(value)


def spec_time(moment: datetime) -> bytes:
    utc = moment.astimezone(UTC)
    return struct.pack(">Q", calendar.timegm(utc.timetuple()) * 1_000_000 + utc.microsecond)


def spec_commit(name: str, record_id: str, value: bytes) -> bytes:
    message = lp(b"qes-log-entry/1") + lp(name.encode()) + lp(record_id.encode()) + lp(value)
    return hmac.new(SECRET, message, hashlib.sha256).digest()


def spec_flags(flags: dict[str, bool]) -> bytes:
    items = sorted((name.encode(), value) for name, value in flags.items())
    body = b"".join(bytes([len(n)]) + n + (b"\x01" if v else b"\x00") for n, v in items)
    return struct.pack(">I", len(items)) + body


def spec_digests(digests: tuple[bytes, ...]) -> list[bytes]:
    return [
        spec_field("digest_count", struct.pack(">Q", len(digests))),
        spec_field("digests_sha256", hashlib.sha256(b"".join(lp(d) for d in digests)).digest()),
    ]


def spec_issuance(e: IssuanceEntry, version: int = 1) -> bytes:
    rid = e.record_id
    cert = e.certificate
    der = cert.public_bytes(serialization.Encoding.DER)
    serial = cert.serial_number
    fields = [
        spec_field("privacy_key_id", b"2026-01"),
        spec_field("record_id", rid.encode()),
        spec_field("request_id", e.request_id.encode()),
        spec_field("issued_at", spec_time(e.issued_at)),
        spec_field("completed_at", spec_time(e.completed_at)),
        spec_field("outcome", b"completed" if e.failure is None else b"failed"),
        spec_field("failure", (e.failure or "").encode()),
        spec_field("issuer_name", b"corporate-idp"),
        spec_field("token_issuer", b"https://idp.example.com/realms/staff"),
        spec_field("token_subject", spec_commit("token_subject", rid, SUBJECT.encode())),
        spec_field("email", spec_commit("email", rid, EMAIL.encode())),
        spec_field("client_id", spec_commit("client_id", rid, CLIENT.encode())),
        spec_field("profile", b"qes"),
        spec_field("subject_type", b"natural"),
        spec_field("certificate_serial", serial.to_bytes((serial.bit_length() + 7) // 8, "big")),
        spec_field("certificate_sha256", hashlib.sha256(der).digest()),
        spec_field(
            "certificate_subject",
            spec_commit("certificate_subject", rid, cert.subject.public_bytes()),
        ),
        spec_field("not_before", spec_time(cert.not_valid_before_utc)),
        spec_field("not_after", spec_time(cert.not_valid_after_utc)),
        spec_field("hash_algorithm", b"sha256"),
        *([spec_field("signature_format", e.signature_format.encode())] if version == 2 else []),
        *spec_digests(e.request.digests),
        spec_field("key_evidence", spec_flags(dict(e.key_evidence))),
        spec_field("destruction", spec_flags(dict(e.destruction)) if e.destruction else b""),
        spec_field("signed_count", struct.pack(">Q", e.signed_count)),
    ]
    if version == 2:
        tokens = b"".join(lp(t) for t in e.time_stamps)
        fields += [
            spec_field("time_stamp_count", struct.pack(">Q", len(e.time_stamps))),
            spec_field("time_stamps_sha256", hashlib.sha256(tokens).digest()),
        ]
    return b"qes-log-entry" + bytes([version, 1]) + b"".join(fields)


def spec_text(value: str | None) -> bytes:
    return (value or "").encode()


def spec_optional_commit(name: str, record_id: str, value: str | None) -> bytes:
    return b"" if value is None else spec_commit(name, record_id, value.encode())


def spec_refusal(e: RefusalEntry, version: int = 1) -> bytes:
    rid, who, what = e.record_id, e.requester, e.request
    v2 = version == 2
    fields = [
        spec_field("privacy_key_id", b"2026-01"),
        spec_field("record_id", rid.encode()),
        spec_field("request_id", e.request_id.encode()),
        spec_field("refused_at", spec_time(e.refused_at)),
        spec_field("issuer_name", spec_text(who.issuer_name)),
        spec_field("token_issuer", spec_text(who.token_issuer)),
        *([spec_field("claimed_issuer", spec_text(e.claimed_issuer))] if v2 else []),
        spec_field("token_subject", spec_optional_commit("token_subject", rid, who.token_subject)),
        spec_field("email", spec_optional_commit("email", rid, who.email)),
        spec_field("client_id", spec_optional_commit("client_id", rid, who.client_id)),
        *(
            [
                spec_field(
                    "client_address", spec_optional_commit("client_address", rid, e.client_address)
                )
            ]
            if v2
            else []
        ),
        spec_field("profile", spec_text(what.profile)),
        spec_field("subject_type", spec_text(what.subject_type)),
        spec_field("hash_algorithm", spec_text(what.hash_algorithm)),
        *([spec_field("signature_format", spec_text(e.signature_format))] if v2 else []),
        *spec_digests(what.digests),
        spec_field("reason", e.reason.encode()),
        *([spec_field("suppressed", struct.pack(">Q", e.suppressed))] if v2 else []),
    ]
    return b"qes-log-entry" + bytes([version, 2]) + b"".join(fields)


def test_issuance_entry_follows_the_spec() -> None:
    entry = issuance()
    assert entry.encode(KEY, version=1) == spec_issuance(entry)
    assert entry.encode(KEY) == spec_issuance(entry, version=2)


def test_version_2_issuance_commits_to_format_and_time_stamps() -> None:
    tokens = (b"\x30\x03token-1", b"\x30\x03token-2")
    entry = issuance(signature_format="cades", time_stamps=tokens)
    encoded = entry.encode(KEY)
    assert encoded == spec_issuance(entry, version=2) and entry_version(encoded) == 2
    fields = dict(entry_fields(encoded)[1])
    assert fields["signature_format"] == b"cades"
    assert fields["time_stamp_count"] == struct.pack(">Q", 2)
    assert fields["time_stamps_sha256"] == time_stamps_sha256(tokens)
    # Any change of a token, their order or the format changes the entry; v1 ignores them.
    for other in (
        issuance(signature_format="pades", time_stamps=tokens),
        issuance(signature_format="cades", time_stamps=tokens[::-1]),
        issuance(signature_format="cades", time_stamps=(tokens[0], tokens[1] + b"x")),
        issuance(signature_format="cades", time_stamps=tokens[:1]),
    ):
        assert other.encode(KEY) != encoded
        assert other.encode(KEY, version=1) == entry.encode(KEY, version=1)
    # A version-1 entry keeps decoding with its own table.
    v1 = entry.encode(KEY, version=1)
    assert entry_version(v1) == 1 and "signature_format" not in dict(entry_fields(v1)[1])


def test_failed_issuance_follows_the_spec() -> None:
    entry = issuance(failure="key_not_destroyed", destruction=None, signed_count=0)
    encoded = entry.encode(KEY, version=1)
    assert encoded == spec_issuance(entry)
    assert entry.encode(KEY) == spec_issuance(entry, version=2)
    fields = dict(entry_fields(encoded)[1])
    assert (fields["outcome"], fields["failure"], fields["destruction"]) == (
        b"failed",
        b"key_not_destroyed",
        b"",
    )


def test_refusal_of_an_unknown_requester_follows_the_spec() -> None:
    entry = refusal(
        requester=Requester(None, None, None),
        request=RequestSummary(profile="qes", subject_type=None, hash_algorithm=None),
        reason="token.invalid_signature",
    )
    assert entry.encode(KEY, version=1) == spec_refusal(entry)
    assert entry.encode(KEY) == spec_refusal(entry, version=2)


def test_refusal_entry_follows_the_spec_and_is_pinned() -> None:
    """Version 1 is frozen. The constant was computed once from ``spec_refusal`` above; a
    change to the encoding needs a new ENTRY_VERSION, not a new constant."""
    encoded = refusal().encode(KEY, version=1)
    assert encoded == spec_refusal(refusal())
    assert leaf_hash(encoded).hex() == (
        "46ae8ff437ba9d35469044ef466d1fba9c555c976529d488cbb783577c3b7066"
    )
    assert refusal().encode(KEY) == spec_refusal(refusal(), version=2)


def test_unauthenticated_refusal_and_suppressed_aggregate_follow_the_spec() -> None:
    anonymous = refusal(
        requester=Requester(None, None, None),
        request=RequestSummary(None, None, "sha256", DIGESTS[:1]),
        reason="token.bad_signature",
        claimed_issuer="https://idp.example.com/realms/staff",
        client_address="192.0.2.7",
        signature_format="cades",
    )
    encoded = anonymous.encode(KEY)
    assert encoded == spec_refusal(anonymous, version=2)
    fields = dict(entry_fields(encoded)[1])
    assert fields["claimed_issuer"] == b"https://idp.example.com/realms/staff"
    assert fields["token_issuer"] == b"" and b"192.0.2.7" not in encoded
    assert fields["client_address"] == spec_commit(
        "client_address", anonymous.record_id, b"192.0.2.7"
    )
    aggregate = refusal(
        requester=Requester(None, None, None),
        request=RequestSummary(None, None, None),
        reason=SUPPRESSED_REASON,
        client_address="192.0.2.7",
        suppressed=990,
    )
    assert aggregate.encode(KEY) == spec_refusal(aggregate, version=2)
    assert dict(entry_fields(aggregate.encode(KEY))[1])["suppressed"] == struct.pack(">Q", 990)
    for bad in (
        lambda: refusal(claimed_issuer="https://x.example.com"),  # the token did verify
        lambda: refusal(reason=SUPPRESSED_REASON),  # an aggregate of nothing
        lambda: refusal(suppressed=3),  # a count under another reason
        lambda: replace(aggregate, request=REQUEST),  # an aggregate with digests
        lambda: anonymous.encode(KEY, version=1),  # not representable in version 1
        lambda: refusal().encode(KEY, version=3),
    ):
        with pytest.raises(LogEntryError):
            bad()


# -- Structure, privacy, auditability ------------------------------------------------------------


def test_entry_fields_names_every_field_in_order() -> None:
    kind, fields = entry_fields(issuance().encode(KEY))
    assert kind is EntryKind.ISSUANCE
    names = [name for name, _ in fields]
    assert names[:4] == ["privacy_key_id", "record_id", "request_id", "issued_at"]
    assert names[-1] == "time_stamps_sha256" and len(names) == 28
    v1_names = [name for name, _ in entry_fields(issuance().encode(KEY, version=1))[1]]
    assert v1_names[-1] == "signed_count" and len(v1_names) == 25
    values = dict(fields)
    assert values["certificate_serial"] == bytes.fromhex("0123456789abcdef0123")
    assert values["issued_at"] == struct.pack(">Q", 1772366400123456)
    assert values["digests_sha256"] == digests_sha256(DIGESTS)
    kind, fields = entry_fields(refusal().encode(KEY))
    assert kind is EntryKind.REFUSAL
    assert dict(fields)["reason"] == b"policy.profile_not_allowed"


def test_entries_reveal_no_personal_data() -> None:
    subject_der = CERT.subject.public_bytes()
    for encoded in (issuance().encode(KEY), refusal().encode(KEY)):
        for secret in (SUBJECT, EMAIL, CLIENT, GIVEN, SURNAME, "Mustermann", "erika"):
            assert secret.encode() not in encoded
            assert secret.lower().encode() not in encoded.lower()
        assert subject_der not in encoded
        assert SECRET not in encoded
    assert SECRET.hex() not in repr(KEY)
    assert str(list(SECRET)) not in repr(KEY)


def test_commitments_are_bound_to_record_field_and_key() -> None:
    one = dict(entry_fields(issuance().encode(KEY))[1])
    other_record = dict(entry_fields(issuance(record_id="another-record").encode(KEY))[1])
    other_key = dict(entry_fields(issuance().encode(PrivacyKey("2026-02", b"k" * 32)))[1])
    for name in ("token_subject", "email", "client_id", "certificate_subject"):
        assert one[name] != other_record[name]  # unlinkable across entries
        assert one[name] != other_key[name]
    assert one["privacy_key_id"] == b"2026-01" and other_key["privacy_key_id"] == b"2026-02"
    # The same string committed as two different fields gives two different values.
    same = issuance(requester=replace(REQUESTER, email=SUBJECT))
    fields = dict(entry_fields(same.encode(KEY))[1])
    assert fields["email"] != fields["token_subject"]


def test_auditor_recomputes_the_entry_from_the_stored_record() -> None:
    logged = issuance().encode(KEY)
    # What the database gives back: DER, UTC timestamps, plain dicts in another order.
    stored_cert = x509.load_der_x509_certificate(CERT.public_bytes(serialization.Encoding.DER))
    recomputed = issuance(
        certificate=stored_cert,
        issued_at=ISSUED.astimezone(timezone(timedelta(hours=1))),
        key_evidence=dict(reversed(list(EVIDENCE.items()))),
        destruction=dict(sorted(DESTRUCTION.items())),
    ).encode(KEY)
    assert recomputed == logged
    # With the wrong key, exactly the commitments differ.
    wrong = issuance().encode(PrivacyKey("2026-01", b"w" * 32))
    differing = {
        name
        for (name, a), (_, b) in zip(entry_fields(logged)[1], entry_fields(wrong)[1], strict=True)
        if a != b
    }
    assert differing == {"token_subject", "email", "client_id", "certificate_subject"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"record_id": "other"}, "record_id"),
        ({"request_id": "req-9"}, "request_id"),
        ({"issued_at": ISSUED - timedelta(microseconds=1)}, "issued_at"),
        ({"completed_at": COMPLETED + timedelta(microseconds=1)}, "completed_at"),
        ({"requester": replace(REQUESTER, issuer_name="other-idp")}, "issuer_name"),
        ({"requester": replace(REQUESTER, token_issuer="https://x.example.com")}, "token_issuer"),
        ({"requester": replace(REQUESTER, token_subject="someone-else")}, "token_subject"),
        ({"requester": replace(REQUESTER, email="e@example.com")}, "email"),
        ({"requester": replace(REQUESTER, email=None)}, "email"),
        ({"requester": replace(REQUESTER, client_id="other-app")}, "client_id"),
        ({"request": replace(REQUEST, profile="advanced")}, "profile"),
        ({"request": replace(REQUEST, subject_type="legal")}, "subject_type"),
        ({"request": replace(REQUEST, hash_algorithm="sha384")}, "hash_algorithm"),
        ({"request": replace(REQUEST, digests=DIGESTS[::-1])}, "digests_sha256"),
        ({"key_evidence": {**EVIDENCE, "local": False}}, "key_evidence"),
        ({"destruction": {**DESTRUCTION, "confirmed_absent": False}}, "destruction"),
        ({"signed_count": 1}, "signed_count"),
    ],
)
def test_every_input_is_committed(changes: dict[str, Any], field: str) -> None:
    base = entry_fields(issuance().encode(KEY))[1]
    changed = entry_fields(issuance(**changes).encode(KEY))[1]
    differing = [name for (name, a), (_, b) in zip(base, changed, strict=True) if a != b]
    assert field in differing
    commitments = {"token_subject", "email", "client_id", "certificate_subject"}
    assert set(differing) <= {field, *commitments}


def test_another_certificate_changes_every_certificate_field() -> None:
    other = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Max Muster")]))
        .issuer_name(CERT.issuer)
        .public_key(CERT.public_key())  # type: ignore[arg-type]
        .serial_number(7)
        .not_valid_before(CERT.not_valid_before_utc - timedelta(seconds=1))
        .not_valid_after(CERT.not_valid_after_utc + timedelta(seconds=1))
        .sign(ed25519.Ed25519PrivateKey.from_private_bytes(b"\x01" * 32), None)
    )
    base = entry_fields(issuance().encode(KEY))[1]
    changed = entry_fields(issuance(certificate=other).encode(KEY))[1]
    differing = {name for (name, a), (_, b) in zip(base, changed, strict=True) if a != b}
    assert differing == {
        "certificate_serial",
        "certificate_sha256",
        "certificate_subject",
        "not_before",
        "not_after",
    }


def test_certificate_from_the_issuing_ca(
    issuing_ca: IssuingCA,
    issuing_key: ec.EllipticCurvePrivateKey,
    leaf_key: ec.EllipticCurvePrivateKey,
    natural_person: NaturalPerson,
) -> None:
    cert = issuing_ca.issue(issuing_key, leaf_key.public_key(), natural_person, Level.QES)
    entry = issuance(certificate=cert)
    encoded = entry.encode(KEY)
    assert encoded == spec_issuance(entry, version=2)
    assert natural_person.surname is not None
    assert natural_person.surname.encode() not in encoded


def test_entries_are_log_leaves() -> None:
    entries = [issuance().encode(KEY), refusal().encode(KEY), issuance(record_id="r3").encode(KEY)]
    leaves = [leaf_hash(e) for e in entries]
    compact, _ = CompactRange.empty().extend(leaves)
    proof = inclusion_proof(LeafHashReader(leaves), 1, 3)
    verify_inclusion(leaf_hash(refusal().encode(KEY)), proof, compact.tree_head())


# -- Validation ----------------------------------------------------------------------------------


def test_invalid_values_are_refused() -> None:
    naive = datetime(2026, 3, 1, 12, 0, 0)  # no tzinfo: the point of the check
    for call in (
        lambda: issuance(issued_at=naive),
        lambda: issuance(completed_at=ISSUED - timedelta(seconds=1)),
        lambda: issuance(destruction=None),  # completed without destruction
        lambda: issuance(request=replace(REQUEST, digests=())),
        lambda: issuance(requester=replace(REQUESTER, token_subject=None)),
        lambda: issuance(requester=replace(REQUESTER, email="")),
        lambda: issuance(signed_count=-1),
        lambda: issuance(certificate=CERT.public_bytes(serialization.Encoding.DER)),
        lambda: issuance().encode("not a key"),  # type: ignore[arg-type]
        lambda: issuance(key_evidence={"local": 1}).encode(KEY),
        lambda: issuance(request=replace(REQUEST, profile=None)),
        lambda: issuance(request=replace(REQUEST, hash_algorithm="")),
        lambda: RequestSummary("qes", None, "sha256", (b"x" * 65,)),
        lambda: refusal(reason=""),
        lambda: refusal(refused_at=datetime(1969, 12, 31, tzinfo=UTC)),
        lambda: PrivacyKey("2026-01", b"short"),
        lambda: PrivacyKey("", SECRET),
        lambda: PrivacyKey("with\nnewline", SECRET),
    ):
        with pytest.raises(LogEntryError):
            call()
    assert issubclass(LogEntryError, CaError)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b"qes-log-entrX" + b[13:],  # magic
        lambda b: b[:13] + b"\x03" + b[14:],  # unsupported version
        lambda b: b[:13] + b"\x01" + b[14:],  # version-2 fields under version 1
        lambda b: b[:14] + b"\x09" + b[15:],  # kind
        lambda b: b[:14] + b"\x02" + b[15:],  # issuance fields under the refusal kind
        lambda b: b[:-1],  # truncated value
        lambda b: b + spec_field("extra", b""),  # one field too many
        lambda b: b[:-80] + b[-68:] + b[-80:-68],  # garbled tail (field headers)
    ],
)
def test_entry_fields_rejects_malformed_bytes(mutate: Any) -> None:
    with pytest.raises(LogEntryError):
        entry_fields(mutate(issuance().encode(KEY)))


def test_decode_time_reads_a_time_field_back() -> None:
    moment = datetime(2026, 11, 21, 19, 40, 5, 123456, tzinfo=UTC)
    micros = calendar.timegm(moment.timetuple()) * 1_000_000 + moment.microsecond
    assert decode_time(struct.pack(">Q", micros)) == moment
    assert decode_time(b"\0" * 8) == datetime(1970, 1, 1, tzinfo=UTC)
    with pytest.raises(LogEntryError):
        decode_time(b"\0" * 7)
