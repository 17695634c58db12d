"""The key-ceremony transcript (issue 15 item 1): what each step of a CA key ceremony did, who
did it and when, with the fingerprints a witness can check, as a hash chain.

ETSI EN 319 411-1 §6.5.1 (via EN 319 401 §7.5) asks that CA keys are generated in a recorded,
witnessed ceremony and that the record shows what was done; EN 319 401 §7.10 asks that the
record cannot be changed unnoticed. Here every step is one line of canonical JSON (sorted
keys, no blanks, UTF-8): ``seq`` (1, 2, ...), ``step`` (:data:`STEPS`), ``actor``, ``at``
(UTC, ISO 8601, seconds), ``facts`` (lower-case names to short printable texts: subjects,
serials in hex, SHA-256 fingerprints in hex, times) and ``prev``, the hex SHA-256 of the line
before (:data:`GENESIS` for the first). A line's digest is the SHA-256 of its bytes, so the
last digest (the *head*) fixes every earlier line. :func:`witness_sheet` prints the steps for
the witnesses to sign on paper; the service imports each step as a ``ca-ceremony`` admin entry
of the transparency log (target: the step's digest), so the log's own chain covers them too.

A witness's attestation is a step of its own (``witness-attest``, :func:`attest`; EN 319 411-1
§6.5.1 has CA keys generated under witness, the CA/Browser Forum Baseline Requirements §6.1.1.1
ask for the witness's report on the ceremony): its actor is the witness, its facts their
``role``, the OS ``account`` that recorded it, the ``head_sha256`` printed on the sheet they
signed, the steps that head fixes (``covers``, ``1..k``), their ``statement`` and, when they
signed the transcript too, that signature's ``signature_sha256`` (and where it is kept). A
witness can only attest the transcript as it stands since its last act: the head they name is
the digest of the last step that is not an attestation, or of an attestation after it (so
witnesses attest one after the other from the same sheet); :func:`verify_chain` checks every
attestation against the steps before it.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes

from ca.errors import CaError

__all__ = [
    "ATTEST",
    "GENESIS",
    "STEPS",
    "Attestation",
    "CeremonyError",
    "CeremonyStep",
    "Witness",
    "attest",
    "attestations",
    "attested_steps",
    "default_statement",
    "follow",
    "verify_chain",
    "witness_sheet",
]

#: ``prev`` of a transcript's first step.
GENESIS = bytes(32)
#: The step of a witness's attestation of the steps before it (module docstring).
ATTEST = "witness-attest"
#: The steps a ceremony records (the vocabulary of ``step``):
#: ``root-create`` (the root key and self-signed certificate made in the offline token),
#: ``key-create`` (an issuing-CA, TSA or OCSP-responder key made in the online HSM, and its
#: CSR), ``certificate-sign`` (the offline root signed a CSR), ``certificate-import`` (the
#: online side took a signed certificate in), ``crl-sign`` (the offline root signed its CRL),
#: ``crl-import`` (the online side took that CRL in), ``key-destroy`` (a replaced root's key
#: destroyed in the online HSM that still held it, RFC 3647 §6.2.10), ``witness`` (a witness's
#: statement, e.g. that the token was sealed), ``witness-attest`` (:data:`ATTEST`).
STEPS = frozenset(
    {
        "root-create",
        "key-create",
        "certificate-sign",
        "certificate-import",
        "crl-sign",
        "crl-import",
        "key-destroy",
        "witness",
        ATTEST,
    }
)
#: The facts of an attestation the witness does not choose (:func:`attest`).
_ATTEST_FACTS = frozenset({"role", "account", "head_sha256", "covers", "statement"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_MAX_TEXT = 400


class CeremonyError(CaError):
    """A transcript line or chain that is not as this module writes it (says which line)."""


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise CeremonyError(f"{what}: a text of 1..{_MAX_TEXT} characters")
    if not value.isprintable():
        raise CeremonyError(f"{what}: printable characters only")
    return value


@dataclass(frozen=True)
class CeremonyStep:
    """One step of a ceremony, as one transcript line (module docstring)."""

    seq: int
    step: str
    actor: str
    at: datetime
    facts: tuple[tuple[str, str], ...]
    prev: bytes = GENESIS

    def __post_init__(self) -> None:
        if not isinstance(self.seq, int) or self.seq < 1:
            raise CeremonyError("seq: a positive integer")
        if self.step not in STEPS:
            raise CeremonyError(f"step {self.step!r}: one of {', '.join(sorted(STEPS))}")
        _text(self.actor, "actor")
        if self.at.tzinfo is None or self.at.microsecond:
            raise CeremonyError("at: an aware time in whole seconds")
        if len(self.prev) != 32:
            raise CeremonyError("prev: a SHA-256 digest")
        names = [name for name, _ in self.facts]
        if names != sorted(set(names)):
            raise CeremonyError("facts: distinct names in order")
        for name, value in self.facts:
            if not _NAME.match(name):
                raise CeremonyError(f"fact {name[:40]!r}: lower-case letters, digits and _")
            _text(value, f"fact {name}")

    @property
    def fact(self) -> Mapping[str, str]:
        return dict(self.facts)

    def line(self) -> bytes:
        """The canonical JSON line, without its newline."""
        body = {
            "seq": self.seq,
            "step": self.step,
            "actor": self.actor,
            "at": self.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "facts": dict(self.facts),
            "prev": self.prev.hex(),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def digest(self) -> bytes:
        """SHA-256 of :meth:`line`: what the next step's ``prev`` and the log entry name."""
        digest = hashes.Hash(hashes.SHA256())
        digest.update(self.line())
        return digest.finalize()

    @classmethod
    def parse(cls, line: bytes, number: int = 0) -> CeremonyStep:
        """The step a canonical line holds; :class:`CeremonyError` names line ``number``
        when it is not canonical (so a changed line cannot hide by re-encoding)."""
        where = f"transcript line {number}" if number else "transcript line"
        try:
            body = json.loads(line)
            facts = body["facts"]
            step = cls(
                seq=body["seq"],
                step=body["step"],
                actor=body["actor"],
                at=datetime.strptime(body["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
                facts=tuple(sorted((str(k), v) for k, v in facts.items())),
                prev=bytes.fromhex(body["prev"]),
            )
        except CeremonyError as exc:
            raise CeremonyError(f"{where}: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CeremonyError(f"{where}: not a ceremony step ({exc})") from None
        if step.line() != line or set(body) != {"seq", "step", "actor", "at", "facts", "prev"}:
            raise CeremonyError(f"{where}: not in canonical form")
        return step


def follow(
    last: CeremonyStep | None,
    step: str,
    actor: str,
    at: datetime,
    facts: Mapping[str, str],
) -> CeremonyStep:
    """The step after ``last`` (the first of a transcript when None)."""
    return CeremonyStep(
        seq=1 if last is None else last.seq + 1,
        step=step,
        actor=actor,
        at=at.astimezone(UTC).replace(microsecond=0),
        facts=tuple(sorted(facts.items())),
        prev=GENESIS if last is None else last.digest,
    )


@dataclass(frozen=True)
class Witness:
    """Who attests: their ``name`` (the step's actor), ``role`` (e.g. internal auditor), the OS
    ``account`` that records the attestation, and their ``statement`` (None: the default,
    :func:`default_statement`)."""

    name: str
    role: str
    account: str
    statement: str | None = None


def default_statement(covers: int, head: bytes) -> str:
    """What a witness states unless they say otherwise."""
    return (
        f"I observed steps 1..{covers} of this key ceremony and checked the fingerprints"
        f" on the sheet with head {head.hex()}."
    )


def attested_steps(steps: Sequence[CeremonyStep], head: bytes) -> int:
    """How many steps ``head`` fixes (k of steps 1..k) when a witness may attest it now: the
    digest of the last step that is not an attestation, or of an attestation after it;
    otherwise :class:`CeremonyError` naming the witness's head and the transcript's."""
    last_act = max((s.seq for s in steps if s.step != ATTEST), default=0)
    for step in steps[max(last_act, 1) - 1 :]:
        if step.digest == head:
            return step.seq
    current = steps[-1].digest.hex() if steps else "none (no steps)"
    raise CeremonyError(
        f"the witness signed a different sheet: its head {head.hex()} is not the"
        f" transcript's head {current}"
    )


def attest(
    steps: Sequence[CeremonyStep],
    witness: Witness,
    head: bytes,
    at: datetime,
    signature: Mapping[str, str] | None = None,
) -> CeremonyStep:
    """The ``witness-attest`` step after ``steps`` by which ``witness`` attests the steps the
    ``head`` from their sheet fixes (:func:`attested_steps`); ``signature``: the facts of the
    witness's detached signature over those steps' lines (``signature_sha256``, ...)."""
    covers = attested_steps(steps, head)
    statement = default_statement(covers, head) if witness.statement is None else witness.statement
    extra = dict(signature or {})
    if set(extra) & _ATTEST_FACTS:
        raise CeremonyError(f"signature facts: none of {', '.join(sorted(_ATTEST_FACTS))}")
    facts = {
        "role": witness.role,
        "account": witness.account,
        "head_sha256": head.hex(),
        "covers": f"1..{covers}",
        "statement": statement,
        **extra,
    }
    return follow(steps[-1], ATTEST, witness.name, at, facts)


@dataclass(frozen=True)
class Attestation:
    """A ``witness-attest`` step read back: who (``step.actor``) attests steps 1..``covers``."""

    step: CeremonyStep
    covers: int

    @property
    def witness(self) -> str:
        return self.step.actor


def _check_attestation(step: CeremonyStep, before: Sequence[CeremonyStep]) -> Attestation:
    """The attestation ``step`` is, when ``before`` it a witness could attest its head."""
    fact = step.fact
    missing = sorted(_ATTEST_FACTS - set(fact))
    if missing:
        raise CeremonyError(f"transcript step {step.seq}: an attestation without {missing[0]}")
    try:
        covers = attested_steps(before, bytes.fromhex(fact["head_sha256"]))
    except (CeremonyError, ValueError):
        raise CeremonyError(
            f"transcript step {step.seq}: attests a head that is not the transcript's before it"
        ) from None
    if fact["covers"] != f"1..{covers}":
        raise CeremonyError(f"transcript step {step.seq}: covers is not 1..{covers}")
    return Attestation(step, covers)


def attestations(steps: Sequence[CeremonyStep]) -> tuple[Attestation, ...]:
    """The witnesses' attestations in ``steps`` (a chain :func:`verify_chain` accepts)."""
    return tuple(_check_attestation(s, steps[: s.seq - 1]) for s in steps if s.step == ATTEST)


def verify_chain(steps: Sequence[CeremonyStep]) -> bytes:
    """The head (the last step's digest; :data:`GENESIS` for none) of a transcript whose steps
    are numbered 1, 2, ... and each name the one before; :class:`CeremonyError` names the
    first step that breaks the chain, a step earlier in time than the one before, and an
    attestation of a head a witness could not have attested (:func:`attested_steps`)."""
    head = GENESIS
    for number, step in enumerate(steps, 1):
        if step.seq != number or step.prev != head:
            raise CeremonyError(f"transcript step {number}: does not follow step {number - 1}")
        if number > 1 and step.at < steps[number - 2].at:
            raise CeremonyError(f"transcript step {number}: earlier than the step before")
        if step.step == ATTEST:
            _check_attestation(step, steps[: number - 1])
        head = step.digest
    return head


def witness_sheet(steps: Sequence[CeremonyStep], witnesses: Iterable[str] = ("", "", "")) -> str:
    """The transcript as a page to print and sign: every step with its facts and digest (and
    which attestations cover it), the attestations so far, the head, and a signature line per
    witness (named, or blank to fill in by hand)."""
    head = verify_chain(steps)
    attested = attestations(steps)
    out = ["KEY CEREMONY TRANSCRIPT", "=" * 23, ""]
    for s in steps:
        out.append(f"{s.seq:>3}. {s.at:%Y-%m-%d %H:%M:%S}Z  {s.step}  by {s.actor}")
        out.extend(f"       {name}: {value}" for name, value in s.facts)
        out.append(f"       step SHA-256: {s.digest.hex()}")
        by = [f"{a.witness} (#{a.step.seq})" for a in attested if a.covers >= s.seq]
        if by:
            out.append(f"       attested by: {', '.join(by)}")
    out += _attestation_lines(steps, attested)
    out += ["", f"Head of the transcript (SHA-256): {head.hex()}", f"Steps: {len(steps)}", ""]
    out.append("We witnessed the steps above and checked the fingerprints shown.")
    for name in witnesses:
        out += ["", f"Name: {name or '_' * 30}   Role: {'_' * 20}", f"Signature: {'_' * 30}"]
        out.append(f"Date: {'_' * 16}")
    return "\n".join(out) + "\n"


def _attestation_lines(steps: Sequence[CeremonyStep], attested: Sequence[Attestation]) -> list[str]:
    """The sheet's list of attestations: who, as what, which steps, signed or not; and the
    steps no attestation covers yet."""
    if not attested:
        return []
    out = ["", "Attestations:"]
    for a in attested:
        fact = a.step.fact
        signed = fact.get("signature_sha256")
        how = f"signature SHA-256 {signed}" if signed else "no electronic signature"
        out.append(
            f"  #{a.step.seq} {a.witness} ({fact['role']}; account {fact['account']}):"
            f" steps 1..{a.covers}; {how}"
        )
    acts = [s.seq for s in steps if s.step != ATTEST]
    open_steps = [n for n in acts if n > max(a.covers for a in attested)]
    if open_steps:
        out.append(f"  not attested yet: steps {', '.join(map(str, open_steps))}")
    return out
