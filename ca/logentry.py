"""Canonical bytes of issued-certificate log entries: the ``entry`` of RFC 9162 §2.1.1 leaves.

These kinds of entry go into the log: a finished issuance (the certificate, who asked, what was
signed, key evidence and destruction), a refused request (who asked, what, why refused), a
human approval or denial of a batch request (who decided, for whom, over which digests) and an
administrative action (the kill switch).
Personal identifiers never appear in clear: the token subject, e-mail address, RP client id
and the certificate's subject name enter the entry only as keyed commitments under a
log-privacy key. A leaf, a proof or an exported entry therefore reveals nothing personal,
while an auditor who holds the full record and the privacy key recomputes the entry
byte for byte and checks it against the log.

Encoding (this is the specification an external auditor implements)::

    entry  = magic version kind field*
    magic  = "qes-log-entry"                   13 ASCII bytes
    version= 0x03 (administrative actions written now) | 0x02 (the other kinds written now;
             administrative actions logged before version 3) | 0x01 (older entries)  1 byte
    kind   = 0x01 issuance | 0x02 refusal | 0x03 approval | 0x04 administrative action
                                               1 byte
    field  = u8(len(name)) name u32(len(value)) value
                                               name: ASCII; u8/u32/u64 are unsigned big-endian

Every field of the kind's table for the entry's version (below) is present, once, in table
order; a decoder rejects anything else. Value types:

- ``text``: UTF-8 of the string exactly as recorded (no normalisation); never empty when
  present. An optional (``?``) value that is absent is encoded with length 0.
- ``time``: u64, microseconds since 1970-01-01T00:00:00Z (PostgreSQL ``timestamptz``
  resolution, so a record read back from the database reproduces the entry).
- ``u64``: u64. ``bytes32``: 32 raw bytes. ``serial``: the certificate serial number as a
  minimal big-endian unsigned integer (RFC 5280 §4.1.2.2 serials are positive).
- ``commit``: ``HMAC-SHA-256(privacy key, lp("qes-log-entry/1") || lp(name) ||
  lp(record_id) || lp(value))`` (RFC 2104), where ``lp(x) = u32(len(x)) || x``, ``name`` is the
  field name, ``record_id`` the UTF-8 of the entry's ``record_id`` and ``value`` the UTF-8 of
  the identifier (for ``certificate_subject``: the DER of the subject ``Name``). Binding the
  record id makes commitments to the same person unlinkable across entries; the key stops
  dictionary attacks on guessable identifiers. The domain string stays ``qes-log-entry/1``
  in every entry version.
- ``flags``: ``u32(count)`` then, sorted by name bytes, ``u8(len(name)) name u8(0|1)``.
- ``digests``: ``digest_count`` is u64; ``digests_sha256`` is
  ``SHA-256(lp(digest_1) || ... || lp(digest_n))`` over the digests in request order.
- ``time_stamps`` (version 2): ``time_stamp_count`` is u64; ``time_stamps_sha256`` is
  ``SHA-256(lp(token_1) || ... || lp(token_n))`` over the DER of the RFC 3161 TimeStampTokens
  of the signatures, in signature order (empty input for ``raw`` signatures).

Issuance (kind 0x01), version 2: ``privacy_key_id`` text, ``record_id`` text, ``request_id``
text, ``issued_at`` time, ``completed_at`` time, ``outcome`` text (``completed`` | ``failed``),
``failure`` text?, ``issuer_name`` text, ``token_issuer`` text, ``token_subject`` commit,
``email`` commit?, ``client_id`` commit?, ``profile`` text, ``subject_type`` text?,
``certificate_serial`` serial, ``certificate_sha256`` bytes32, ``certificate_subject`` commit,
``not_before`` time, ``not_after`` time, ``hash_algorithm`` text, ``signature_format`` text
(``raw`` | ``cades`` | ``pades``: what each digest was turned into), ``digest_count`` u64,
``digests_sha256`` bytes32, ``key_evidence`` flags, ``destruction`` flags?, ``signed_count``
u64, ``time_stamp_count`` u64, ``time_stamps_sha256`` bytes32.

Issuance, version 1: the same without ``signature_format``, ``time_stamp_count`` and
``time_stamps_sha256``.

Refusal (kind 0x02), version 2: ``privacy_key_id`` text, ``record_id`` text, ``request_id``
text, ``refused_at`` time, ``issuer_name`` text?, ``token_issuer`` text?, ``claimed_issuer``
text?, ``token_subject`` commit?, ``email`` commit?, ``client_id`` commit?, ``client_address``
commit?, ``profile`` text?, ``subject_type`` text?, ``hash_algorithm`` text?,
``signature_format`` text?, ``digest_count`` u64, ``digests_sha256`` bytes32, ``reason`` text,
``suppressed`` u64.

- ``issuer_name``/``token_issuer``/``token_subject``/``client_id`` are those of a *verified*
  token; a request refused before its token verified has none of them.
- ``claimed_issuer`` is the ``iss`` an unverified token *claims* (only when it names an issuer
  the service trusts, so no attacker-chosen text enters the log): never evidence of who asked.
  It is never present together with ``token_issuer``.
- ``client_address`` commits to the network address the request came from (personal data).
- ``suppressed`` is 0 for one refused request. An entry with reason ``refusals-suppressed``
  instead stands for ``suppressed`` (≥ 1) further refusals that were not logged one by one
  because the rate limit for unauthenticated refusals bit: from the committed
  ``client_address``, or from every address when it is absent, in the window that begins at
  ``refused_at``; its digests are empty.

Refusal, version 1: ``privacy_key_id``, ``record_id``, ``request_id``, ``refused_at``,
``issuer_name``?, ``token_issuer``?, ``token_subject``?, ``email``?, ``client_id``?,
``profile``?, ``subject_type``?, ``hash_algorithm``?, ``digest_count``, ``digests_sha256``,
``reason``, types as above.

Approval (kind 0x03, version 2): ``privacy_key_id`` text, ``record_id`` text (the decision's id),
``request_id`` text (of the HTTP request that decided), ``decided_at`` time, ``decision`` text
(``approved`` | ``denied``), ``approval_request`` text (the id of the request decided on),
``issuer_name`` text, ``token_issuer`` text, ``token_subject`` commit, ``email`` commit?,
``client_id`` commit? (these five: the approver), ``requester_issuer`` text,
``requester_subject`` commit, ``approver_group`` text, ``approvals_required`` u64,
``hash_algorithm`` text, ``digest_count`` u64, ``digests_sha256`` bytes32. ``digests_sha256``
is also the digest commitment the approver was shown and sent back, so the entry proves which
digests a person approved. The approver fields carry the same names as a requester's, so a
watcher filtering by identity finds that person's approvals too.

Administrative action (kind 0x04, version 2; a kill-switch suspend or resume):
``privacy_key_id`` text,
``record_id`` text (the action's id), ``request_id`` text, ``acted_at`` time, ``action`` text
(``suspend`` | ``resume``), ``scope`` text (``identity`` | ``client`` | ``all``),
``actor_issuer`` text? (``iss`` of the administrator's token; absent for the operator's CLI),
``actor_subject`` commit (the administrator's ``sub``, or ``cli:<user>``), ``token_issuer``
text? and ``token_subject`` commit? (the identity acted on, scope ``identity`` only),
``client_id`` commit? (scope ``client`` only), ``reason`` commit? (free text, so committed:
it may name people).

Administrative action, version 3 (every admin act is logged: ETSI EN 319 401 §7.10 and EN
319 411-1 §6.4.5 ask that a trust service records the events of its administration): the
version-2 fields, then ``detail`` text? (a fixed-vocabulary code the service writes, never
free text), ``certificate_serial`` serial? and ``target_sha256`` bytes32? (empty when
absent). Actions and their scope:

- ``suspend`` | ``resume``: scope ``identity`` | ``client`` | ``all``, as in version 2;
- ``client-add`` | ``client-rotate`` | ``client-scope`` | ``client-revoke`` (an RP client
  registered, its secret replaced, its scopes replaced, revoked): scope ``client``,
  ``client_id`` given; ``detail`` the scopes (add, scope) or ``grace=<seconds>`` (rotate);
- ``certificate-revoke`` (the issuing-CA or TSA certificate revoked, RFC 5280 §5.3): scope
  ``certificate``, ``certificate_serial`` and ``target_sha256`` (SHA-256 of its DER) given,
  ``detail`` ``<role> <RFC 5280 §5.3.1 reason name>``;
- ``ca-replace`` (``qes init --force`` made a new key and certificate): scope
  ``certificate``, serial and SHA-256 of the new certificate, ``detail`` its role (``root``
  | ``issuing`` | ``tsa`` | ``ocsp-root`` | ``ocsp-issuing``);
- ``purge`` (``qes audit purge``): scope ``all``, ``detail``
  ``before=<ISO time> records=<n> approval_requests=<n> approval_decisions=<n>
  admin_actions=<n> web_requests=<n>``;
- ``ca-rollover`` (``qes ca rollover`` made a pending issuing CA or TSA key and certificate
  while the current one still serves) and ``ca-switch`` (``qes ca switch`` made the pending one
  current): scope ``certificate``, serial and SHA-256 of the new certificate, ``detail``
  ``<role> g<generation>`` (``issuing g2``);
- ``policy-load`` (a policy file took effect, the first time its content did): scope
  ``policy``, ``target_sha256`` the SHA-256 of the file's bytes (what the service logs as
  "policy loaded"), ``detail`` ``rules=<count>``;
- ``ca-ceremony`` (a step of a CA key ceremony, :mod:`ca.ceremony`, imported from its
  transcript or logged by the online side as it acts): scope ``ceremony``, ``target_sha256``
  the step's digest (SHA-256 of its transcript line), ``detail`` ``<step> #<seq>``
  (``certificate-sign #3``), ``acted_at`` the step's time.

No version-3 field is given with scopes ``identity``, ``client`` or ``all`` but ``detail``;
a version-2 entry has none of them (so a suspension logged before version 3 still rebuilds).

The log leaf is ``SHA-256(0x00 || entry)`` (:func:`ca.merkle.leaf_hash`). Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac

from ca.errors import CaError

__all__ = [
    "ADMIN_ACTIONS",
    "ADMIN_ENTRY_VERSION",
    "ENTRY_MAGIC",
    "ENTRY_VERSION",
    "ENTRY_VERSIONS",
    "SUPPRESSED_REASON",
    "AdminActionEntry",
    "ApprovalEntry",
    "EntryKind",
    "IssuanceEntry",
    "LogEntryError",
    "PrivacyKey",
    "RefusalEntry",
    "RequestSummary",
    "Requester",
    "decode_time",
    "digests_sha256",
    "entry_fields",
    "entry_version",
    "time_stamps_sha256",
]

ENTRY_MAGIC = b"qes-log-entry"
#: The version :meth:`IssuanceEntry.encode`, :meth:`RefusalEntry.encode` and
#: :meth:`ApprovalEntry.encode` write.
ENTRY_VERSION = 2
#: The version :meth:`AdminActionEntry.encode` writes (version 3 exists for that kind only).
ADMIN_ENTRY_VERSION = 3
#: Every version a decoder accepts (entries already in a log keep verifying).
ENTRY_VERSIONS = (1, 2, 3)
_COMMIT_DOMAIN = b"qes-log-entry/1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MAX_DIGEST = 64


class LogEntryError(CaError):
    """A log entry cannot be built from the given values, or encoded bytes do not parse."""


#: The reason of a refusal entry that stands for ``suppressed`` refusals not logged one by one.
SUPPRESSED_REASON = "refusals-suppressed"


class EntryKind(enum.IntEnum):
    """The kind byte of an entry."""

    ISSUANCE = 1
    REFUSAL = 2
    APPROVAL = 3
    ADMIN = 4


_ISSUANCE_FIELDS = (
    "privacy_key_id", "record_id", "request_id", "issued_at", "completed_at", "outcome",
    "failure", "issuer_name", "token_issuer", "token_subject", "email", "client_id", "profile",
    "subject_type", "certificate_serial", "certificate_sha256", "certificate_subject",
    "not_before", "not_after", "hash_algorithm", "signature_format", "digest_count",
    "digests_sha256", "key_evidence", "destruction", "signed_count", "time_stamp_count",
    "time_stamps_sha256",
)  # fmt: skip
_REFUSAL_FIELDS = (
    "privacy_key_id", "record_id", "request_id", "refused_at", "issuer_name", "token_issuer",
    "claimed_issuer", "token_subject", "email", "client_id", "client_address", "profile",
    "subject_type", "hash_algorithm", "signature_format", "digest_count", "digests_sha256",
    "reason", "suppressed",
)  # fmt: skip
_APPROVAL_FIELDS = (
    "privacy_key_id", "record_id", "request_id", "decided_at", "decision", "approval_request",
    "issuer_name", "token_issuer", "token_subject", "email", "client_id", "requester_issuer",
    "requester_subject", "approver_group", "approvals_required", "hash_algorithm",
    "digest_count", "digests_sha256",
)  # fmt: skip
_ADMIN_FIELDS = (
    "privacy_key_id", "record_id", "request_id", "acted_at", "action", "scope", "actor_issuer",
    "actor_subject", "token_issuer", "token_subject", "client_id", "reason", "detail",
    "certificate_serial", "target_sha256",
)  # fmt: skip
#: Version 3: the fields administrative actions gained (other kinds have no version 3).
_V3_ONLY = frozenset({"detail", "certificate_serial", "target_sha256"})
#: Each administrative action and the scopes it takes (module docstring, kind 0x04).
#: The scopes whose target names a SHA-256 (``target_sha256``).
_SHA256_SCOPES = ("certificate", "policy", "ceremony")
ADMIN_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "suspend": ("identity", "client", "all"),
    "resume": ("identity", "client", "all"),
    "client-add": ("client",),
    "client-rotate": ("client",),
    "client-scope": ("client",),
    "client-revoke": ("client",),
    "certificate-revoke": ("certificate",),
    "ca-replace": ("certificate",),
    "ca-rollover": ("certificate",),
    "ca-switch": ("certificate",),
    "policy-load": ("policy",),
    "purge": ("all",),
    "ca-ceremony": ("ceremony",),
}
_FIELDS = {
    EntryKind.ISSUANCE: _ISSUANCE_FIELDS,
    EntryKind.REFUSAL: _REFUSAL_FIELDS,
    EntryKind.APPROVAL: _APPROVAL_FIELDS,
    EntryKind.ADMIN: _ADMIN_FIELDS,
}
#: The ``decision`` values of an approval entry.
DECISIONS = ("approved", "denied")
#: Version 1 (the first entries of a log): the same kinds without the version-2 fields.
_V2_ONLY = frozenset(
    {"signature_format", "time_stamp_count", "time_stamps_sha256", "claimed_issuer",
     "client_address", "suppressed"}
)  # fmt: skip
_V1_FIELDS = {
    kind: tuple(name for name in _FIELDS[kind] if name not in _V2_ONLY)
    for kind in (EntryKind.ISSUANCE, EntryKind.REFUSAL)
}


def _table(version: int, kind: EntryKind) -> tuple[str, ...] | None:
    """The field names of ``kind`` in ``version``, or None when that pair does not exist
    (approvals and administrative actions exist from version 2 on; version 3 holds only
    administrative actions)."""
    if version == 1:
        return _V1_FIELDS.get(kind)
    if kind is not EntryKind.ADMIN:
        return _FIELDS[kind] if version == ENTRY_VERSION else None
    if version == 2:
        return tuple(name for name in _FIELDS[kind] if name not in _V3_ONLY)
    return _FIELDS[kind] if version == ADMIN_ENTRY_VERSION else None


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _text(value: object, what: str, *, optional: bool = False) -> bytes:
    if value is None and optional:
        return b""
    if not isinstance(value, str) or not value:
        raise LogEntryError(f"{what}: must be a non-empty string")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LogEntryError(f"{what}: must be valid Unicode") from exc


def _time(value: object, what: str) -> bytes:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise LogEntryError(f"{what}: must be a timezone-aware datetime")
    micros = (value - _EPOCH) // _MICROSECOND
    if micros < 0:
        raise LogEntryError(f"{what}: must not be before 1970")
    return _u64(micros)


def _count(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise LogEntryError(f"{what}: must be a non-negative integer")
    return value


def _flags(value: object, what: str, *, optional: bool = False) -> bytes:
    if value is None and optional:
        return b""
    if not isinstance(value, Mapping):
        raise LogEntryError(f"{what}: must be a mapping of names to booleans")
    items = []
    for name, flag in value.items():
        raw = _text(name, f"{what} name")
        if len(raw) > 255 or not isinstance(flag, bool):
            raise LogEntryError(f"{what}: names up to 255 bytes, values True or False")
        items.append((raw, flag))
    items.sort()
    body = b"".join(bytes([len(raw)]) + raw + bytes([flag]) for raw, flag in items)
    return len(items).to_bytes(4, "big") + body


def decode_time(value: bytes) -> datetime:
    """A ``time`` field's value (u64 microseconds since 1970, UTC) as a datetime."""
    if not isinstance(value, bytes) or len(value) != 8:
        raise LogEntryError("time: must be 8 bytes")
    return _EPOCH + int.from_bytes(value, "big") * _MICROSECOND


