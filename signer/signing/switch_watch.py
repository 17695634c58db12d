"""Which replicas still sign with a generation that `qes ca switch` has made past.

What a replica signs with is fixed for its life (:func:`signer.signing.rollover.load_authorities`
at start), so a switch reaches each replica at its restart (a rolling restart: EN 319 411-1
§6.3.6 asks that the changeover is planned, not that it is instant). Until then the old
generation keeps signing, which is valid (its certificate and, for the TSA, its key usage
period still hold) but not what the operator asked for. So every worker reads the current
generations every ``ca.switch_check_seconds`` and, while its own is no longer current:

- exports ``qes_ca_switch_restart_pending{role}`` = 1 (the alert rule
  ``QesSignerRestartAfterSwitch`` fires after 30 minutes of it);
- logs ``ca_switch_needs_restart`` once per switch it notices, naming both generations and what
  to do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from signer import metrics, periodic
from signer.signing.rollover import Authorities

log = structlog.get_logger(__name__)

ROLES = ("issuing", "tsa")
ACTION = "restart this replica (a rolling restart): it signs with the new generation from its start"


@dataclass(frozen=True)
class Outdated:
    """``role`` is signed with generation ``in_use`` while ``current`` is the current one."""

    role: str
    in_use: int
    current: int


def outdated(in_use: Authorities, now: Authorities) -> tuple[Outdated, ...]:
    """Each role whose current generation in ``now`` (read from the database) is not the one
    this replica started with (``in_use``). A role without a current generation (an external
    TSA) is never outdated."""
    found = []
    for role in ROLES:
        mine, current = in_use.current(role), now.current(role)
        if mine is not None and current is not None and mine.number != current.number:
            found.append(Outdated(role, mine.number, current.number))
    return tuple(found)


async def run(
    in_use: Authorities, load: Callable[[], Awaitable[Authorities]], every: float
) -> None:
    """Compare ``in_use`` with what ``load`` reads now and every ``every`` seconds, until
    cancelled: export the gauge per role, log each newly noticed switch once."""
    told: set[Outdated] = set()

    async def round_() -> None:
        found = outdated(in_use, await load())
        for role in ROLES:
            metrics.CA_SWITCH_RESTART_PENDING.labels(role).set(
                int(any(o.role == role for o in found))
            )
        for o in found:
            if o not in told:
                told.add(o)
                log.warning(
                    "ca_switch_needs_restart",
                    role=o.role,
                    in_use=f"g{o.in_use}",
                    current=f"g{o.current}",
                    action=ACTION,
                )

    await periodic.every(every, round_, failed="ca_switch_check_failed")
