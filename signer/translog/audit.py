"""`qes audit verify` / `qes audit consistency`: check the transparency log from the database.

:func:`verify_log` recomputes everything the log claims, in index order, and stops at the first
entry that is wrong, naming it and why:

1. every stored checkpoint is a signed note of the log key (C2SP signed-note "Signatures") and a
   checkpoint of this log's origin (C2SP tlog-checkpoint), and its row's size and root match it;
2. indexes are 0, 1, 2, ... with no gap (a deleted row) and no more rows than sequenced;
3. each entry's leaf hash is ``SHA-256(0x00 || entry)`` (RFC 9162 §2.1.1) and its bytes parse
   as a ``ca.logentry`` entry of the stored kind;
4. an issuance entry equals the entry rebuilt from its ``signing_records`` row and the row's
   ``signature_time_stamps`` with the privacy key, in the entry's own version (``ca.logentry``
   versions 1 and 2; version 2 also commits to the signature format and the time-stamp
   tokens), so an altered record or token is caught by the entry that commits to it; an
   approval entry (issue 7) equals the one rebuilt from its ``approval_decisions`` row and the
   request it decided (``approval_requests``), so an altered approver, decision, time or digest
   list is caught the same way;
5. every perfect subtree the integrator stored equals the one recomputed from the entries (an
   altered, inserted or reordered row changes the level-0 node at its index);
6. the root at every checkpoint size equals the signed root (RFC 9162 §2.1.1 ``MTH``).

A record erased by ``qes audit purge`` (retention, GDPR Art. 17) is a tombstone: its entry
still verifies by leaf hash and tree (3, 5, 6); check 4 compares only the fields the tombstone
keeps (serial, times, outcome, IdP, profile, counts; the erased ones are skipped) and the
report counts it as purged. The same holds for a purged approval decision (its request is a
tombstone: ids, time, decision, IdPs, group, count, hash algorithm are compared) and a purged
admin action (ids, time, action, scope, IdPs, which optional fields were given and, from
version 3, its detail, certificate serial and SHA-256).

An administrative-action entry (kind 0x04: a suspension, an RP client change, a CA
certificate revoked or replaced) equals the one rebuilt from its ``admin_actions`` row, in
the entry's own version (2 for suspensions logged before version 3, else 3).

:func:`verify_export` checks an audit-UI export against its signed manifest
(:mod:`signer.translog.manifest`) and the manifest's checkpoint against the latest one (RFC 9162
§2.1.4.2 consistency proof).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ca.checkpoint import Checkpoint, NoteError, NoteVerifier, open_checkpoint
from ca.errors import CaError
from ca.logentry import (
    EntryKind,
    LogEntryError,
    PrivacyKey,
    decode_time,
    entry_fields,
    entry_version,
)
from ca.merkle import CompactRange, MerkleError, Node, leaf_hash, verify_consistency
from signer.storage.approvals import fetch_decisions
from signer.storage.log import (
    LogStore,
    fetch_checkpoints,
    fetch_entries,
    fetch_nodes,
    fetch_sizes,
)
from signer.storage.policy import AdminAction, PolicyStore
from signer.storage.records import SigningRecord, record_from_row
from signer.translog.log import (
    DecisionFields,
    RequestFields,
    admin_entry,
    approval_entry,
    issuance_entry,
)
from signer.translog.manifest import ManifestError, open_manifest

BATCH = 2000
_KINDS = {
    EntryKind.ISSUANCE: "issuance",
    EntryKind.REFUSAL: "refusal",
    EntryKind.APPROVAL: "approval",
    EntryKind.ADMIN: "admin",
}


class LogVerificationFailed(Exception):
    """The log does not verify; ``index`` is the first bad entry (None: not entry-specific)."""

    def __init__(self, index: int | None, why: str) -> None:
        super().__init__(f"entry {index}: {why}" if index is not None else why)
        self.index = index
        self.why = why


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    checkpoint: Checkpoint
    purged: int = 0


def _check_checkpoints(
    rows: list[asyncpg.Record], verifier: NoteVerifier, origin: str
) -> list[Checkpoint]:
    checkpoints = []
    for row in rows:
        try:
            checkpoint = open_checkpoint(row["note"], verifier, origin)
        except (NoteError, CaError) as exc:
            raise LogVerificationFailed(None, f"checkpoint of size {row['size']}: {exc}") from exc
        if (checkpoint.size, checkpoint.root_hash) != (row["size"], bytes(row["root"])):
            raise LogVerificationFailed(None, f"checkpoint row {row['size']} differs from its note")
        checkpoints.append(checkpoint)
    if not checkpoints:
        raise LogVerificationFailed(None, "no signed checkpoint to verify against")
    return checkpoints


def _first_difference(logged: bytes, rebuilt: bytes) -> str:
    try:
        _, have = entry_fields(logged)
        _, want = entry_fields(rebuilt)
    except LogEntryError:
        return "entry bytes"
    for (name, a), (_, b) in zip(have, want, strict=False):
        if a != b:
            return name
    return "entry bytes"


def _tombstone_differs(
    fields: Mapping[str, bytes], record: SigningRecord, version: int
) -> str | None:
    """The first field a purged record still holds that differs from its entry, if any.

    The personal fields are gone (``signer.translog.retention``); what is left must still
    match, so a record cannot be altered and then passed off as purged."""
    outcome = "completed" if record.status == "completed" else "failed"
    assert record.completed_at is not None
    kept: dict[str, bytes | datetime] = {
        "certificate_serial": bytes.fromhex(record.serial),
        "issued_at": record.created_at,
        "completed_at": record.completed_at,
        "outcome": outcome.encode(),
        "failure": (record.failure or "").encode(),
        "issuer_name": record.issuer_name.encode(),
        "token_issuer": record.token_issuer.encode(),
        "profile": record.profile.encode(),
        "hash_algorithm": record.hash_algorithm.encode(),
        "signed_count": (record.signed_count or 0).to_bytes(8, "big"),
    }
    if version >= 2:  # the format is not personal; the time-stamp tokens went with the purge
        kept["signature_format"] = record.signature_format.encode()
    return _kept_differs(fields, kept)


def _kept_differs(
    fields: Mapping[str, bytes], kept: Mapping[str, bytes | datetime | bool]
) -> str | None:
    """The first of ``kept`` whose entry field differs: bytes compare as they are, times as
    decoded ``time`` fields, and a bool says whether an erased optional field was present
    (its commitment is non-empty exactly when it was)."""
    for name, want in kept.items():
        have: object = fields[name]
        if isinstance(want, bool):
            have = fields[name] != b""
        elif isinstance(want, datetime):
            have = decode_time(fields[name])
        if have != want:
            return name
    return None


def _text_or_empty(value: str | None) -> bytes:
    return (value or "").encode()


def _approval_tombstone_differs(
    fields: Mapping[str, bytes], row: asyncpg.Record, named: str
) -> str | None:
    """What a purged decision (its request is a tombstone) still holds must match its entry:
    ids, time, decision, the approver's IdP, the requester's ``iss``, group, count and hash
    algorithm, and whether an e-mail was given; the approver's subject, e-mail and name, the
    requester's subject and the digests are erased and skipped."""
    kept: dict[str, bytes | datetime | bool] = {
        "record_id": named.encode(),
        "request_id": row["request_id"].encode(),
        "decided_at": row["decided_at"],
        "decision": row["decision"].encode(),
        "approval_request": str(row["approval_request"]).encode(),
        "issuer_name": row["issuer_name"].encode(),
        "token_issuer": row["token_issuer"].encode(),
        "email": row["email"] is not None,
        "requester_issuer": row["requester_issuer"].encode(),
        "approver_group": row["approver_group"].encode(),
        "approvals_required": int(row["approvals_required"]).to_bytes(8, "big"),
        "hash_algorithm": row["hash_algorithm"].encode(),
    }
    return _kept_differs(fields, kept)


