"""Each structured log line leaves the process in one write, newline included: the workers of
one service share stderr (a pipe to journald or the container runtime, which sets
PYTHONUNBUFFERED), and lines written in two parts interleave mid-line between workers."""

from __future__ import annotations

import json
import sys

import pytest
import structlog

from signer.settings.logging import configure


class Recording:
    """A stderr that keeps each write apart, as an unbuffered stream hands them to the OS."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_a_log_line_is_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    before = structlog.get_config()
    stream = Recording()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        configure("json")
        structlog.get_logger("signer.test").info("started", public_url="http://127.0.0.1:1")
    finally:
        structlog.configure(**before)
    (line,) = stream.writes
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line)["event"] == "started"
