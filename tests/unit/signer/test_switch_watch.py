"""A replica notices a `qes ca switch` made after its start (signer.signing.switch_watch)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from signer import metrics
from signer.signing import switch_watch
from signer.signing.rollover import Authorities
from signer.storage.authority import Generation
from tests.support.pki import NOW, make_pki

HOUR = timedelta(hours=1)


def _authorities(issuing: int, tsa: int | None) -> Authorities:
    """Two generations of each role, ``issuing`` and ``tsa`` naming the current one."""
    pki = make_pki()

    def generations(role: str, cert: object, current: int | None) -> tuple[Generation, ...]:
        def one(n: int) -> Generation:
            if current is None or n > current:
                return Generation(role, n, f"{role}-g{n}", cert)  # type: ignore[arg-type]
            until = None if n == current else NOW + n * HOUR
            return Generation(role, n, f"{role}-g{n}", cert, NOW, until)  # type: ignore[arg-type]

        return (one(1), one(2))

    return Authorities(
        root=pki.chain.root,
        issuing=generations("issuing", pki.chain.issuing, issuing),
        tsa=generations("tsa", pki.tsa_certificate, tsa),
    )


def _pending(role: str) -> float:
    return metrics.CA_SWITCH_RESTART_PENDING.labels(role)._value.get()  # type: ignore[attr-defined,no-any-return]


def test_a_switch_after_the_start_is_outdated_per_role() -> None:
    started = _authorities(issuing=1, tsa=1)
    assert switch_watch.outdated(started, _authorities(issuing=1, tsa=1)) == ()
    assert switch_watch.outdated(started, _authorities(issuing=2, tsa=1)) == (
        switch_watch.Outdated("issuing", 1, 2),
    )
    assert switch_watch.outdated(started, _authorities(issuing=2, tsa=2)) == (
        switch_watch.Outdated("issuing", 1, 2),
        switch_watch.Outdated("tsa", 1, 2),
    )
    # an external TSA (no generation at all) is never outdated
    assert switch_watch.outdated(_authorities(1, None), _authorities(1, None)) == ()


def test_the_watch_exports_the_gauge_and_logs_each_switch_once() -> None:
    started = _authorities(issuing=1, tsa=1)
    now = [_authorities(issuing=1, tsa=1)]

    async def load() -> Authorities:
        return now[0]

    async def rounds() -> list[tuple[float, float]]:
        seen = []
        task = asyncio.create_task(switch_watch.run(started, load, every=0.01))
        for state in (now[0], _authorities(1, 2), _authorities(1, 2)):
            now[0] = state
            await asyncio.sleep(0.05)
            seen.append((_pending("issuing"), _pending("tsa")))
        task.cancel()
        return seen

    with structlog.testing.capture_logs() as logs:
        seen = asyncio.run(rounds())
    assert seen == [(0, 0), (0, 1), (0, 1)]
    (told,) = [e for e in logs if e["event"] == "ca_switch_needs_restart"]  # once, not per round
    assert (told["role"], told["in_use"], told["current"]) == ("tsa", "g1", "g2")
    assert "restart this replica" in told["action"]