def digests_sha256(digests: tuple[bytes, ...]) -> bytes:
    """``SHA-256(lp(digest_1) || ... || lp(digest_n))``, the ``digests_sha256`` field."""
    digest = hashes.Hash(hashes.SHA256())
    for item in digests:
        digest.update(_lp(item))
    return digest.finalize()


def time_stamps_sha256(tokens: tuple[bytes, ...]) -> bytes:
    """``SHA-256(lp(token_1) || ... || lp(token_n))``, the ``time_stamps_sha256`` field
    (version 2) over the DER RFC 3161 TimeStampTokens in signature order."""
    return digests_sha256(tokens)


def _version(value: object) -> int:
    if value not in ENTRY_VERSIONS:
        raise LogEntryError(f"version: must be one of {ENTRY_VERSIONS}")
    assert isinstance(value, int)
    return value


@dataclass(frozen=True)
class PrivacyKey:
    """The log-privacy key: HMAC-SHA-256 secret (≥ 32 bytes) and the id entries name it by.

    The id goes into every entry in clear so auditors know which key to use after rotation.
    The secret never appears in ``repr``.
    """

    key_id: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        raw = _text(self.key_id, "PrivacyKey.key_id")
        if len(raw) > 64 or not raw.isascii() or not raw.decode().isprintable():
            raise LogEntryError("PrivacyKey.key_id: up to 64 printable ASCII characters")
        if not isinstance(self.secret, bytes) or len(self.secret) < 32:
            raise LogEntryError("PrivacyKey.secret: must be at least 32 bytes")

    def commit(self, record_id: str, name: str, value: bytes) -> bytes:
        """The keyed commitment to ``value`` as field ``name`` of entry ``record_id`` (RFC 2104)."""
        mac = hmac.HMAC(self.secret, hashes.SHA256())
        mac.update(_lp(_COMMIT_DOMAIN))
        mac.update(_lp(name.encode("ascii")))
        mac.update(_lp(_text(record_id, "record_id")))
        mac.update(_lp(value))
        return mac.finalize()


