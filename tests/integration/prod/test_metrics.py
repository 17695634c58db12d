"""Prometheus metrics and the access log (issue 13, items 2 and 3) against a real `qes serve`
with two workers: a scrape parsed with prometheus-client's parser holds exactly the requests
this test made, summed over both workers (each worker's own share read from its files); a real
Prometheus (Debian's 2.42) scraping the listener returns the same count; promtool checks and
unit-tests the shipped alert rules; the Grafana dashboard asks only for metrics that exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.prod import post_json, sample, scrape, sign_request_body
from tests.support.service import ROOT, SignerProcess, free_port, service_env
from tests.support.softhsm import SoftHsmToken

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "qes-signer.json"


@pytest.fixture(scope="module")
def metered(
    softhsm_token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    ca_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SignerProcess, str, Path]]:
    work = tmp_path_factory.mktemp("metrics")
    multiproc = work / "multiproc"
    port, metrics_port = free_port(), free_port()
    env = service_env(
        token=softhsm_token,
        database_url=database_url,
        idp=idp,
        port=port,
        data_dir=work,
        QES__SERVER__WORKERS="2",
        QES__SERVER__ACCESS_LOG="true",
        QES__METRICS__ENABLED="true",
        QES__METRICS__PORT=str(metrics_port),
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
    )
    process = SignerProcess(env, port, work / "signer.log").start()
    yield process, f"http://127.0.0.1:{metrics_port}/metrics", multiproc
    process.stop()


def _worker_share(multiproc: Path, pid: str, work: Path) -> dict[Any, float]:
    """One worker's values: its own files collected alone."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.parser import text_string_to_metric_families

    alone = work / f"pid-{pid}"
    alone.mkdir(exist_ok=True)
    for f in multiproc.glob(f"*_{pid}.db"):
        shutil.copy(f, alone / f.name)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(alone))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _worker_pids(multiproc: Path) -> set[str]:
    found = (re.search(r"_(\d+)\.db$", f.name) for f in multiproc.glob("counter_*.db"))
    return {m[1] for m in found if m}


def _prometheus_query(base: str, query: str) -> float | None:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310
            data = json.loads(r.read())
    except OSError:
        return None
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def test_one_scrape_counts_every_worker_and_prometheus_agrees(
    metered: tuple[SignerProcess, str, Path], idp: RunningIdp, tmp_path: Path
) -> None:
    signer, metrics_url, multiproc = metered
    token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
    auth = {"Authorization": f"Bearer {token}"}
    serials: list[str] = []
    # New connections until both workers (SO_REUSEPORT) have signed something; at most 60.
    while len(serials) < 60:
        operation = {**auth, "Idempotency-Key": os.urandom(8).hex()}  # one token, many ops
        body = sign_request_body(os.urandom(16))
        status, _, result = post_json(f"{signer.url}/api/v1/signatures", body, operation, None)
        assert status == 201
        serials.append(result["serial"])
        pids = _worker_pids(multiproc)
        shares = [_worker_share(multiproc, p, tmp_path) for p in pids]
        if (
            len(serials) >= 6
            and len(pids) == 2
            and all(sample(s, "qes_certificates_total", outcome="completed") > 0 for s in shares)
        ):
            break
    signed = len(serials)
    refused = 3
    for _ in range(refused):
        with pytest.raises(urllib.error.HTTPError) as err:
            post_json(f"{signer.url}/api/v1/signatures", sign_request_body(b"x"),
                      {"Authorization": "Bearer not-a-token"}, None)  # fmt: skip
        assert err.value.code == 401
    # An auditor's route without the auditor's token: a refusal of another problem type.
    record_url = f"{signer.url}/api/v1/certificates/{serials[0]}?code=SECRETCODE"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(record_url, timeout=10)  # noqa: S310
    record_problem = json.loads(err.value.read())["type"].rsplit("/", 1)[1]

    samples = scrape(metrics_url)
    assert sample(samples, "qes_certificates_total", format="raw", outcome="completed") == signed
    assert sample(samples, "qes_signatures_total", format="raw", outcome="signed") == signed
    assert sample(samples, "qes_http_requests_total", route="/api/v1/signatures",
                  method="POST", status="201") == signed  # fmt: skip
    assert sample(samples, "qes_http_request_duration_seconds_count",
                  route="/api/v1/signatures", method="POST") == signed + refused  # fmt: skip
    assert sample(samples, "qes_refusals_total") == refused + 1
    assert sample(samples, "qes_refusals_total", type=record_problem) == (
        refused + 1 if record_problem == "invalid-token" else 1
    )
    for operation in ("generate", "destroy"):
        assert sample(samples, "qes_hsm_operation_duration_seconds_count",
                      operation=operation) == signed  # fmt: skip
    assert sample(samples, "qes_hsm_operation_duration_seconds_count", operation="sign") >= signed
    assert sample(samples, "qes_http_requests_total",
                  route="/api/v1/certificates/{serial}", status="401") == 1  # fmt: skip
    build = [ls for (n, ls), v in samples.items() if n == "qes_build_info" and v == 1]
    assert build and dict(build[0])["version"] == "0.1.0"
    # The two workers' own shares add up to the scrape: nothing is counted twice or lost.
    shares = [_worker_share(multiproc, p, tmp_path) for p in _worker_pids(multiproc)]
    assert len(shares) == 2
    per_worker = [sample(s, "qes_certificates_total", outcome="completed") for s in shares]
    assert all(n > 0 for n in per_worker) and sum(per_worker) == signed

    # No label carries a serial, a token, an id or a query string.
    values = {v for (_, ls) in samples for _, v in ls}
    assert not any(s in v for s in serials for v in values)
    assert not any("SECRETCODE" in v or token[:20] in v for v in values)
    routes = {dict(ls)["route"] for (n, ls) in samples if n == "qes_http_requests_total"}
    assert routes <= {"/api/v1/signatures", "/api/v1/certificates/{serial}", "/readyz"}, routes

    # Sampled gauges (every 5 s per worker): ready, and the HSM sessions of both workers.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        samples = scrape(metrics_url)
        if sample(samples, "qes_ready") == 1 and sample(samples, "qes_log_entries") >= signed:
            break
        time.sleep(0.5)
    assert sample(samples, "qes_ready") == 1
    assert sample(samples, "qes_hsm_sessions") == 2  # "auto": one per core, 2 cores, 2 workers
    assert sample(samples, "qes_log_entries") >= signed
    assert sample(samples, "qes_db_pool_connections") >= 2
    # The certificates' ends (livemax over the workers: each exports the same times)
    for role in ("root", "issuing", "tsa", "ocsp-root", "ocsp-issuing"):
        end = sample(samples, "qes_certificate_not_after_timestamp_seconds", role=role)
        renew_by = sample(samples, "qes_certificate_renew_by_timestamp_seconds", role=role)
        assert time.time() < renew_by < end, (role, renew_by, end)

    _access_log_lines_are_clean(signer.log, token, signed, refused)
    _real_prometheus_agrees(metrics_url, tmp_path, signed)


