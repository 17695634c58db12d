"""The signer as tests run it: the committed development config plus QES__ overrides."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from signer.http.kit.server import SignerRunner
from tests.support.idp import DEMO_SECRETS, RunningIdp
from tests.support.leaks import keep_output, register_log
from tests.support.pg import scratch_database
from tests.support.ports import free_port
from tests.support.softhsm import SoftHsmToken

ROOT = Path(__file__).resolve().parents[2]
DEV_CONFIG = ROOT / "deploy" / "dev" / "qes.toml"
#: The dev IdP's acr values: password, and password plus second factor.
PWD = "urn:qes-signer:dev-idp:pwd"
MFA = "urn:qes-signer:dev-idp:mfa"
#: Web signing (``/api/v1/signing-requests``) on, with the dev IdP's demo-signer-web client.
WEB_ENV = {
    "QES__WEB_SIGNING__CLIENT_ID": "demo-signer-web",
    "QES__WEB_SIGNING__ISSUER": "demo_people",
    "QES__WEB_SIGNING__ACR_LEVELS": f'["{PWD}", "{MFA}"]',
    "QES_WEB_SIGNING_CLIENT_SECRET": DEMO_SECRETS["demo-signer-web"],
}
# The long-lived token keys `qes init` creates in the online token with the dev config: issuing
# CA, TSA, OCSP and log keys (the root's is in the offline root token, never here).
TEST_LOG_PRIVACY_KEY = "74657374206f6e6c79206c6f672070726976616379206b65792c207075626c6963"
LONG_LIVED_LABELS = ("qes-issuing-ca", "qes-tsa", "qes-ocsp", "qes-log")
#: Overrides that switch on every optional surface of the development config (web signing, the
#: audit UI, the approvals UI) with the development IdP's clients.
EVERY_SURFACE = {
    "QES__WEB_SIGNING__CLIENT_ID": "demo-signer-web",
    "QES__WEB_SIGNING__ISSUER": "demo_people",
    "QES_WEB_SIGNING_CLIENT_SECRET": DEMO_SECRETS["demo-signer-web"],
    "QES__AUDIT__UI_CLIENT_ID": "demo-audit-ui",
    "QES__AUDIT__UI_ISSUER": "demo_people",
    "QES_AUDIT_UI_CLIENT_SECRET": DEMO_SECRETS["demo-audit-ui"],
    "QES__APPROVALS__UI_CLIENT_ID": "demo-approvals-ui",
    "QES__APPROVALS__UI_ISSUER": "demo_people",
    "QES_APPROVALS_UI_CLIENT_SECRET": DEMO_SECRETS["demo-approvals-ui"],
}


#: Where the test services' certificates say their CA files are (``/ca`` of the service).
PKI_URL = "http://pki.example.com/qes"


def own_ca_labels(prefix: str) -> dict[str, str]:
    """Settings giving a test a CA of its own on the session's token: root, issuing CA, TSA and
    OCSP responder key labels ``<prefix>-root-<tag>`` and so on, ``tag`` fresh each call (token
    keys outlive the test), for tests that revoke, replace or roll the CA."""
    tag = uuid.uuid4().hex[:8]
    return {
        "QES__CA__ROOT_LABEL": f"{prefix}-root-{tag}",
        "QES__CA__ISSUING_LABEL": f"{prefix}-ca-{tag}",
        "QES__TSA__LABEL": f"{prefix}-tsa-{tag}",
        "QES__CA__OCSP_LABEL": f"{prefix}-ocsp-{tag}",
    }


def service_env(
    *,
    token: SoftHsmToken,
    database_url: str,
    idp: RunningIdp,
    port: int,
    data_dir: Path,
    **extra: str,
) -> dict[str, str]:
    """Environment that points the development config at the test's token, DB and IdP."""
    return {
        **token.root_env(),  # for `qes init` and the ceremony; `qes serve` never reads it
        "QES_HSM_PIN": token.pin,
        "QES_DATABASE_URL": database_url,
        "QES__HSM__TOKEN_LABEL": token.label,
        "QES__HSM__MODULE": token.module,
        "QES__SERVER__PORT": str(port),
        "QES__SERVER__PUBLIC_URL": f"http://127.0.0.1:{port}",
        "QES__ISSUERS__DEMO_ORGANISATIONS__ISSUER": idp.issuer,
        "QES__ISSUERS__DEMO_PEOPLE__ISSUER": idp.issuer,
        "QES__DATA_DIR": f'"{data_dir}"',
        # Where a production CA publishes its files: a public name (pkilint flags loopback
        # addresses in AIA/CRL DP as internal names, rightly so for a real deployment).
        "QES__CA__CA_ISSUERS_URL": f"{PKI_URL}/issuing.cer",
        "QES__CA__CRL_URL": f"{PKI_URL}/root.crl",
        "QES__CA__ISSUING_CRL_URL": f"{PKI_URL}/issuing/{{key_id}}.crl",
        "QES__CA__ISSUING_CERTIFICATE_URL": f"{PKI_URL}/issuing/{{key_id}}.cer",
        # One log privacy key for every process of a test run (they share one database, and
        # `qes audit verify` rebuilds entries with it). Test-only, public.
        "QES_LOG_PRIVACY_KEY": TEST_LOG_PRIVACY_KEY,
        # ... and one log origin (the default derives it from public_url, port included).
        "QES__LOG__ORIGIN": "qes-signer.test/log",
        **extra,
    }


