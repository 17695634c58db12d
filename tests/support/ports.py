"""Ports for the services a test starts: below the kernel's ephemeral range.

A port the kernel hands out for ``bind(0)`` comes from its ephemeral range
(``net.ipv4.ip_local_port_range``), the same range it takes the source port of every outgoing
connection from. A test that picks such a port and binds it later (or binds it again for each
test of a module) loses it whenever some connection took it meanwhile: a full run once failed
a whole e2e module with EADDRINUSE, a long-lived connection holding its port. Ports below the
range are never taken as source ports.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: How many ports below the ephemeral range to choose from.
_SPAN = 12000
_given: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, below the ephemeral range, and not
    handed out before by this process."""
    high = _ephemeral_low()
    low = max(1024, high - _SPAN)
    for _ in range(500):
        port = random.randrange(low, high)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {low}..{high - 1}")
