"""systemd's readiness protocol, sd_notify(3): one datagram to ``$NOTIFY_SOCKET``.

``Type=notify`` units start when the service says ``READY=1``; ``STOPPING=1`` tells systemd a
stop is under way, ``STATUS=`` is shown by ``systemctl status``. The protocol is a single
``AF_UNIX`` datagram of newline-separated assignments (an address starting with ``@`` is in the
abstract namespace); a dozen lines, so no library for it. Without ``$NOTIFY_SOCKET`` (not run
by systemd) nothing is sent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


def notify(*assignments: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``assignments`` (``"READY=1"``, ``"STATUS=…"``); True when a datagram was sent."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("sd_notify_unsupported_address", address=address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode())
    except OSError as exc:
        log.warning("sd_notify_failed", error=exc.strerror or str(exc))
        return False
    return True
