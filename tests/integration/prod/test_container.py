"""The container image (issue 13, item 4), built and run for real without a registry.

A Debian base is made here with mmdebstrap (cached in var/container/, which git ignores), the
image is built from deploy/container/Containerfile with `buildah bud --isolation chroot` (the
locked wheels downloaded on the host first, hash-checked again inside), and the SoftHSM variant
runs `qes serve` exactly as its entry point says, with `buildah run --isolation chroot
--network host` (podman run cannot run in this sandbox: OPERATIONS.md). The service inside
uses the shipped production config with TLS, a copy of the test token and the test's
PostgreSQL and IdP; a batch signature made through it verifies with OpenSSL, and the token
holds no ephemeral key afterwards. `buildah run` has no --read-only, so the read-only root file
system of deploy/kubernetes is checked afterwards: `podman diff` of the working container lists
nothing outside the mounted volumes (the token, the configs, /tmp as the emptyDir)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.prod import (
    check_with_openssl,
    ephemeral_keys,
    make_tls_files,
    post_json,
    sample,
    scrape,
    sign_request_body,
)
from tests.support.service import LONG_LIVED_LABELS, ROOT, TEST_LOG_PRIVACY_KEY, free_port
from tests.support.softhsm import SoftHsmToken

CACHE = ROOT / "var" / "container"
CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"
# The base holds what the build and runtime stages would otherwise apt-get (their RUN steps then
# skip it); the softhsm stage installs SoftHSM2 with apt, as with the official base.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
CONTEXT = ("pyproject.toml", "README.md", "ca", "idp_adapter", "signer", "requirements",
           "deploy/production/qes.toml", "deploy/container")  # fmt: skip
IMAGE = "localhost/qes-signer-test"
UID = 10001
# A fresh machine makes the base (mmdebstrap), downloads the wheels and builds both targets in
# the first test's setup: minutes, not seconds. Later runs reuse var/container/ and the layers.
pytestmark = pytest.mark.timeout(1200)


def _run(*cmd: str, timeout: float = 900, **kw: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _base_image() -> str:
    """A minimal Debian bookworm made here, imported once; the tarball is kept for next time."""
    key = hashlib.sha256(" ".join(BASE_PACKAGES).encode()).hexdigest()[:12]
    name = f"localhost/qes-test-base:{key}"
    if subprocess.run(["buildah", "inspect", "--type", "image", name],
                      capture_output=True, check=False).returncode == 0:  # fmt: skip
        return name
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"bookworm-{key}.tar"
    if not tarball.exists():
        partial = tarball.with_suffix(".partial.tar")  # mmdebstrap picks tar by the suffix
        _run("mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             "bookworm", str(partial))  # fmt: skip
        partial.rename(tarball)
    _run("podman", "import", str(tarball), name)
    return name


def _wheels() -> Path:
    """The locked wheels, downloaded on the host (pip checks every hash) and kept."""
    lock = (ROOT / "requirements" / "run.txt").read_bytes()
    wheels = CACHE / f"wheels-{hashlib.sha256(lock).hexdigest()[:12]}"
    if not wheels.exists():
        partial = wheels.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _run(str(ROOT / ".venv" / "bin" / "pip"), "download", "-q", "--require-hashes",
             "--no-deps", "--only-binary=:all:", "-r", str(ROOT / "requirements" / "run.txt"),
             "-d", str(partial),
             env={**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": ""})  # fmt: skip
        partial.rename(wheels)
    return wheels


def _context(directory: Path) -> Path:
    """The build context: the files the Containerfile copies, no .venv or caches."""
    for name in CONTEXT:
        source, target = ROOT / name, directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.whl"))
        else:
            shutil.copy(source, target)
    shutil.copytree(_wheels(), directory / "deploy" / "container" / "wheels", dirs_exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("buildah") is None:
        pytest.fail("buildah is missing: run `bash deploy/setup.sh --test`")
    info = subprocess.run(["buildah", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        pytest.skip(f"buildah cannot run on this machine: {info.stderr.strip()[:300]}")
    base = _base_image()
    context = _context(tmp_path_factory.mktemp("context"))
    for target in ("softhsm", "production"):
        _run("buildah", "bud", "--isolation", "chroot", "--layers", "--format", "docker",
             "--build-arg", f"BASE={base}", "--target", target, "-f",
             str(context / "deploy" / "container" / "Containerfile"), "-t",
             f"{IMAGE}:{target}", str(context))  # fmt: skip
    return f"{IMAGE}:softhsm"


def _config(image: str) -> dict[str, Any]:
    inspected = json.loads(_run("buildah", "inspect", "--type", "image", image).stdout)
    return dict(inspected["Docker"]["config"])


def test_production_image_is_non_root_with_entry_point_and_health_check(image: str) -> None:
    config = _config(f"{IMAGE}:production")
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["/opt/qes-signer/bin/qes", "serve"]
    assert config["Cmd"] == ["--config", "/etc/qes-signer/qes.toml"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    container = _run("buildah", "from", "--pull-never", f"{IMAGE}:production").stdout.strip()
    try:
        run = ("buildah", "run", "--isolation", "chroot", container, "--")
        assert _run(*run, "id", "-u").stdout.strip() == str(UID)
        # No PKCS#11 module in the production image: the operator mounts the HSM's.
        assert subprocess.run([*run, "test", "-e", "/usr/lib/softhsm/libsofthsm2.so"],
                              check=False).returncode != 0  # fmt: skip
        version = _run(
            *run,
            "/opt/qes-signer/bin/python",
            "-c",
            "import importlib.metadata as m; print(m.version('prometheus-client'))",
        )
        locked = (ROOT / "requirements" / "run.txt").read_text()
        assert f"prometheus-client=={version.stdout.strip()} " in locked  # fmt: skip
    finally:
        _run("buildah", "rm", container)


@pytest.fixture
def token_copy(softhsm_token: SoftHsmToken, ca_ready: None, tmp_path: Path) -> SoftHsmToken:
    """A copy of the session token (CA, TSA and log keys), owned by the image's user."""
    directory = tmp_path / "hsm"
    shutil.copytree(softhsm_token.directory / "tokens", directory / "tokens")
    conf = directory / "softhsm2.conf"
    conf.write_text(softhsm_token.conf.read_text().replace(
        str(softhsm_token.directory / "tokens"), str(directory / "tokens")))  # fmt: skip
    for path in (directory, *directory.rglob("*")):
        os.chown(path, UID, UID)
    return SoftHsmToken(directory, conf, softhsm_token.label, softhsm_token.pin,
                        softhsm_token.so_pin)  # fmt: skip


