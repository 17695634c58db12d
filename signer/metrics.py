"""Prometheus metrics (prometheus-client), on their own listener (``[metrics] host, port``).

Every name starts with ``qes_``; labels carry only bounded values (profile, format, outcome,
problem type, route template, HSM operation), never an identity, a serial or a path with ids
in it. With ``server.workers > 1`` the supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory before it starts the workers (prometheus-client's multiprocess mode: each
worker writes its values to its own memory-mapped files) and serves the merged view of all of
them on the metrics listener, so one scrape holds every worker's counts. Gauges therefore state
how workers combine (``multiprocess_mode``): sums for what each worker holds (sessions,
connections), the maximum for what each worker reads from the shared database (log size,
pending approvals), the minimum for readiness.

This module must be imported after :func:`prepare_multiprocess` in a worker: prometheus-client
picks its value store when it is first imported.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client import multiprocess as _multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_Mode = Literal["max", "livesum", "livemax", "livemin"]
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_HSM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: This module's own registry (not prometheus-client's global one): the metrics below are
#: defined once per import of this module, and a second import must not collide.
OWN = CollectorRegistry()
if os.environ.get(MULTIPROC_ENV):  # the values below open their files in it right away
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)


def _counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    return Counter(name, doc, labels, registry=OWN)


def _gauge(name: str, doc: str, mode: _Mode, labels: Sequence[str] = ()) -> Gauge:
    """``mode``: how the workers' values combine (module docstring)."""
    return Gauge(name, doc, labels, multiprocess_mode=mode, registry=OWN)


def _histogram(name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram:
    return Histogram(name, doc, labels, buckets=buckets, registry=OWN)


BUILD_INFO = _gauge(
    "qes_build_info",
    "Always 1: the running version of qes-signer and Python.",
    "max",
    ["version", "python"],
)
SIGNATURES = _counter(
    "qes_signatures",
    "Digests signed (outcome=signed) or not signed after a key was made (outcome=failed).",
    ["profile", "format", "outcome"],
)
CERTIFICATES = _counter(
    "qes_certificates",
    "Ephemeral certificates issued, by whether their request completed or failed.",
    ["profile", "format", "outcome"],
)
TIMESTAMPS = _counter(
    "qes_timestamps", "Signature time-stamp tokens obtained (RFC 3161), built-in or external TSA."
)
REFUSALS = _counter(
    "qes_refusals",
    "Requests answered with an RFC 9457 problem, by problem type (the /problems/<type> slug).",
    ["type", "status"],
)
REQUESTS = _counter(
    "qes_http_requests",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
LATENCY = _histogram(
    "qes_http_request_duration_seconds",
    "Time from request to response, by route template and method.",
    ["route", "method"],
    _LATENCY_BUCKETS,
)
HSM_SECONDS = _histogram(
    "qes_hsm_operation_duration_seconds",
    "PKCS#11 operations on ephemeral keys: generate (with attribute read-back), sign, destroy "
    "(with the check that the key is gone).",
    ["operation"],
    _HSM_BUCKETS,
)
HSM_ERRORS = _counter("qes_hsm_errors", "PKCS#11 calls that failed (the HSM or its link).")
SWEPT = _counter(
    "qes_sweeper_ended",
    "Items the sweeper ended: abandoned after a crash, or expired in the background.",
    ["kind"],
)
HSM_SESSIONS = _gauge("qes_hsm_sessions", "PKCS#11 sessions open.", "livesum")
HSM_IN_USE = _gauge(
    "qes_hsm_sessions_in_use", "PKCS#11 sessions running an operation now.", "livesum"
)
DB_POOL = _gauge("qes_db_pool_connections", "PostgreSQL connections open.", "livesum")
DB_IN_USE = _gauge(
    "qes_db_pool_connections_in_use",
    "PostgreSQL connections lent out to a query or transaction now.",
    "livesum",
)
LOG_ENTRIES = _gauge("qes_log_entries", "Entries sequenced in the transparency log.", "livemax")
LOG_CHECKPOINT_SIZE = _gauge(
    "qes_log_checkpoint_size", "Tree size of the newest signed checkpoint.", "livemax"
)
LOG_CHECKPOINT_TIME = _gauge(
    "qes_log_checkpoint_timestamp_seconds",
    "Unix time of the newest signed checkpoint (its age: time() - this).",
    "livemax",
)
APPROVALS_PENDING = _gauge(
    "qes_approvals_pending", "Batch requests waiting for m-of-n approval.", "livemax"
)
CERT_NOT_AFTER = _gauge(
    "qes_certificate_not_after_timestamp_seconds",
    "notAfter of the certificates the service stands on (root, issuing, tsa, ocsp-root,"
    " ocsp-issuing, ocsp-issuing-g<n> of a non-current issuing CA generation), as Unix time.",
    "livemax",
    ["role"],
)
CERT_RENEW_BY = _gauge(
    "qes_certificate_renew_by_timestamp_seconds",
    "Unix time by which the role's certificate must be replaced (notAfter minus its renewal"
    " lead, signer.signing.expiry); alert once time() passes it.",
    "livemax",
    ["role"],
)
ROOT_CRL_NEXT_UPDATE = _gauge(
    "qes_root_crl_next_update_timestamp_seconds",
    "nextUpdate of the newest root CRL imported from the key ceremony, as Unix time (signed"
    " offline: alert well before it, signer.signing.expiry).",
    "livemin",
)
CA_SWITCH_RESTART_PENDING = _gauge(
    "qes_ca_switch_restart_pending",
    "1 while a worker signs with a generation of the role (issuing, tsa) that `qes ca switch`"
    " has since made past: it takes the new one at its restart (signer.signing.switch_watch).",
    "livemax",
    ["role"],
)
READY = _gauge(
    "qes_ready", "1 when the database and the HSM answer (as /readyz), else 0.", "livemin"
)


def build_version() -> str:
    try:
        return version("qes-signer")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown"


BUILD_INFO.labels(build_version(), platform.python_version()).set(1)
if not os.environ.get(MULTIPROC_ENV):  # one process: its own CPU, memory and GC figures too
    for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        OWN.register(_collector)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess() -> str:
    """In the supervisor, before any worker starts: a fresh, empty multiprocess directory.

    ``$PROMETHEUS_MULTIPROC_DIR`` when the operator set one (emptied: counts of an earlier run
    must not add up with this one's), else a new temporary directory."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.unlink(os.path.join(given, name))
        return given
    path = tempfile.mkdtemp(prefix="qes-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def remove_multiprocess(path: str, *, created: bool) -> None:
    """At the supervisor's exit: a directory it made goes; the operator's keeps its files
    (the next start empties it)."""
    if created:
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay in the totals)."""
    _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve(host: str, port: int) -> Callable[[], None]:
    """Start the metrics listener (a thread); returns its stop function.

    In multiprocess mode it serves the merged values of every worker, else this process's."""
    registry = OWN
    if multiprocess():
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


@contextmanager
def timed(histogram: Histogram, *labels: str) -> Iterator[None]:
    """Observe the duration of the block, also when it raises."""
    start = time.perf_counter()
    try:
        yield
    finally:
        histogram.labels(*labels).observe(time.perf_counter() - start)
