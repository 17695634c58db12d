"""The key-ceremony transcript (issue 15 item 1): canonical lines, the hash chain, the sheet
witnesses sign, and the file's appends (locked, re-verified, whole lines only)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ca.ceremony import GENESIS, CeremonyError, CeremonyStep, follow, verify_chain, witness_sheet
from signer.translog.ceremony import TranscriptError, TranscriptFile

AT = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)


def _three() -> list[CeremonyStep]:
    first = follow(None, "root-create", "alice", AT, {"subject": "CN=Root", "token": "qes-root"})
    second = follow(first, "witness", "walt", AT, {"statement": "token sealed"})
    return [first, second, follow(second, "crl-sign", "alice", AT, {"crl_number": "1"})]


def test_lines_are_canonical_and_round_trip() -> None:
    steps = _three()
    assert steps[0].prev == GENESIS and steps[1].prev == steps[0].digest
    for step in steps:
        assert CeremonyStep.parse(step.line()) == step
    body = json.loads(steps[0].line())
    assert body["at"] == "2026-12-07T10:00:00Z" and body["facts"]["token"] == "qes-root"
    assert verify_chain(steps) == steps[2].digest
    assert verify_chain([]) == GENESIS


def test_a_re_encoded_or_changed_line_is_refused() -> None:
    line = _three()[0].line()
    spaced = json.dumps(json.loads(line), indent=1).encode()
    with pytest.raises(CeremonyError, match="line 4: not in canonical form"):
        CeremonyStep.parse(spaced, 4)
    extra = line[:-1] + b',"x":1}'
    with pytest.raises(CeremonyError, match="not in canonical form"):
        CeremonyStep.parse(extra)
    with pytest.raises(CeremonyError, match="not a ceremony step"):
        CeremonyStep.parse(b"[1, 2]")
    with pytest.raises(CeremonyError, match="step 'dance'"):
        CeremonyStep.parse(line.replace(b"root-create", b"dance"))


def test_the_chain_names_the_first_broken_step() -> None:
    a, b, c = _three()
    with pytest.raises(CeremonyError, match="step 2: does not follow step 1"):
        verify_chain([a, c])
    changed = CeremonyStep(b.seq, b.step, "mallory", b.at, b.facts, b.prev)
    with pytest.raises(CeremonyError, match="step 3: does not follow step 2"):
        verify_chain([a, changed, c])
    back = follow(a, "witness", "walt", AT - timedelta(seconds=1), {"statement": "x"})
    with pytest.raises(CeremonyError, match="step 2: earlier than the step before"):
        verify_chain([a, back])


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        ({"Subject": "x"}, "lower-case"),
        ({"note": "two\nlines"}, "printable"),
        ({"note": ""}, "1..400"),
        ({"note": "x" * 401}, "1..400"),
    ],
)
def test_facts_are_short_printable_and_named_plainly(facts: dict[str, str], message: str) -> None:
    with pytest.raises(CeremonyError, match=message):
        follow(None, "witness", "walt", AT, facts)


def test_the_witness_sheet_shows_every_fingerprint_and_the_head() -> None:
    steps = _three()
    sheet = witness_sheet(steps, ["Walt Witness", ""])
    for step in steps:
        assert f"step SHA-256: {step.digest.hex()}" in sheet
    assert f"Head of the transcript (SHA-256): {steps[2].digest.hex()}" in sheet
    assert "Name: Walt Witness" in sheet and sheet.count("Signature: ") == 2
    assert (
        "       subject: CN=Root" in sheet
        and "  3. 2026-12-07 10:00:00Z  crl-sign  by alice" in sheet
    )


def test_the_file_appends_whole_verified_lines(tmp_path: Path) -> None:
    transcript = TranscriptFile(tmp_path / "t.jsonl")
    assert transcript.read() == ()
    made = [transcript.append("witness", f"w{i}", AT, {"n": str(i)}) for i in range(3)]
    assert transcript.read() == tuple(made)
    data = transcript.path.read_bytes()
    transcript.path.write_bytes(data[:-5])  # a step cut off mid-line
    with pytest.raises(TranscriptError, match="last line is incomplete"):
        transcript.append("witness", "w", AT, {"n": "4"})
    transcript.path.write_bytes(data.replace(b'"w1"', b'"w9"'))
    with pytest.raises(TranscriptError, match="step 3: does not follow step 2"):
        transcript.read()
    assert transcript.path.read_bytes() == data.replace(b'"w1"', b'"w9"')  # nothing appended


def test_appends_at_once_from_many_threads_keep_one_chain(tmp_path: Path) -> None:
    transcript = TranscriptFile(tmp_path / "t.jsonl")
    threads = [
        threading.Thread(target=transcript.append, args=("witness", f"w{i}", AT, {"n": str(i)}))
        for i in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steps = transcript.read()
    assert [s.seq for s in steps] == list(range(1, 17))
    assert sorted(s.actor for s in steps) == sorted(f"w{i}" for i in range(16))