async def test_signs_through_the_service_running_in_the_image(
    image: str, token_copy: SoftHsmToken, database_url: str, idp: RunningIdp, tmp_path: Path
) -> None:
    tls, _ = make_tls_files(tmp_path / "pki")
    for path in (tls.cert.parent, *tls.cert.parent.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (tmp_path / "softhsm").mkdir()
    (tmp_path / "softhsm" / "softhsm2.conf").write_text(
        "directories.tokendir = /var/lib/softhsm/tokens\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )
    port, metrics_port = free_port(), free_port()
    env = {
        "QES_HSM_PIN": token_copy.pin,
        "QES_DATABASE_URL": database_url,
        "QES_LOG_PRIVACY_KEY": TEST_LOG_PRIVACY_KEY,
        "QES_WEB_SIGNING_CLIENT_SECRET": "unused-here",
        "QES_AUDIT_UI_CLIENT_SECRET": "unused-here",
        "SOFTHSM2_CONF": "/etc/qes-test/softhsm2.conf",
        "QES__HSM__TOKEN_LABEL": token_copy.label,
        "QES__HSM__SESSIONS": "2",
        "QES__SERVER__HOST": "127.0.0.1",
        "QES__SERVER__PORT": str(port),
        "QES__SERVER__PUBLIC_URL": f"https://127.0.0.1:{port}",
        "QES__SERVER__WORKERS": "1",
        "QES__METRICS__HOST": "127.0.0.1",
        "QES__METRICS__PORT": str(metrics_port),
        "QES__LOG__ORIGIN": "qes-signer.test/log",
        "QES__ISSUERS__WORKLOADS__ISSUER": idp.issuer,
    }
    config = _config(image)
    container = _run("buildah", "from", "--pull-never", image).stdout.strip()
    log_path = tmp_path / "container.log"
    log = log_path.open("wb")
    (tmp_path / "container-tmp").mkdir(mode=0o1777)
    (tmp_path / "container-tmp").chmod(0o1777)
    volumes = {  # as in deploy/kubernetes: /tmp is an emptyDir, the rest is read-only
        token_copy.directory / "tokens": "/var/lib/softhsm/tokens",
        tmp_path / "softhsm": "/etc/qes-test:ro",
        tls.cert.parent: "/etc/qes-signer/tls:ro",
        tmp_path / "container-tmp": "/tmp",
    }
    proc = subprocess.Popen(
        ["buildah", "run", "--isolation", "chroot", "--network", "host",
         *(a for host, inside in volumes.items() for a in ("-v", f"{host}:{inside}")),
         *(a for k, v in env.items() for a in ("--env", f"{k}={v}")),
         container, "--", *config["Entrypoint"], *config["Cmd"]],
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        base = f"https://127.0.0.1:{port}"
        _wait_ready(f"{base}/readyz", tls.client_context(), proc, log_path)
        token = await idp.client_token("demo-batch", DEMO_SECRETS["demo-batch"])
        content = b"signed inside the container image"
        status, headers, result = post_json(
            f"{base}/api/v1/signatures", sign_request_body(content),
            {"Authorization": f"Bearer {token}"}, tls.client_context(),
        )  # fmt: skip
        assert status == 201 and "Strict-Transport-Security" in headers
        check_with_openssl(result, content, tmp_path / "verify")
        assert sample(scrape(f"http://127.0.0.1:{metrics_port}/metrics"),
                      "qes_certificates_total", outcome="completed") == 1  # fmt: skip
        # The image's own health check, next to the running service.
        health = _run("buildah", "run", "--isolation", "chroot", "--network", "host",
                      "--env", f"QES_HEALTH_PORT={port}", container, "--",
                      *config["Healthcheck"]["Test"][1:])  # fmt: skip
        assert health.returncode == 0
    finally:
        _stop(proc)
        log.close()
        try:
            written = _written_outside(container, [v.split(":")[0] for v in volumes.values()])
        finally:
            _run("buildah", "rm", container)
    # `buildah run` has no --read-only: the container's own layer shows what was written.
    assert written == [], f"the service wrote outside its volumes: {written}"
    assert "signed" in log_path.read_text()
    assert ephemeral_keys(token_copy) == []
    assert {o.label for o in token_copy.list_objects()} >= set(LONG_LIVED_LABELS)


def _written_outside(container: str, mount_points: list[str]) -> list[str]:
    """What ``podman diff`` lists in the working container's own layer (added, changed or
    deleted paths) other than the volumes' mount points and the directories holding them: with
    a read-only root file system (deploy/kubernetes) any such write would fail."""
    diff = json.loads(_run("podman", "diff", "--format", "json", container).stdout or "{}")
    paths = [p for kind in ("added", "changed", "deleted") for p in diff.get(kind) or []]
    allowed = {str(parent) for m in mount_points for parent in (Path(m), *Path(m).parents)}
    return sorted(p for p in paths if p not in allowed)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to `buildah run` and what it runs (its own process group), SIGKILL after 60 s."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def _wait_ready(url: str, ctx: Any, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as r:  # noqa: S310
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the service in the container never got ready: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_containers() -> Iterator[None]:
    yield
    fmt = "{{.ContainerName}} {{.ImageName}}"
    listed = subprocess.run(["buildah", "containers", "--format", fmt],
                            capture_output=True, text=True, check=False)  # fmt: skip
    mine = [line.split()[0] for line in listed.stdout.splitlines() if IMAGE in line]
    assert mine == [], f"containers left behind: {mine}"