@dataclass(frozen=True)
class Requester:
    """Who asked: the IdP (configured name and ``iss``), and personal identifiers.

    ``token_subject``, ``email`` and ``client_id`` enter entries only as commitments. For a
    refusal any of them may be unknown (``None``), for example when the token did not verify.
    """

    issuer_name: str | None
    token_issuer: str | None
    token_subject: str | None
    email: str | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class RequestSummary:
    """What was asked: profile (assurance level), subject type, hash algorithm, digests."""

    profile: str | None
    subject_type: str | None
    hash_algorithm: str | None
    digests: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "digests", tuple(self.digests))
        for item in self.digests:
            if not isinstance(item, bytes) or not 0 < len(item) <= _MAX_DIGEST:
                raise LogEntryError(f"RequestSummary.digests: 1 to {_MAX_DIGEST} bytes each")


def _check_requester(requester: object, *, required: bool) -> None:
    if not isinstance(requester, Requester):
        raise LogEntryError("requester: must be a Requester")
    for name in ("issuer_name", "token_issuer", "token_subject"):
        _text(getattr(requester, name), f"requester.{name}", optional=not required)
    for name in ("email", "client_id"):
        _text(getattr(requester, name), f"requester.{name}", optional=True)


class _Writer:
    """Collects one entry's fields and checks they come in the kind's table order."""

    def __init__(
        self, kind: EntryKind, key: PrivacyKey, record_id: str, version: int = ENTRY_VERSION
    ) -> None:
        if not isinstance(key, PrivacyKey):
            raise LogEntryError("key: must be a PrivacyKey")
        table = _table(version, kind)
        if table is None:
            raise LogEntryError(f"version {version} has no {kind.name.lower()} entries")
        self.version = version
        #: The fields of the kind's newest table that this version does not have (the caller
        #: checked they carry no information).
        self._skip = frozenset(_FIELDS[kind]) - frozenset(table)
        self._names = iter(table)
        self._key = key
        self._record_id = record_id
        self._out = bytearray(ENTRY_MAGIC + bytes([version, kind]))

    def add(self, name: str, value: bytes) -> None:
        if name in self._skip:
            return  # not a field of this version
        if next(self._names) != name:
            raise AssertionError(f"field {name} out of order")  # a bug here, not bad input
        self._out += bytes([len(name)]) + name.encode("ascii") + _lp(value)

    def commit(self, name: str, value: str | bytes | None, *, optional: bool = False) -> None:
        if value is None and optional:
            self.add(name, b"")
            return
        raw = value if isinstance(value, bytes) else _text(value, name)
        self.add(name, self._key.commit(self._record_id, name, raw))

    def add_requester(self, requester: Requester, *, optional: bool) -> None:
        _check_requester(requester, required=not optional)
        self.add("issuer_name", _text(requester.issuer_name, "issuer_name", optional=optional))
        self.add("token_issuer", _text(requester.token_issuer, "token_issuer", optional=optional))
        self.commit("token_subject", requester.token_subject, optional=optional)
        self.commit("email", requester.email, optional=True)
        self.commit("client_id", requester.client_id, optional=True)

    def add_digests(self, request: RequestSummary) -> None:
        self.add("digest_count", _u64(len(request.digests)))
        self.add("digests_sha256", digests_sha256(request.digests))

    def finish(self) -> bytes:
        if next(self._names, None) is not None:
            raise AssertionError("entry is missing fields")
        return bytes(self._out)


