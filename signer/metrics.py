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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version

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
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_HSM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: This module's own registry (not prometheus-client's global one): the metrics below are
#: defined once per import of this module, and a second import must not collide.
OWN = CollectorRegistry()
if os.environ.get(MULTIPROC_ENV):  # the values below open their files in it right away
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

BUILD_INFO = Gauge(
    "qes_build_info",
    "Always 1: the running version of qes-signer and Python.",
    ["version", "python"],
    multiprocess_mode="max",
    registry=OWN,
)
SIGNATURES = Counter(
    "qes_signatures",
    "Digests signed (outcome=signed) or not signed after a key was made (outcome=failed).",
    ["profile", "format", "outcome"],
    registry=OWN,
)
CERTIFICATES = Counter(
    "qes_certificates",
    "Ephemeral certificates issued, by whether their request completed or failed.",
    ["profile", "format", "outcome"],
    registry=OWN,
)
TIMESTAMPS = Counter(
    "qes_timestamps",
    "Signature time-stamp tokens obtained (RFC 3161), built-in or external TSA.",
    registry=OWN,
)
REFUSALS = Counter(
    "qes_refusals",
    "Requests answered with an RFC 9457 problem, by problem type (the /problems/<type> slug).",
    ["type", "status"],
    registry=OWN,
)
REQUESTS = Counter(
    "qes_http_requests",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
    registry=OWN,
)
LATENCY = Histogram(
    "qes_http_request_duration_seconds",
    "Time from request to response, by route template and method.",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
    registry=OWN,
)
HSM_SECONDS = Histogram(
    "qes_hsm_operation_duration_seconds",
    "PKCS#11 operations on ephemeral keys: generate (with attribute read-back), sign, destroy "
    "(with the check that the key is gone).",
    ["operation"],
    buckets=_HSM_BUCKETS,
    registry=OWN,
)
HSM_ERRORS = Counter(
    "qes_hsm_errors", "PKCS#11 calls that failed (the HSM or its link).", registry=OWN
)
SWEPT = Counter(
    "qes_sweeper_ended",
    "Items the sweeper ended: abandoned after a crash, or expired in the background.",
    ["kind"],
    registry=OWN,
)
HSM_SESSIONS = Gauge(
    "qes_hsm_sessions", "PKCS#11 sessions open.", multiprocess_mode="livesum", registry=OWN
)
HSM_IN_USE = Gauge(
    "qes_hsm_sessions_in_use",
    "PKCS#11 sessions running an operation now.",
    multiprocess_mode="livesum",
    registry=OWN,
)
DB_POOL = Gauge(
    "qes_db_pool_connections",
    "PostgreSQL connections open.",
    multiprocess_mode="livesum",
    registry=OWN,
)
DB_IN_USE = Gauge(
    "qes_db_pool_connections_in_use",
    "PostgreSQL connections lent out to a query or transaction now.",
    multiprocess_mode="livesum",
    registry=OWN,
)
LOG_ENTRIES = Gauge(
    "qes_log_entries",
    "Entries sequenced in the transparency log.",
    multiprocess_mode="livemax",
    registry=OWN,
)
LOG_CHECKPOINT_SIZE = Gauge(
    "qes_log_checkpoint_size",
    "Tree size of the newest signed checkpoint.",
    multiprocess_mode="livemax",
    registry=OWN,
)
LOG_CHECKPOINT_TIME = Gauge(
    "qes_log_checkpoint_timestamp_seconds",
    "Unix time of the newest signed checkpoint (its age: time() - this).",
    multiprocess_mode="livemax",
    registry=OWN,
)
APPROVALS_PENDING = Gauge(
    "qes_approvals_pending",
    "Batch requests waiting for m-of-n approval.",
    multiprocess_mode="livemax",
    registry=OWN,
)
CERT_NOT_AFTER = Gauge(
    "qes_certificate_not_after_timestamp_seconds",
    "notAfter of the certificates the service stands on (root, issuing, tsa, ocsp-root,"
    " ocsp-issuing), as Unix time.",
    ["role"],
    multiprocess_mode="livemax",
    registry=OWN,
)
CERT_RENEW_BY = Gauge(
    "qes_certificate_renew_by_timestamp_seconds",
    "Unix time by which the role's certificate must be replaced (notAfter minus its renewal"
    " lead, signer.signing.expiry); alert once time() passes it.",
    ["role"],
    multiprocess_mode="livemax",
    registry=OWN,
)
ROOT_CRL_NEXT_UPDATE = Gauge(
    "qes_root_crl_next_update_timestamp_seconds",
    "nextUpdate of the newest root CRL imported from the key ceremony, as Unix time (signed"
    " offline: alert well before it, signer.signing.expiry).",
    multiprocess_mode="livemin",
    registry=OWN,
)
READY = Gauge(
    "qes_ready",
    "1 when the database and the HSM answer (as /readyz), else 0.",
    multiprocess_mode="livemin",
    registry=OWN,
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
