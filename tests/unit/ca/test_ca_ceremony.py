"""The key-ceremony transcript (issue 15 item 1): canonical lines, the hash chain, the sheet
witnesses sign, and the file's appends (locked, re-verified, whole lines only)."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from ca.ceremony import (
    ATTEST,
    GENESIS,
    CeremonyError,
    CeremonyStep,
    Witness,
    attest,
    attestations,
    default_statement,
    follow,
    verify_chain,
    witness_sheet,
)
from signer.translog.ceremony import TranscriptError, TranscriptFile, witness_attest
from tests.support.pki import make_pki

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


WALT = Witness("Walt Witness", "internal auditor", "walt")
LATER = AT + timedelta(minutes=5)


def test_an_attestation_is_a_step_of_the_chain() -> None:
    steps = _three()
    head = steps[-1].digest
    walt = attest(steps, WALT, head, LATER)
    assert (walt.seq, walt.step, walt.actor, walt.prev) == (4, ATTEST, "Walt Witness", head)
    assert walt.fact == {
        "role": "internal auditor",
        "account": "walt",
        "head_sha256": head.hex(),
        "covers": "1..3",
        "statement": default_statement(3, head),
    }
    assert "observed steps 1..3" in walt.fact["statement"]
    bea = attest([*steps, walt], Witness("Bea", "notary", "bea", "I saw it"), head, LATER)
    chris = attest([*steps, walt, bea], Witness("Chris", "CISO", "c"), bea.digest, LATER)
    assert (bea.fact["covers"], bea.fact["statement"], chris.fact["covers"]) == (
        "1..3",
        "I saw it",
        "1..5",
    )
    chain = [*steps, walt, bea, chris]
    assert verify_chain(chain) == chris.digest
    assert [(a.witness, a.covers) for a in attestations(chain)] == [
        ("Walt Witness", 3),
        ("Bea", 3),
        ("Chris", 5),
    ]
    assert CeremonyStep.parse(walt.line()) == walt


def test_a_head_from_another_sheet_is_refused() -> None:
    steps = _three()
    other = bytes.fromhex("ab" * 32)
    message = (
        f"the witness signed a different sheet: its head {'ab' * 32} is not the"
        f" transcript's head {steps[-1].digest.hex()}"
    )
    with pytest.raises(CeremonyError) as refused:
        attest(steps, WALT, other, LATER)
    assert str(refused.value) == message
    with pytest.raises(CeremonyError, match="different sheet"):  # a sheet printed before step 3
        attest(steps, WALT, steps[1].digest, LATER)
    walt = attest(steps, WALT, steps[-1].digest, LATER)
    acted = follow(walt, "crl-import", "olga", LATER, {"crl_number": "1"})
    for stale in (steps[-1].digest, walt.digest):  # an act after the sheet: a new sheet
        with pytest.raises(CeremonyError, match="different sheet"):
            attest([*steps, walt, acted], WALT, stale, LATER)
    with pytest.raises(CeremonyError, match="head none"):
        attest([], WALT, other, LATER)
    with pytest.raises(CeremonyError, match="signature facts"):
        attest(steps, WALT, steps[-1].digest, LATER, {"covers": "1..9"})


def _tampered(step: CeremonyStep, **facts: str) -> CeremonyStep:
    changed = {**step.fact, **facts}
    facts = tuple(sorted(changed.items()))
    return CeremonyStep(step.seq, step.step, step.actor, step.at, facts, step.prev)


def test_a_changed_attestation_is_detected() -> None:
    steps = _three()
    walt = attest(steps, WALT, steps[-1].digest, LATER)
    bea = attest([*steps, walt], Witness("Bea", "notary", "bea"), steps[-1].digest, LATER)
    changed = _tampered(walt, statement="I saw nothing")
    with pytest.raises(CeremonyError, match="step 5: does not follow step 4"):
        verify_chain([*steps, changed, bea])
    assert changed.digest != walt.digest  # the log's entry and the witness's sheet name walt's
    # the last line, changed: no step after it, but the attestation itself no longer holds
    for facts, message in (
        ({"head_sha256": steps[1].digest.hex()}, "step 4: attests a head that is not"),
        ({"covers": "1..2"}, "step 4: covers is not 1..3"),
        ({"head_sha256": "not hex"}, "step 4: attests a head that is not"),
    ):
        with pytest.raises(CeremonyError, match=message):
            verify_chain([*steps, _tampered(walt, **facts)])
    role_gone = CeremonyStep(4, ATTEST, "Walt", LATER, (("covers", "1..3"),), steps[-1].digest)
    with pytest.raises(CeremonyError, match="step 4: an attestation without account"):
        verify_chain([*steps, role_gone])


def test_the_sheet_lists_the_attestations_and_what_each_covers() -> None:
    steps = _three()
    walt = attest(steps, WALT, steps[-1].digest, LATER)
    acted = follow(walt, "crl-import", "olga", LATER, {"crl_number": "1"})
    sheet = witness_sheet([*steps, walt, acted])
    assert sheet.count("attested by: Walt Witness (#4)") == 3  # steps 1..3, not 4 nor 5
    assert "  #4 Walt Witness (internal auditor; account walt): steps 1..3;" in sheet
    assert "no electronic signature" in sheet and "not attested yet: steps 5" in sheet
    assert "Attestations:" not in witness_sheet(steps)


def _cms(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, content: bytes) -> bytes:
    """A detached CMS signature over ``content`` (as `openssl cms -sign -binary` makes one)."""
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(cert, key, SHA256())
    return builder.sign(Encoding.DER, options)


def test_a_witness_signature_is_checked_and_kept_by_its_digest(tmp_path: Path) -> None:
    transcript = TranscriptFile(tmp_path / "t.jsonl")
    for step in _three():
        transcript.append(step.step, step.actor, step.at, step.fact)
    before, head = transcript.path.read_bytes(), transcript.read()[-1].digest
    key, cert = make_pki().signer()
    good = _cms(key, cert, before)
    for wrong, message in (
        (_cms(key, cert, before + b"x"), "message-digest does not match"),
        (good[:-1] + bytes([good[-1] ^ 1]), "signature-value does not verify"),
        (b"not a signature", "not a DER CMS SignedData"),
        (cert.public_bytes(Encoding.PEM), "a PEM CERTIFICATE, not a CMS signature"),
    ):
        with pytest.raises(TranscriptError, match=message):
            witness_attest(transcript, WALT, head, LATER, wrong)
    with pytest.raises(TranscriptError, match="different sheet"):
        witness_attest(transcript, WALT, bytes(32), LATER, _cms(key, cert, before))
    assert sorted(tmp_path.iterdir()) == [transcript.path]  # nothing written
    assert transcript.path.read_bytes() == before
    signature = _cms(key, cert, before)
    made = witness_attest(transcript, WALT, head, LATER, signature)
    kept = tmp_path / made.fact["signature_file"]
    digest = hashlib.sha256(signature).hexdigest()
    assert kept.name == f"t.jsonl.witness-{digest[:16]}.p7s" and kept.read_bytes() == signature
    assert made.fact["signature_sha256"] == digest
    assert made.fact["signer"] == cert.subject.rfc4514_string()
    assert made.fact["signer_certificate_sha256"] == cert.fingerprint(SHA256()).hex()
    assert transcript.read()[-1] == made and made.fact["covers"] == "1..3"
    assert f"signature SHA-256 {digest}" in witness_sheet(transcript.read())


def test_an_empty_statement_is_refused_not_replaced() -> None:
    steps = _three()
    with pytest.raises(CeremonyError, match=r"fact statement: a text of 1\.\.400"):
        attest(steps, Witness("Walt", "auditor", "walt", ""), steps[-1].digest, LATER)
