"""The token-leak scan (issue 18): no log line of any process holds a token a test sent.

Every bearer or ID token a test obtains or forges goes through :func:`record` (the IdP helper
does it for every token it issues, mints or assembles; the attack tests for the rest). Every
log a test run makes is a file the scan reads: each spawned process's output (the IdP's, each
``qes serve``'s: ``*.log`` under pytest's base temporary directory, plus files named with
:func:`register_log`), and the test process's own output and log records, which
``tests/conftest.py`` copies from every test report into :data:`state` ``.dir``. At the end of
the session :func:`scan` looks for each token, whole and as its signature segment, and the run
fails when one is found.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Finding", "keep_output", "record", "register_log", "scan", "state"]

#: Segments shorter than this are not searched for (an empty or 2-byte signature is everywhere).
MIN_SECRET = 16


@dataclass
class _State:
    dir: Path | None = None
    basetemp: Path | None = None
    tokens: set[str] = field(default_factory=set)
    logs: set[Path] = field(default_factory=set)


state = _State()


def record(token: str) -> str:
    """Remember a token a test is about to send; returns it for chaining."""
    state.tokens.add(token)
    return token


def register_log(path: Path) -> Path:
    """A log file outside the usual places that the scan must read too."""
    state.logs.add(path)
    return path


def keep_output(what: str, output: bytes) -> None:
    """A child process's output that the test read from a pipe (a ``qes`` command's stderr is
    its log): appended to the session's logs, so the scan reads it too."""
    if state.dir is not None:
        with (state.dir / "child-processes.log").open("ab") as out:
            out.write(f"== {what}\n".encode() + output + b"\n")


@dataclass(frozen=True)
class Finding:
    path: Path
    what: str  # "token" or "signature segment"
    line: int


def needles(token: str) -> list[tuple[str, bytes]]:
    """What must not appear: the token, and its last (signature) segment."""
    out: list[tuple[str, bytes]] = []
    whole = token.encode("utf-8", "surrogateescape")
    if len(whole) >= MIN_SECRET:
        out.append(("token", whole))
    signature = whole.rsplit(b".", 1)[-1]
    if len(signature) >= MIN_SECRET and signature != whole:
        out.append(("signature segment", signature))
    return out


def scan(files: Iterable[Path], tokens: Iterable[str]) -> list[Finding]:
    """Every place where a token, or its signature segment, occurs in ``files``."""
    wanted = [n for t in tokens for n in needles(t)]
    findings: list[Finding] = []
    for path in sorted(set(files)):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for what, needle in wanted:
            at = data.find(needle)
            if at >= 0:
                findings.append(Finding(path, what, data.count(b"\n", 0, at) + 1))
    return findings


def log_files() -> list[Path]:
    """The files the session scan reads (see the module docstring)."""
    found = set(state.logs)
    for root in (state.dir, state.basetemp):
        if root is not None and root.is_dir():
            found.update(p for p in root.rglob("*.log") if p.is_file())
    return sorted(found)