def _admin_tombstone_differs(
    fields: Mapping[str, bytes], action: AdminAction, version: int
) -> str | None:
    """What a purged admin action still holds must match its entry: ids, time, action, scope,
    the actor's and the target's ``iss``, which of target subject, client id and reason
    were given (their values are erased) and, in version 3, detail, serial and SHA-256."""
    t = action.target
    kept: dict[str, bytes | datetime | bool] = {
        "record_id": str(action.id).encode(),
        "request_id": action.request_id.encode(),
        "acted_at": action.acted_at,
        "action": action.action.encode(),
        "scope": t.scope.encode(),
        "actor_issuer": _text_or_empty(action.actor_issuer),
        "token_issuer": _text_or_empty(t.token_issuer),
        "token_subject": t.token_subject is not None,
        "client_id": t.client_id is not None,
        "reason": action.reason is not None,
    }
    if version >= 3:  # not personal: kept by the tombstone
        serial = t.certificate_serial or 0
        kept["detail"] = _text_or_empty(action.detail)
        kept["certificate_serial"] = serial.to_bytes((serial.bit_length() + 7) // 8, "big")
        kept["target_sha256"] = t.target_sha256 or b""
    return _kept_differs(fields, kept)


def _check_rebuilt(idx: int, entry: bytes, what: str, rebuild: Callable[[], bytes]) -> None:
    """Check 4: the database row, encoded again (``rebuild``), is the logged entry byte for
    byte; ``what`` names the row in the message."""
    try:
        rebuilt = rebuild()
    except (CaError, ValueError) as exc:
        raise LogVerificationFailed(idx, f"{what} is malformed: {exc}") from exc
    if rebuilt != entry:
        field = _first_difference(entry, rebuilt)
        raise LogVerificationFailed(idx, f"does not match {what} (field {field} differs)")


def _check_tombstone(idx: int, what: str, differs: str | None) -> None:
    """Check 4 for a purged row: the fields its tombstone keeps match (``differs``: the first
    that does not)."""
    if differs is not None:
        raise LogVerificationFailed(idx, f"does not match purged {what} (field {differs} differs)")


def _check_approval(
    idx: int,
    entry: bytes,
    named: str,
    decisions: Mapping[uuid.UUID, asyncpg.Record],
    key: PrivacyKey,
) -> bool:
    """Check 4 for an approval entry: rebuilt from its decision and request rows, or, when
    the request is purged, its tombstone's remaining fields; returns whether it is purged."""
    try:
        row = decisions.get(uuid.UUID(named))
    except ValueError:
        row = None
    if row is None:
        raise LogVerificationFailed(idx, f"approval decision {named} is missing")
    if row["request_purged_at"] is not None:
        if row["token_subject"] != "" or row["email"] not in (None, ""):
            raise LogVerificationFailed(
                idx, f"approval decision {named} of a purged request still names its approver"
            )
        differs = _approval_tombstone_differs(dict(entry_fields(entry)[1]), row, named)
        _check_tombstone(idx, f"approval decision {named}", differs)
        return True
    _check_rebuilt(idx, entry, f"approval decision {named}", lambda: approval_entry(
            RequestFields(
                str(row["approval_request"]), row["requester_issuer"], row["requester_subject"],
                row["approver_group"], row["approvals_required"], row["hash_algorithm"],
                tuple(bytes(d) for d in row["digests"]),
            ),
            DecisionFields(
                named, row["request_id"], row["decided_at"], row["decision"], row["issuer_name"],
                row["token_issuer"], row["token_subject"], row["email"],
            ),
        ).encode(key))  # fmt: skip
    return False


def _check_entry(
    row: asyncpg.Record,
    key: PrivacyKey,
    actions: Mapping[str, AdminAction] | None = None,
    decisions: Mapping[uuid.UUID, asyncpg.Record] | None = None,
) -> tuple[bytes, bool]:
    """Checks 3 and 4 for one row; returns its leaf hash and whether its record is purged."""
    idx, entry = row["idx"], bytes(row["entry"])
    leaf = leaf_hash(entry)
    if bytes(row["leaf_hash"]) != leaf:
        raise LogVerificationFailed(idx, "stored leaf hash is not SHA-256(0x00 || entry)")
    try:
        kind, fields = entry_fields(entry)
        version = entry_version(entry)
    except LogEntryError as exc:
        raise LogVerificationFailed(idx, f"entry bytes do not parse: {exc}") from exc
    if _KINDS[kind] != row["kind"]:
        raise LogVerificationFailed(idx, f"entry is a {_KINDS[kind]}, row says {row['kind']}")
    named = dict(fields)["record_id"].decode()
    if kind is EntryKind.REFUSAL:
        if row["record_id"] is not None:
            raise LogVerificationFailed(idx, "a refusal entry must not name a signing record")
        return leaf, False
    if kind is EntryKind.ADMIN:
        return leaf, _check_admin(idx, entry, named, row, key, actions or {})
    if kind is EntryKind.APPROVAL:
        if row["record_id"] is not None:
            raise LogVerificationFailed(idx, "an approval entry must not name a signing record")
        return leaf, _check_approval(idx, entry, named, decisions or {}, key)
    if row["record_id"] is None or str(row["record_id"]) != named:
        raise LogVerificationFailed(idx, f"entry names record {named}, row another")
    if row["id"] is None:
        raise LogVerificationFailed(idx, f"signing record {named} is missing")
    record: SigningRecord = record_from_row(row)
    if record.status not in ("completed", "failed") or record.completed_at is None:
        raise LogVerificationFailed(idx, f"signing record {named} is not finished")
    if record.purged:
        _check_tombstone(
            idx, f"signing record {named}", _tombstone_differs(dict(fields), record, version)
        )
        return leaf, True
    completed_at = record.completed_at
    _check_rebuilt(
        idx,
        entry,
        f"signing record {named}",
        lambda: issuance_entry(
            record,
            completed_at=completed_at,
            destruction=record.destruction,
            signed_count=record.signed_count or 0,
            failure=record.failure,
            time_stamps=tuple(bytes(t) for t in row["time_stamp_tokens"] or ()),
        ).encode(key, version=version),
    )
    return leaf, False


def _check_admin(
    idx: int,
    entry: bytes,
    named: str,
    row: asyncpg.Record,
    key: PrivacyKey,
    actions: Mapping[str, AdminAction],
) -> bool:
    """Check 4 for an administrative action (kind 0x04): its ``admin_actions`` row rebuilds
    the entry byte for byte, or, when purged, its tombstone's remaining fields match; returns
    whether it is purged."""
    if row["record_id"] is not None:
        raise LogVerificationFailed(idx, "an admin entry must not name a signing record")
    action = actions.get(named)
    if action is None:
        raise LogVerificationFailed(idx, f"admin action {named} is missing")
    version = entry_version(entry)
    if action.purged:
        differs = _admin_tombstone_differs(dict(entry_fields(entry)[1]), action, version)
        _check_tombstone(idx, f"admin action {named}", differs)
        return True
    _check_rebuilt(
        idx,
        entry,
        f"admin action {named}",
        lambda: admin_entry(action).encode(key, version=version),
    )
    return False


async def _admin_actions(
    conn: asyncpg.Connection, rows: list[asyncpg.Record]
) -> dict[str, AdminAction]:
    """The admin actions the batch's admin entries name (one query; none: no query)."""
    ids = []
    for row in rows:
        if row["kind"] == "admin":
            try:
                ids.append(
                    uuid.UUID(dict(entry_fields(bytes(row["entry"]))[1])["record_id"].decode())
                )
            except (LogEntryError, ValueError, UnicodeDecodeError):
                continue  # _check_entry names what is wrong with it
    if not ids:
        return {}
    found = await PolicyStore.actions_on(conn, ids)
    return {str(k): v for k, v in found.items()}


def _approval_ids(rows: Iterable[asyncpg.Record]) -> list[uuid.UUID]:
    """The decision ids named by the approval entries among ``rows`` (unparseable: skipped,
    the entry's own check names it)."""
    ids = []
    for row in rows:
        if row["kind"] != "approval":
            continue
        try:
            ids.append(uuid.UUID(dict(entry_fields(bytes(row["entry"]))[1])["record_id"].decode()))
        except (LogEntryError, ValueError):
            continue
    return ids


async def verify_log(
    conn: asyncpg.Connection,
    verifier: NoteVerifier,
    origin: str,
    key: PrivacyKey,
    progress: Callable[[int], None] = lambda n: None,
) -> VerifyReport:
    """Checks 1-6 (module docstring) in one REPEATABLE READ snapshot; raises
    :class:`LogVerificationFailed` naming the first bad entry."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        checkpoints = _check_checkpoints(
            await fetch_checkpoints(conn),
            verifier,
            origin,
        )
        sequenced, integrated = await fetch_sizes(conn)
        tree = CompactRange.empty()
        pending = [c for c in checkpoints if c.size > 0]
        good = 0  # the largest checkpoint size verified so far
        purged = 0
        while True:
            rows = await fetch_entries(conn, tree.size, BATCH)
            if not rows:
                break
            leaves = []
            actions = await _admin_actions(conn, rows)
            decisions = await fetch_decisions(conn, _approval_ids(rows))
            for expected, row in enumerate(rows, start=tree.size):
                if row["idx"] != expected:
                    raise LogVerificationFailed(expected, "is missing (the next row is later)")
                if expected >= sequenced:
                    raise LogVerificationFailed(expected, "is beyond the sequenced log size")
                leaf, erased = _check_entry(row, key, actions, decisions)
                leaves.append(leaf)
                purged += erased
            start = tree
            _, nodes = start.extend(leaves)
            await _check_nodes(conn, [n for n in nodes if n.id.end <= integrated])
            for leaf in leaves:
                tree, _ = tree.append(leaf)
                while pending and pending[0].size == tree.size:
                    checkpoint = pending.pop(0)
                    if tree.root() != checkpoint.root_hash:
                        raise LogVerificationFailed(
                            good,
                            f"entries {good}..{checkpoint.size - 1} do not match the signed"
                            f" checkpoint of size {checkpoint.size}",
                        )
                    good = checkpoint.size
            progress(len(leaves))
        if tree.size < sequenced:
            raise LogVerificationFailed(tree.size, "is missing (log size is larger)")
        if pending:
            raise LogVerificationFailed(
                tree.size, f"is missing: the signed checkpoint covers {pending[0].size}"
            )
        return VerifyReport(tree.size, checkpoints[-1], purged)


async def _check_nodes(conn: asyncpg.Connection, nodes: list[Node]) -> None:
    """Check 5: the stored perfect subtrees equal the recomputed ones (one query)."""
    held = await fetch_nodes(conn, [n.id for n in nodes])
    for node in sorted(nodes, key=lambda n: (n.id.end, n.id.level)):  # leaves before parents
        try:
            same = held.node_hashes([node.id])[0] == node.hash
        except MerkleError:
            same = False
        if not same:
            raise LogVerificationFailed(
                node.id.begin,
                f"differs from the integrated tree (node level {node.id.level}"
                f" over entries {node.id.begin}..{node.id.end - 1})",
            )


async def check_consistency(
    store: LogStore, verifier: NoteVerifier, origin: str, old: str, new: str
) -> tuple[Checkpoint, Checkpoint, tuple[bytes, ...]]:
    """Verify that checkpoint ``new`` extends ``old`` (RFC 9162 §2.1.4.2) with a proof from the
    stored tree. ``old``/``new`` are checkpoint files or sizes of stored checkpoints."""
    stored = {c.size: c.note for c in await store.checkpoints()}

    def load(spec: str) -> Checkpoint:
        note = stored.get(int(spec)) if spec.isdigit() else _read_note(spec)
        if note is None:
            raise LogVerificationFailed(None, f"no stored checkpoint of size {spec}")
        try:
            return open_checkpoint(note, verifier, origin)
        except (NoteError, CaError) as exc:
            raise LogVerificationFailed(None, f"checkpoint {spec}: {exc}") from exc

    a, b = load(old), load(new)
    if a.size > b.size:
        raise LogVerificationFailed(None, f"old size {a.size} exceeds new size {b.size}")
    proof = await store.consistency_proof(a.size, b.size)
    try:
        verify_consistency(proof, a.tree_head, b.tree_head)
    except MerkleError as exc:
        raise LogVerificationFailed(None, f"not consistent: {exc}") from exc
    return a, b, proof.path


def _read_note(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise LogVerificationFailed(None, f"cannot read checkpoint file {path}") from exc


@dataclass(frozen=True)
class ExportReport:
    rows: int
    sha256: str
    checkpoint: Checkpoint
    latest: Checkpoint


def _count_rows(data: bytes, fmt: str) -> int:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LogVerificationFailed(None, "export is not UTF-8") from exc
    if fmt == "jsonl":
        return text.count("\n")
    if fmt == "csv":
        return max(sum(1 for _ in csv.reader(io.StringIO(text, newline=""))) - 1, 0)
    raise LogVerificationFailed(None, f"manifest: unknown export format {fmt!r}")


async def verify_export(
    store: LogStore,
    verifier: NoteVerifier,
    origin: str,
    export: bytes,
    manifest: Mapping[str, Any],
) -> ExportReport:
    """The manifest is a note of the log key; the export has its SHA-256 and row count; its
    checkpoint is a signed checkpoint of this log, and the latest one extends it."""
    try:
        signed = open_manifest(manifest, verifier, origin)
    except ManifestError as exc:
        raise LogVerificationFailed(None, str(exc)) from exc
    digest = hashlib.sha256(export).hexdigest()
    if digest != signed.get("sha256"):
        raise LogVerificationFailed(None, "export: SHA-256 differs from the signed manifest")
    rows = _count_rows(export, str(signed.get("format")))
    if rows != signed.get("rows"):
        raise LogVerificationFailed(
            None, f"export: {rows} rows, the manifest says {signed['rows']}"
        )
    named = signed.get("checkpoint")
    if not isinstance(named, dict) or not isinstance(named.get("note"), str):
        raise LogVerificationFailed(None, "manifest: names no checkpoint")
    try:
        checkpoint = open_checkpoint(named["note"], verifier, origin)
    except (NoteError, CaError) as exc:
        raise LogVerificationFailed(None, f"manifest checkpoint: {exc}") from exc
    if checkpoint.size != named.get("size"):
        raise LogVerificationFailed(None, "manifest: checkpoint size differs from its note")
    latest_row = await store.latest_checkpoint()
    if latest_row is None:
        raise LogVerificationFailed(None, "the log has no checkpoint")
    try:
        latest = open_checkpoint(latest_row.note, verifier, origin)
    except (NoteError, CaError) as exc:
        raise LogVerificationFailed(None, f"latest checkpoint: {exc}") from exc
    if latest.size < checkpoint.size:
        raise LogVerificationFailed(None, "manifest checkpoint is larger than the latest one")
    proof = await store.consistency_proof(checkpoint.size, latest.size)
    try:
        verify_consistency(proof, checkpoint.tree_head, latest.tree_head)
    except MerkleError as exc:
        raise LogVerificationFailed(None, f"manifest checkpoint is not in the log: {exc}") from exc
    return ExportReport(rows, digest, checkpoint, latest)


# -- offline: a log export, checked against its signed checkpoint --------------------------------

#: Entries per database round trip when exporting the log.
EXPORT_WINDOW = 10_000


async def export_log(
    store: LogStore,
    origin: str,
    write: Callable[[str], object],
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Checkpoint | None:
    """Write the log up to its latest checkpoint as JSON Lines: a header ``{"origin",
    "checkpoint"}`` (the signed note), then ``{"index", "entry"}`` (base64) in index order.

    Everything an offline verifier needs to recompute the tree (RFC 9162 §2.1.1) and compare
    it with the signed tree head; returns the checkpoint, or None when none is published."""
    latest = await store.latest_checkpoint()
    if latest is None:
        return None
    write(json.dumps({"origin": origin, "checkpoint": latest.note}) + "\n")
    for start in range(0, latest.size, EXPORT_WINDOW):
        for row in await store.entries_window(start, min(start + EXPORT_WINDOW, latest.size)):
            entry = base64.b64encode(row.entry).decode("ascii")
            write(json.dumps({"index": row.idx, "entry": entry}) + "\n")
        progress(min(start + EXPORT_WINDOW, latest.size), latest.size)
    return Checkpoint(origin, latest.size, latest.root)


def verify_log_export(lines: Iterable[bytes | str], verifier: NoteVerifier) -> VerifyReport:
    """Recompute the Merkle tree from an exported log (:func:`export_log`) and check it against
    the export's checkpoint, whose signature must verify with ``verifier`` (C2SP signed-note,
    tlog-checkpoint). No database: a copy held by an auditor proves what the log said.

    Names the first entry that is out of order, missing, malformed or unparseable; a root that
    differs from the signed one means some entry of ``[0, size)`` was altered (a root alone
    cannot say which: compare with the service's inclusion proofs to find it)."""
    it = iter(lines)
    try:
        header = json.loads(next(it))
        checkpoint = open_checkpoint(header["checkpoint"], verifier, header["origin"])
    except StopIteration:
        raise LogVerificationFailed(None, "the export is empty") from None
    except (ValueError, KeyError, TypeError, CaError) as exc:
        raise LogVerificationFailed(None, f"export header: {exc}") from exc
    tree = CompactRange.empty()
    count = 0
    for raw in it:
        if count == checkpoint.size:
            raise LogVerificationFailed(count, "the export goes on past its checkpoint")
        try:
            line = json.loads(raw)
            index, entry = line["index"], base64.b64decode(line["entry"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise LogVerificationFailed(count, f"not an export line: {exc}") from exc
        if index != count:
            raise LogVerificationFailed(count, f"expected entry {count}, found {index}")
        try:
            entry_fields(entry)
        except LogEntryError as exc:
            raise LogVerificationFailed(count, f"entry bytes do not parse: {exc}") from exc
        tree, _ = tree.append(leaf_hash(entry))
        count += 1
    if count != checkpoint.size:
        raise LogVerificationFailed(count, f"the export ends at {count} of {checkpoint.size}")
    if tree.root() != checkpoint.root_hash:
        raise LogVerificationFailed(
            None, f"the entries' root differs from the signed checkpoint of size {count}"
        )
    return VerifyReport(entries=count, checkpoint=checkpoint)