def _access_log_lines_are_clean(log: Path, token: str, signed: int, refused: int) -> None:
    text = log.read_text()
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("event") == "access"]
    posts = [x for x in access if x["route"] == "/api/v1/signatures"]
    assert sorted(x["status"] for x in posts) == [201] * signed + [401] * refused
    for x in posts:
        assert x["method"] == "POST" and x["duration_ms"] >= 0
        assert re.fullmatch(r"[0-9a-f]{32}", x["request_id"])
    assert token not in text and "SECRETCODE" not in text and "not-a-token" not in text
    assert any(x["route"] == "/api/v1/certificates/{serial}" for x in access)


def _real_prometheus_agrees(metrics_url: str, work: Path, signed: int) -> None:
    target = urllib.parse.urlsplit(metrics_url).netloc
    port = free_port()
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {PROMETHEUS_DIR / 'qes-signer.rules.yml'}\n"
        "scrape_configs:\n  - job_name: qes-signer\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        query = 'sum(qes_certificates_total{job="qes-signer", format="raw", outcome="completed"})'
        found = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and found != signed:
            time.sleep(0.5)
            found = _prometheus_query(base, query)
        assert found == signed, (work / "prometheus.log").read_text()[-2000:]
        assert _prometheus_query(base, 'up{job="qes-signer"}') == 1
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_alert_rules_pass_promtool() -> None:
    for args in (("check", "rules", "qes-signer.rules.yml"),
                 ("test", "rules", "qes-signer.rules.test.yml")):  # fmt: skip
        done = subprocess.run(
            ["promtool", *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


def test_dashboard_and_rules_ask_only_for_exported_metrics() -> None:
    """Every qes_ metric the dashboard and the alert rules query is one signer.metrics defines
    (with its _total/_bucket/_count/_sum series)."""
    from signer import metrics

    exported: set[str] = set()
    for family in metrics.OWN.collect():
        if family.name.startswith("qes_"):
            kind = family.type
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
            exported.update(family.name + s for s in suffixes.get(kind, [""]))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = (PROMETHEUS_DIR / "qes-signer.rules.yml").read_text()
    asked = set(re.findall(r"\bqes_[a-z_]+", "\n".join(exprs) + rules))
    asked.discard("qes_signer")  # the job name, not a metric
    assert asked and asked <= exported, asked - exported
    assert {"qes_signatures_total", "qes_refusals_total", "qes_ready"} <= asked
