"""What ``qes serve`` runs beside the application: TLS, the metrics listener, systemd.

:func:`listener_tls` checks the TLS files before anything starts (one line naming the setting
on failure). :func:`supervisor_metrics` sets up prometheus-client's multiprocess mode for
``server.workers > 1`` and serves the merged metrics from the supervisor; :func:`running`
wraps one worker's serving: it reloads the certificate when its files change, serves the
metrics itself when it is the only worker, and tells systemd ``READY=1`` once the listener
answers (``STOPPING=1`` when it stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterator

import structlog

from signer import metrics
from signer.cli import sdnotify
from signer.errors import ConfigError
from signer.http.kit.tls import server_context, watch
from signer.settings.config import Settings

log = structlog.get_logger(__name__)


def listener_tls(settings: Settings, *, announce: bool) -> ssl.SSLContext | None:
    """The listener's TLS context, or None for plain HTTP (``[server.tls]`` absent)."""
    tls = settings.server.tls
    if tls is None:
        return None
    context = server_context(tls)
    if announce and tls.min_version == "1.2":
        log.warning(
            "tls_1_2_enabled",
            detail="server.tls.min_version = '1.2': TLS 1.2 clients are accepted (RFC 9325); "
            "remove it once every client speaks TLS 1.3",
        )
    return context


def _listen(settings: Settings) -> Callable[[], None]:
    m = settings.metrics
    try:
        stop = metrics.serve(m.host, m.port)
    except OSError as exc:
        raise ConfigError(
            f"metrics.port: cannot listen on {m.host}:{m.port} ({exc.strerror or exc})"
        ) from exc
    log.info("metrics_listening", url=f"http://{m.host}:{m.port}/metrics")
    return stop


@contextlib.contextmanager
def supervisor_metrics(settings: Settings) -> Iterator[None]:
    """Several workers: one multiprocess directory for all, one listener in the supervisor."""
    if not settings.metrics.enabled:
        yield
        return
    created = not metrics.multiprocess()
    directory = metrics.prepare_multiprocess()  # before the first worker starts
    stop = _listen(settings)
    try:
        yield
    finally:
        stop()
        metrics.remove_multiprocess(directory, created=created)


@contextlib.asynccontextmanager
async def running(settings: Settings, ssl_context: ssl.SSLContext | None) -> AsyncIterator[None]:
    """Around one worker's serving, after its listener is up."""
    watcher = None
    if ssl_context is not None and settings.server.tls is not None:
        watcher = asyncio.create_task(watch(ssl_context, settings.server.tls))
    stop_metrics = None
    if settings.metrics.enabled and not metrics.multiprocess():
        stop_metrics = _listen(settings)
    scheme = "https" if ssl_context is not None else "http"
    sdnotify.notify(
        "READY=1",
        f"STATUS=serving {scheme} on {settings.server.host}:{settings.server.port}",
    )
    try:
        yield
    finally:
        sdnotify.notify("STOPPING=1")
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if stop_metrics is not None:
            stop_metrics()
