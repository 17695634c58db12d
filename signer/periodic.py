"""The service's background rounds (sweeps, purges, checkpoints, refusal windows): one loop.

Each replica runs them as tasks for its whole life. A round that fails because the database or
the HSM is away (a :class:`~signer.errors.SignerError`) is logged and the next one tries again;
any other exception is a bug and ends the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn

import structlog

from signer.errors import SignerError

log = structlog.get_logger(__name__)


async def every(seconds: float, step: Callable[[], Awaitable[object]], *, failed: str) -> NoReturn:
    """Run ``step`` now, then ``seconds`` after each round ends, until cancelled; a round's
    :class:`SignerError` is logged as the event ``failed`` with the error's message."""
    while True:
        try:
            await step()
        except SignerError as exc:
            log.warning(failed, error=str(exc))
        await asyncio.sleep(seconds)
