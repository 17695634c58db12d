"""Rate-limited logging of failed accept() calls and the [server] connection settings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from signer.errors import ConfigError
from signer.http.kit.connections import AcceptErrorLog
from signer.settings.config import ServerSettings, load_settings
from tests.support.service import DEV_CONFIG


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Loop:
    def __init__(self) -> None:
        self.passed: list[dict[str, Any]] = []

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.passed.append(context)


def _accept_failure() -> dict[str, Any]:
    return {
        "message": "socket.accept() out of system resource",
        "exception": OSError(24, "Too many open files"),
    }


def test_accept_failures_are_logged_once_per_interval_with_the_count() -> None:
    clock, loop = _Clock(), _Loop()
    handler = AcceptErrorLog(interval=10.0, clock=clock)
    for _ in range(64_255):  # what the issue saw in 20 s
        handler(loop, _accept_failure())  # type: ignore[arg-type]
    assert handler.logged == 1
    assert handler.suppressed == 64_254
    clock.now += 10.0
    handler(loop, _accept_failure())  # type: ignore[arg-type]
    assert handler.logged == 2
    assert handler.suppressed == 0
    assert loop.passed == []


def test_other_loop_errors_go_to_the_default_handler() -> None:
    loop = _Loop()
    handler = AcceptErrorLog()
    context = {"message": "Task exception was never retrieved"}
    handler(loop, context)  # type: ignore[arg-type]
    assert loop.passed == [context]
    assert handler.logged == 0


def _settings(**server: str) -> Any:
    env = {"QES_HSM_PIN": "1234", **{f"QES__SERVER__{k.upper()}": v for k, v in server.items()}}
    return load_settings(DEV_CONFIG, env=env)


def test_connection_settings_have_sane_defaults() -> None:
    limits = _settings().server
    defaults = ServerSettings()
    assert limits.header_timeout == defaults.header_timeout == 10.0
    assert limits.body_timeout == defaults.body_timeout == 60.0
    assert limits.keepalive_timeout == defaults.keepalive_timeout == 15.0
    assert limits.max_connections == defaults.max_connections == 1000


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("header_timeout", "0"),
        ("body_timeout", "-1"),
        ("keepalive_timeout", "7200"),
        ("max_connections", "0"),
    ],
)
def test_bad_connection_setting_names_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"server\.{key}"):
        _settings(**{key: value})


def test_loop_handler_signature_matches_asyncio() -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(AcceptErrorLog())
        loop.call_exception_handler(_accept_failure())
    finally:
        loop.close()
