"""structlog setup: JSON lines in production, one bound ``request_id`` per request.

Never log tokens, PINs, API keys or document content; digests and serials are fine.
"""

from __future__ import annotations

import logging
import sys
import warnings

import structlog

# Our own packages: a warning attributed to one of them (our code, or our call of a deprecated
# API) is ours to see and fix, and pytest turns it into an error (pyproject.toml).
OWN_PACKAGES = ("ca", "idp_adapter", "signer")
_NOT_OURS = r"(?!(?:" + "|".join(OWN_PACKAGES) + r")(?:\.|$)|__main__$)"


def quiet_third_party_warnings() -> None:
    """Keep other packages' deprecation notices away from the person at the terminal.

    A deprecation raised inside a dependency (cryptography 51 warns when pyHanko imports DSA) says
    nothing the user of ``qes`` can act on, and would land in the middle of a command's output.
    Only deprecation categories are filtered, and only when the module they are attributed to is
    not one of ours: our own warnings, and every real error, still show. Called first thing by
    each entry point (``qes`` and every ``qes serve`` worker), before anything imports pyHanko.
    """
    from cryptography.utils import CryptographyDeprecationWarning

    for category in (DeprecationWarning, PendingDeprecationWarning, CryptographyDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=_NOT_OURS)


def configure(fmt: str = "json", level: int = logging.INFO) -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line (message and newline together): workers of one service share
        # stderr (a pipe to journald or the container runtime, often unbuffered), and
        # print()'s two writes let their lines interleave mid-line.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
