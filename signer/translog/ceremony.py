"""The key-ceremony transcript on disk and in the transparency log (issue 15 item 1).

:class:`TranscriptFile` is the file a ceremony writes (:mod:`ca.ceremony`: one canonical JSON
line per step, hash-chained). Each append re-reads and re-verifies the whole file under an
exclusive lock and is flushed to disk before it returns, so a step is never recorded on top of a
changed or half-written transcript. The offline side (the root's machine) has no database: its
steps reach the log when the operator imports the file (`qes ca transcript import`), each as a
``ca-ceremony`` admin entry (scope ``ceremony``, ``target_sha256`` the step's digest, ``detail``
``<step> #<seq>``, ``acted_at`` the step's time) at most once (``admin_actions_ceremony_once``),
so importing a transcript again, or one that grew, adds only the new steps. The online side
logs its own steps (:func:`ceremony_act`) in the transaction of the act.

A witness attests on either machine (:func:`witness_attest`, no database, no PIN): the
``witness-attest`` step names the head from their sheet, and their detached CMS signature over
the transcript lines that head fixes, when they give one, is checked and kept next to the
transcript under its SHA-256 (``<transcript>.witness-<first 16 hex>.p7s``).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ca.ceremony import (
    CeremonyError,
    CeremonyStep,
    Witness,
    attest,
    attested_steps,
    follow,
    verify_chain,
)
from ca.requests import sha256_hex
from signer.errors import SignerError
from signer.storage.policy import LoggedAction, PolicyStore, Target
from signer.translog.admin import AdminLog, operator


class TranscriptError(SignerError):
    """The transcript file cannot be read or written, or is not a valid chain (says why)."""

    slug = "transcript-invalid"
    title = "Ceremony transcript invalid"
    status = 400


def ceremony_target(step: CeremonyStep) -> Target:
    return Target("ceremony", target_sha256=step.digest)


def ceremony_act(audit: AdminLog, step: CeremonyStep) -> LoggedAction:
    """The ``ca-ceremony`` admin act of ``step``, by the step's actor at the step's time."""
    who = AdminLog(audit.key, operator(step.actor), audit.clock, request_id=audit.request_id)
    return who.act(
        "ca-ceremony", ceremony_target(step), detail=f"{step.step} #{step.seq}", at=step.at
    )


def _parse(data: bytes, path: Path) -> tuple[CeremonyStep, ...]:
    if data and not data.endswith(b"\n"):
        raise TranscriptError(f"{path}: the last line is incomplete (a step was cut off)")
    try:
        steps = tuple(CeremonyStep.parse(line, n) for n, line in enumerate(data.splitlines(), 1))
        verify_chain(steps)
    except CeremonyError as exc:
        raise TranscriptError(f"{path}: {exc}") from None
    return steps


@dataclass(frozen=True)
class TranscriptFile:
    """A ceremony transcript at ``path`` (created by its first step)."""

    path: Path

    def read(self) -> tuple[CeremonyStep, ...]:
        """Every step, the chain verified; none when the file does not exist yet."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise TranscriptError(f"{self.path}: cannot read ({exc.strerror})") from None
        return _parse(data, self.path)

    def append(self, step: str, actor: str, at: datetime, facts: Mapping[str, str]) -> CeremonyStep:
        """Record ``step`` after the last one, durably (fsync); the step recorded."""
        return self.extend(
            lambda steps: follow(steps[-1] if steps else None, step, actor, at, facts)
        )

    def extend(self, make: Callable[[tuple[CeremonyStep, ...]], CeremonyStep]) -> CeremonyStep:
        """Record the step ``make`` builds from the steps so far (read and verified under the
        lock, so what it checks still holds when the step is written), durably (fsync)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            raise TranscriptError(f"{self.path}: cannot open ({exc.strerror})") from None
        with os.fdopen(fd, "r+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            steps = _parse(f.read(), self.path)
            try:
                made = make(steps)
            except CeremonyError as exc:
                raise TranscriptError(str(exc)) from None
            f.write(made.line() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return made


def _fsynced(path: Path, data: bytes) -> None:
    try:
        with path.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise TranscriptError(f"{path}: cannot write ({exc.strerror})") from None


def signature_facts(
    transcript: TranscriptFile, covered: Sequence[CeremonyStep], signature: bytes
) -> dict[str, str]:
    """What an attestation records of ``signature``, a witness's detached CMS signature (RFC
    5652) over the lines of the ``covered`` steps as the file holds them, once it verifies:
    its SHA-256, the file it is kept in next to the transcript, whom its certificate names."""
    from cryptography.hazmat.primitives import hashes

    from signer.formats.verify import VerifyError, detached_signer

    content = b"".join(step.line() + b"\n" for step in covered)
    try:
        signer = detached_signer(content, signature)
    except VerifyError as exc:
        raise TranscriptError(
            f"{exc} (it must sign the transcript's lines 1..{len(covered)} as they are)"
        ) from None
    digest = sha256_hex(signature)
    return {
        "signature_sha256": digest,
        "signature_file": f"{transcript.path.name}.witness-{digest[:16]}.p7s",
        "signer": signer.subject.rfc4514_string(),
        "signer_certificate_sha256": signer.fingerprint(hashes.SHA256()).hex(),
    }


def witness_attest(
    transcript: TranscriptFile,
    witness: Witness,
    head: bytes,
    at: datetime,
    signature: bytes | None = None,
) -> CeremonyStep:
    """Append ``witness``'s attestation of the steps ``head`` fixes (:func:`ca.ceremony.attest`),
    with their ``signature`` over those steps, when given, checked and kept next to the
    transcript (:func:`signature_facts`); every refusal comes before anything is written."""
    steps = transcript.read()
    if not steps:
        raise TranscriptError(f"{transcript.path}: no transcript there (no steps)")
    facts = None
    try:
        covered = steps[: attested_steps(steps, head)]
        if signature is not None:
            facts = signature_facts(transcript, covered, signature)
        attest(steps, witness, head, at, facts)
    except CeremonyError as exc:
        raise TranscriptError(str(exc)) from None
    if facts is not None:
        _fsynced(transcript.path.with_name(facts["signature_file"]), signature or b"")
    return transcript.extend(lambda now: attest(now, witness, head, at, facts))


async def import_steps(
    store: PolicyStore, audit: AdminLog, steps: Sequence[CeremonyStep]
) -> tuple[int, int]:
    """Log each step not logged before as a ``ca-ceremony`` entry: (added, already there)."""
    verify_chain(steps)
    added = 0
    for step in steps:
        added += await store.record_once(ceremony_act(audit, step))
    return added, len(steps) - added