@dataclass
class SignerProcess:
    """`qes serve` in a child process (for kill, restart and multi-worker tests)."""

    env: Mapping[str, str]
    port: int
    log: Path
    #: The client side of ``[server.tls]`` (trusting the test CA); None: plain http.
    tls: ssl.SSLContext | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> SignerProcess:
        self._spawn()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"signer exited: {self.log.read_text()[-2000:]}")
            if self.ready():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"signer not ready: {self.log.read_text()[-2000:]}")

    def _spawn(self) -> None:
        out = register_log(self.log).open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "signer", "serve", "--config", str(DEV_CONFIG)],
            env={**os.environ, **self.env},
            stdout=out,
            stderr=out,
            cwd=ROOT,
            start_new_session=True,
        )

    def ready(self) -> bool:
        return self.readyz_status() == 200

    def readyz_status(self) -> int | None:
        """/readyz's status code, or None while nothing answers."""
        try:
            with urllib.request.urlopen(  # noqa: S310
                f"{self.url}/readyz", timeout=1, context=self.tls
            ) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def spawn(self) -> SignerProcess:
        """Start without waiting for anything (to signal it in the middle of its start)."""
        self._spawn()
        return self

    def start_unready(self, timeout: float = 60.0) -> int:
        """Start and wait until /readyz answers at all; its status (a service that refuses
        to become ready still serves /readyz)."""
        self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"signer exited: {self.log.read_text()[-2000:]}")
            if (status := self.readyz_status()) is not None:
                return status
            time.sleep(0.1)
        raise RuntimeError(f"signer not listening: {self.log.read_text()[-2000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the supervisor and its workers). A SIGTERM may take
        ``server.shutdown_timeout`` (20 s) plus the stop grace (10 s) when a call hangs."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(60)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


class SignerTestServer(TestServer):
    """aiohttp's test server on the runner ``qes serve`` uses (its quiet parse-error path)."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return SignerRunner(self.app, **kwargs)


async def assert_hsm_clean(app: web.Application) -> None:
    """After a test on an in-process app: no session object and no live ephemeral key left in
    its HSM, and no CSC credential key."""
    from signer.http.kit.state import SERVICES

    services = app[SERVICES]
    leftover = await services.hsm.run(lambda s: [o for o in s.object_summary() if not o[2]])
    assert leftover == [], f"session objects left in the HSM after the test: {leftover}"
    assert services.hsm.live_ephemeral_keys() == 0
    credential_keys = await services.hsm.run(lambda s: s.credential_labels())
    assert credential_keys == set(), f"CSC credential keys left in the HSM: {credential_keys}"


@contextlib.contextmanager
def running_signer(
    *, token: SoftHsmToken, database_url: str, idp: RunningIdp, work: Path, **extra: str
) -> Iterator[SignerProcess]:
    """`qes serve` on a free port with the development config and ``extra`` overrides, logging
    to ``work/signer.log``; stopped on exit."""
    port = free_port()
    env = service_env(
        token=token, database_url=database_url, idp=idp, port=port, data_dir=work, **extra
    )
    process = SignerProcess(env, port, work / "signer.log").start()
    try:
        yield process
    finally:
        process.stop()


def api_headers(token: str, *, operation: bool = True, **extra: Any) -> dict[str, str]:
    """Bearer ``token`` and ``extra`` headers. A token's jti starts one signing operation, so,
    like `qes sign` per chunk, each call names its own operation with a fresh
    ``Idempotency-Key`` (ignored by every other endpoint), unless ``extra`` gives one or
    ``operation=False`` (then the token's jti is the operation)."""
    headers = {"Authorization": f"Bearer {token}"}
    if operation and "Idempotency-Key" not in extra:
        headers["Idempotency-Key"] = f"op-{uuid.uuid4()}"
    return {**headers, **{k: str(v) for k, v in extra.items()}}


def qes(
    *args: str | Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`qes ARGS` as a child process (``env`` over this one's), for tests with no event loop to
    keep serving; a child, since the CLI sets up logging for its whole process."""
    return subprocess.run(
        [sys.executable, "-m", "signer", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=120,
    )


async def run_qes(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """`qes ARGS` in a child process without blocking the event loop (a test's service may be
    running on it); returns exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "signer",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    keep_output(f"qes {args[0] if args else ''}", out + err)
    return proc.returncode, out.decode(), err.decode()


async def sign_random(
    client: Any,
    token: str,
    profile: str | None = None,
    *,
    key: str | None = None,
    operation: bool = True,
) -> tuple[int, Any]:
    """POST one random SHA-256 digest to ``/api/v1/signatures`` through an aiohttp test client;
    returns the status and the JSON body (a problem for refusals). ``key``/``operation``: the
    ``Idempotency-Key`` as in :func:`api_headers`."""
    body: dict[str, Any] = {
        "hash_algorithm": "sha256",
        "hashes": [base64.b64encode(os.urandom(32)).decode()],
    }
    if profile:
        body["profile"] = profile
    headers = api_headers(token, operation=operation, **({"Idempotency-Key": key} if key else {}))
    resp = await client.post("/api/v1/signatures", json=body, headers=headers)
    return resp.status, await resp.json()


async def raw_exchange(port: int, data: bytes) -> tuple[int, str, bytes]:
    """Send raw bytes to 127.0.0.1:``port``; return the answer's status, its head (lower case,
    for header checks) and its body, read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode("latin-1").lower(), body


async def raw_request(
    client: TestClient[Any, Any], head: bytes, body: bytes = b""
) -> tuple[int, bytes]:
    """Send bytes aiohttp's client would refuse to send; return status and body."""
    framed = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    status, _, answer = await raw_exchange(client.port, framed)
    return status, answer


def qes_init(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    """`qes init ARGS` with the development config and ``env``, as a child process."""
    return qes("init", "--config", DEV_CONFIG, *extra, env=env)


@contextlib.contextmanager
def own_ca(
    token: SoftHsmToken, pg_admin: str, idp: RunningIdp, work: Path, prefix: str
) -> Iterator[tuple[dict[str, str], int]]:
    """A CA of a test's own: a scratch database, key labels ``<prefix>-…``, and `qes init`
    (the key ceremony on one machine, the offline root in ``token``'s second token); the
    environment for its `qes serve` and the port it is to listen on."""
    port = free_port()
    with scratch_database(pg_admin) as url:
        env = service_env(
            token=token, database_url=url, idp=idp, port=port, data_dir=work,
            **own_ca_labels(prefix),
        )  # fmt: skip
        env = {**env, **token.env()}
        made = qes_init(env)
        assert made.returncode == 0, made.stderr
        yield env, port