def _start(
    kind: EntryKind, key: PrivacyKey, record_id: str, request_id: str, version: int = ENTRY_VERSION
) -> _Writer:
    _text(record_id, "record_id")
    writer = _Writer(kind, key, record_id, _version(version))
    writer.add("privacy_key_id", _text(key.key_id, "privacy_key_id"))
    writer.add("record_id", _text(record_id, "record_id"))
    writer.add("request_id", _text(request_id, "request_id"))
    return writer


@dataclass(frozen=True)
class IssuanceEntry:
    """A finished issuance: ``failure`` is ``None`` for a completed request.

    ``completed_at`` is when the record was completed (signatures released) or failed.
    A completed entry must carry the destruction result; ``key_evidence`` and
    ``destruction`` are the flag mappings the pipeline records (for example
    ``{"local": True, "never_extractable": True, "always_sensitive": True}``).
    ``signature_format`` (``raw`` | ``cades`` | ``pades``) and ``time_stamps`` (the DER RFC
    3161 tokens of the signatures, in order) enter version-2 entries only.
    """

    record_id: str
    request_id: str
    issued_at: datetime
    completed_at: datetime
    requester: Requester
    request: RequestSummary
    certificate: x509.Certificate
    key_evidence: Mapping[str, bool]
    destruction: Mapping[str, bool] | None
    signed_count: int
    failure: str | None = None
    signature_format: str = "raw"
    time_stamps: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_stamps", tuple(self.time_stamps))
        if not all(isinstance(t, bytes) and t for t in self.time_stamps):
            raise LogEntryError("time_stamps: non-empty DER tokens")
        _text(self.signature_format, "signature_format")
        if not isinstance(self.certificate, x509.Certificate):
            raise LogEntryError("certificate: must be an x509.Certificate")
        if not isinstance(self.request, RequestSummary):
            raise LogEntryError("request: must be a RequestSummary")
        if not self.request.digests and self.failure is None:
            # Only a failed issuance may have none: a CSC credential's certificate is issued
            # before its digests are known, and one that expired unused signed nothing.
            raise LogEntryError("request: a completed issuance has at least one digest")
        _text(self.request.profile, "request.profile")
        _text(self.request.hash_algorithm, "request.hash_algorithm")
        _check_requester(self.requester, required=True)
        if self.failure is None and self.destruction is None:
            raise LogEntryError("destruction: a completed issuance records the key destruction")
        if _time(self.completed_at, "completed_at") < _time(self.issued_at, "issued_at"):
            raise LogEntryError("completed_at: must not be before issued_at")
        _count(self.signed_count, "signed_count")

    def encode(self, key: PrivacyKey, *, version: int = ENTRY_VERSION) -> bytes:
        """The canonical entry bytes (module docstring, kind 0x01). ``version=1`` rebuilds an
        entry logged before version 2 (it leaves out the format and the time-stamps)."""
        cert = self.certificate
        w = _start(EntryKind.ISSUANCE, key, self.record_id, self.request_id, version)
        w.add("issued_at", _time(self.issued_at, "issued_at"))
        w.add("completed_at", _time(self.completed_at, "completed_at"))
        w.add("outcome", b"completed" if self.failure is None else b"failed")
        w.add("failure", _text(self.failure, "failure", optional=True))
        w.add_requester(self.requester, optional=False)
        w.add("profile", _text(self.request.profile, "profile"))
        w.add("subject_type", _text(self.request.subject_type, "subject_type", optional=True))
        serial = cert.serial_number
        if serial <= 0:
            raise LogEntryError("certificate: serial number must be positive")
        w.add("certificate_serial", serial.to_bytes((serial.bit_length() + 7) // 8, "big"))
        w.add("certificate_sha256", cert.fingerprint(hashes.SHA256()))
        w.commit("certificate_subject", cert.subject.public_bytes())
        w.add("not_before", _time(cert.not_valid_before_utc, "not_before"))
        w.add("not_after", _time(cert.not_valid_after_utc, "not_after"))
        w.add("hash_algorithm", _text(self.request.hash_algorithm, "hash_algorithm"))
        w.add("signature_format", _text(self.signature_format, "signature_format"))
        w.add_digests(self.request)
        w.add("key_evidence", _flags(self.key_evidence, "key_evidence"))
        w.add("destruction", _flags(self.destruction, "destruction", optional=True))
        w.add("signed_count", _u64(self.signed_count))
        w.add("time_stamp_count", _u64(len(self.time_stamps)))
        w.add("time_stamps_sha256", time_stamps_sha256(self.time_stamps))
        return w.finish()


@dataclass(frozen=True)
class RefusalEntry:
    """A refused request: who asked (as far as known), what, and the stable refusal reason.

    ``reason`` is a fixed code (for example ``policy.profile_not_allowed``), not free text:
    it is stored in clear and must not carry personal data.

    Version 2 adds: ``claimed_issuer``, the unverified ``iss`` of a token that did not verify
    (the caller passes it only when it names a trusted issuer); ``client_address``, committed;
    ``signature_format`` asked for; and ``suppressed``, the number of refusals an aggregate
    entry (reason :data:`SUPPRESSED_REASON`) stands for (0 for a single refusal).
    """

    record_id: str
    request_id: str
    refused_at: datetime
    requester: Requester
    request: RequestSummary
    reason: str
    claimed_issuer: str | None = None
    client_address: str | None = None
    signature_format: str | None = None
    suppressed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.request, RequestSummary):
            raise LogEntryError("request: must be a RequestSummary")
        _check_requester(self.requester, required=False)
        _time(self.refused_at, "refused_at")
        _text(self.reason, "reason")
        for name in ("claimed_issuer", "client_address", "signature_format"):
            _text(getattr(self, name), name, optional=True)
        if self.claimed_issuer is not None and self.requester.token_issuer is not None:
            raise LogEntryError("claimed_issuer: only for a token that did not verify")
        _count(self.suppressed, "suppressed")
        if (self.reason == SUPPRESSED_REASON) != (self.suppressed > 0):
            raise LogEntryError(f"suppressed: > 0 exactly when reason is {SUPPRESSED_REASON}")
        if self.suppressed and self.request.digests:
            raise LogEntryError("suppressed: an aggregate entry carries no digests")

    def encode(self, key: PrivacyKey, *, version: int = ENTRY_VERSION) -> bytes:
        """The canonical entry bytes (module docstring, kind 0x02)."""
        extra = (self.claimed_issuer, self.client_address, self.signature_format)
        if version == 1 and (any(v is not None for v in extra) or self.suppressed):
            raise LogEntryError("version 1 refusals have no claimed issuer, address, format")
        w = _start(EntryKind.REFUSAL, key, self.record_id, self.request_id, version)
        w.add("refused_at", _time(self.refused_at, "refused_at"))
        _check_requester(self.requester, required=False)
        who = self.requester
        w.add("issuer_name", _text(who.issuer_name, "issuer_name", optional=True))
        w.add("token_issuer", _text(who.token_issuer, "token_issuer", optional=True))
        w.add("claimed_issuer", _text(self.claimed_issuer, "claimed_issuer", optional=True))
        w.commit("token_subject", who.token_subject, optional=True)
        w.commit("email", who.email, optional=True)
        w.commit("client_id", who.client_id, optional=True)
        if version >= 2:
            w.commit("client_address", self.client_address, optional=True)
        w.add("profile", _text(self.request.profile, "profile", optional=True))
        w.add("subject_type", _text(self.request.subject_type, "subject_type", optional=True))
        w.add("hash_algorithm", _text(self.request.hash_algorithm, "hash_algorithm", optional=True))
        w.add("signature_format", _text(self.signature_format, "format", optional=True))
        w.add_digests(self.request)
        w.add("reason", _text(self.reason, "reason"))
        w.add("suppressed", _u64(self.suppressed))
        return w.finish()


@dataclass(frozen=True)
class AdminActionEntry:
    """An administrative action (ETSI EN 319 401 §7.10, EN 319 411-1 §6.4.5: the events of a
    trust service's administration are recorded): a suspend or resume of an identity
    (``token_issuer`` + ``token_subject``), an RP client (``client_id``) or the whole signer;
    an RP client added, rotated, re-scoped or revoked; a CA or TSA certificate revoked or
    replaced (``certificate_serial`` + ``target_sha256``, the SHA-256 of its DER). See
    :data:`ADMIN_ACTIONS`.

    Exactly the target fields of the ``scope`` are given. ``actor_subject`` is who acted (the
    ``sub`` of an admin token from ``actor_issuer``, or ``cli:<user>`` for the operator's
    command); it, the target's ``sub``, the client id and the free-text ``reason`` enter the
    entry only as commitments. ``detail`` is a code the service writes (never free text).
    """

    record_id: str
    request_id: str
    acted_at: datetime
    action: str
    scope: str
    actor_issuer: str | None
    actor_subject: str
    token_issuer: str | None = None
    token_subject: str | None = None
    client_id: str | None = None
    reason: str | None = None
    detail: str | None = None
    certificate_serial: int | None = None
    target_sha256: bytes | None = None

    def __post_init__(self) -> None:
        if self.scope not in ADMIN_ACTIONS.get(self.action, ()):
            raise LogEntryError(f"action {self.action!r}: not with scope {self.scope!r}")
        targets = {
            "identity": self.token_issuer is not None and self.token_subject is not None,
            "client": self.client_id is not None,
            "certificate": self.certificate_serial is not None,
        }
        for scope, given in targets.items():
            if given != (self.scope == scope):
                raise LogEntryError(f"scope {self.scope}: target fields do not match the scope")
        if self.scope != "identity" and (self.token_issuer or self.token_subject):
            raise LogEntryError(f"scope {self.scope}: no identity may be given")
        if (self.target_sha256 is not None) != (self.scope in _SHA256_SCOPES):
            raise LogEntryError(
                "target_sha256: given exactly for scopes certificate, policy, ceremony"
            )
        if self.target_sha256 is not None and len(self.target_sha256) != 32:
            raise LogEntryError("target_sha256: must be 32 bytes")
        if self.certificate_serial is not None and (
            not isinstance(self.certificate_serial, int) or self.certificate_serial <= 0
        ):
            raise LogEntryError("certificate_serial: must be a positive integer")
        _time(self.acted_at, "acted_at")
        _text(self.actor_subject, "actor_subject")
        for name in ("actor_issuer", "token_issuer", "token_subject", "client_id", "reason"):
            _text(getattr(self, name), name, optional=True)
        _text(self.detail, "detail", optional=True)

    def encode(self, key: PrivacyKey, *, version: int = ADMIN_ENTRY_VERSION) -> bytes:
        """The canonical entry bytes (module docstring, kind 0x04). ``version=2`` rebuilds a
        suspend or resume logged before version 3 (it has no detail and no certificate)."""
        later = (self.detail, self.certificate_serial, self.target_sha256)
        if version == 2 and (self.action not in ("suspend", "resume") or any(later)):
            raise LogEntryError("version 2 admin entries are suspend or resume only, no detail")
        w = _start(EntryKind.ADMIN, key, self.record_id, self.request_id, version)
        w.add("acted_at", _time(self.acted_at, "acted_at"))
        w.add("action", _text(self.action, "action"))
        w.add("scope", _text(self.scope, "scope"))
        w.add("actor_issuer", _text(self.actor_issuer, "actor_issuer", optional=True))
        w.commit("actor_subject", self.actor_subject)
        w.add("token_issuer", _text(self.token_issuer, "token_issuer", optional=True))
        w.commit("token_subject", self.token_subject, optional=True)
        w.commit("client_id", self.client_id, optional=True)
        w.commit("reason", self.reason, optional=True)
        w.add("detail", _text(self.detail, "detail", optional=True))
        serial = self.certificate_serial or 0
        w.add("certificate_serial", serial.to_bytes((serial.bit_length() + 7) // 8, "big"))
        w.add("target_sha256", self.target_sha256 or b"")
        return w.finish()


@dataclass(frozen=True)
class ApprovalEntry:
    """One approver's decision on a batch request that needs m-of-n approval (issue 7).

    ``approver`` is who decided (all of issuer name, ``iss`` and subject required);
    ``requester`` is who asked (``token_issuer`` and ``token_subject`` are used). ``request``
    holds the hash algorithm and the exact digests approved or denied, in request order.
    """

    record_id: str
    request_id: str
    decided_at: datetime
    decision: str
    approval_request: str
    approver: Requester
    requester: Requester
    approver_group: str
    approvals_required: int
    request: RequestSummary

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise LogEntryError(f"decision: must be one of {', '.join(DECISIONS)}")
        _text(self.approval_request, "approval_request")
        _check_requester(self.approver, required=True)
        if not isinstance(self.requester, Requester):
            raise LogEntryError("requester: must be a Requester")
        _text(self.requester.token_issuer, "requester.token_issuer")
        _text(self.requester.token_subject, "requester.token_subject")
        _text(self.approver_group, "approver_group")
        if _count(self.approvals_required, "approvals_required") < 1:
            raise LogEntryError("approvals_required: must be at least 1")
        if not isinstance(self.request, RequestSummary) or not self.request.digests:
            raise LogEntryError("request: must be a RequestSummary with at least one digest")
        _text(self.request.hash_algorithm, "request.hash_algorithm")
        _time(self.decided_at, "decided_at")

    def encode(self, key: PrivacyKey) -> bytes:
        """The canonical entry bytes (module docstring, kind 0x03)."""
        w = _start(EntryKind.APPROVAL, key, self.record_id, self.request_id)
        w.add("decided_at", _time(self.decided_at, "decided_at"))
        w.add("decision", _text(self.decision, "decision"))
        w.add("approval_request", _text(self.approval_request, "approval_request"))
        w.add_requester(self.approver, optional=False)
        w.add("requester_issuer", _text(self.requester.token_issuer, "requester_issuer"))
        w.commit("requester_subject", self.requester.token_subject)
        w.add("approver_group", _text(self.approver_group, "approver_group"))
        w.add("approvals_required", _u64(self.approvals_required))
        w.add("hash_algorithm", _text(self.request.hash_algorithm, "hash_algorithm"))
        w.add_digests(self.request)
        return w.finish()


def entry_fields(data: bytes) -> tuple[EntryKind, tuple[tuple[str, bytes], ...]]:
    """Split encoded entry bytes into their kind and ``(name, value)`` fields, strictly.

    For auditors and tools: show an entry, or name the first field where a recomputed entry
    differs from the logged one. Raises :class:`LogEntryError` for anything that is not an
    entry of a supported version (:data:`ENTRY_VERSIONS`, see :func:`entry_version`) with
    exactly its kind's fields for that version, in order.
    """
    data = bytes(data)
    head = len(ENTRY_MAGIC)
    version = entry_version(data)
    try:
        kind = EntryKind(data[head + 1])
    except ValueError:
        raise LogEntryError(f"entry: unknown kind {data[head + 1]}") from None
    table = _table(version, kind)
    if table is None:
        raise LogEntryError(f"entry: no {kind.name.lower()} entries in version {version}")
    fields: list[tuple[str, bytes]] = []
    offset = head + 2
    while offset < len(data):
        size = data[offset]
        name_end = offset + 1 + size
        if name_end + 4 > len(data):
            raise LogEntryError("entry: truncated field header")
        name = data[offset + 1 : name_end].decode("ascii", errors="replace")
        value_end = name_end + 4 + int.from_bytes(data[name_end : name_end + 4], "big")
        if value_end > len(data):
            raise LogEntryError(f"entry: field {name} is truncated")
        fields.append((name, data[name_end + 4 : value_end]))
        offset = value_end
    if tuple(name for name, _ in fields) != table:
        raise LogEntryError(
            f"entry: fields are not those of a version-{version} {kind.name.lower()} entry"
        )
    return kind, tuple(fields)


def entry_version(data: bytes) -> int:
    """The version byte of encoded entry bytes (one of :data:`ENTRY_VERSIONS`): which table
    :func:`entry_fields` reads, and how an auditor rebuilds the entry from its record."""
    head = len(ENTRY_MAGIC)
    if len(data) < head + 2 or bytes(data[:head]) != ENTRY_MAGIC:
        raise LogEntryError("entry: wrong magic")
    if data[head] not in ENTRY_VERSIONS:
        raise LogEntryError(f"entry: unsupported version {data[head]}")
    return int(data[head])
