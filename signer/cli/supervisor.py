"""The supervisor of `qes serve` with ``server.workers`` > 1.

One process per worker, all sharing the port (SO_REUSEPORT), each opening its own HSM login and
database pool. The supervisor forwards SIGTERM/SIGINT to them, and replaces a worker that dies
while serving (the kernel's OOM killer, a fault in a PKCS#11 module): without that, the service
would go on at a fraction of its capacity with nothing but one log line to say so, and the init
system would see a running service. A worker that ends during its start (a configuration, HSM
or database error) is not replaced: the supervisor stops the others and exits with its code, so
systemd or Kubernetes restarts the whole service with their own backoff.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

__all__ = ["START_GRACE_SECONDS", "STOP_SIGNALS", "Supervisor"]

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: A worker that ends sooner than this after it was started failed to start; one that ends
#: later died while serving and is replaced.
START_GRACE_SECONDS = 10.0


@dataclass
class Supervisor:
    """Runs ``cmd`` as ``workers`` processes until a stop signal, replacing those that die.

    ``stop_requested`` is shared with the handler ``qes serve`` installs before it gets here:
    a signal noted before the workers existed is forwarded to them once they do."""

    cmd: Sequence[str]
    stop_requested: list[int]
    clock: Callable[[], float] = time.monotonic
    _children: dict[int, tuple[subprocess.Popen[bytes], float]] = field(default_factory=dict)

    def run(self, workers: int) -> int:
        """Exit code: 0 after a clean stop, else the code of the worker that failed."""
        for _ in range(workers):
            self._spawn()
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._forward)
        for early in list(self.stop_requested):  # arrived while the workers were being started
            self._forward(early, None)
        codes = self._reap()
        # A worker ended by the stop signal we forwarded (before its handler was up) stopped
        # cleanly.
        return max((0 if -c in self.stop_requested else c for c in codes), key=abs, default=0)

    def _spawn(self) -> None:
        child = subprocess.Popen(list(self.cmd))
        self._children[child.pid] = (child, self.clock())

    def _forward(self, signum: int, _frame: object) -> None:
        self.stop_requested.append(signum)
        for child, _started in list(self._children.values()):
            if child.returncode is None:
                child.send_signal(signum)

    def _reap(self) -> list[int]:
        """Exit codes of the workers that ended for good, in the order they ended; each one's
        live metrics go as it ends (a dead worker's gauges must not stay in the others' sums)."""
        codes: list[int] = []
        while self._children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            entry = self._children.pop(pid, None)
            if entry is None:
                continue
            child, started = entry
            code = child.returncode = os.waitstatus_to_exitcode(status)
            _forget_metrics(pid)
            if self.stop_requested:
                codes.append(code)
            elif self.clock() - started < START_GRACE_SECONDS:
                log.error("worker_start_failed", pid=pid, exit_code=code, action="stopping")
                codes.append(code)
                self._forward(signal.SIGTERM, None)
            else:
                log.error("worker_died", pid=pid, exit_code=code, action="replacing it")
                self._spawn()
        return codes


def _forget_metrics(pid: int) -> None:
    from signer import metrics  # prometheus_client: loaded only where workers are supervised

    if metrics.multiprocess():
        metrics.worker_exited(pid)
