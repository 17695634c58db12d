"""Configuration: one TOML file plus environment overrides, parsed into frozen settings.

Environment overrides use ``QES__SECTION__KEY=value`` (the value is read as a TOML literal when it
parses as one, else as a string), so ``QES__SERVER__PORT=9000`` or
``QES__DATABASE__URL=postgresql://…``. Secrets (HSM PIN, database URL) come from the environment
or from a file and are wrapped in :class:`~signer.secrets.Secret`. Any bad value raises
:class:`~signer.errors.ConfigError` whose message names the key, so a start fails with one line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ca.authority import CaNames, IssuancePolicy
from ca.errors import CaError
from idp_adapter.settings import IssuerSettings
from signer.errors import ConfigError
from signer.keys import HsmSettings
from signer.keys.types import Curve, HsmMember
from signer.secrets import Secret

T = TypeVar("T")
N = TypeVar("N", int, float)
S = TypeVar("S", bound=str)
ENV_PREFIX = "QES__"
DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
#: The curves of the keys the HSM makes (``hsm.curve``, ``ca.curve``).
CURVES: tuple[Curve, ...] = ("P-256", "P-384")


@dataclass(frozen=True)
class TlsSettings:
    """``[server.tls]``: the listener's certificate (RFC 8446; TLS 1.3 only unless
    ``min_version = "1.2"``) and the optional client-certificate CA (mutual TLS). The files
    are re-read when they change (``reload_seconds``), see :mod:`signer.tls`."""

    certificate_file: Path
    key_file: Path
    min_version: str = "1.3"
    client_ca_file: Path | None = None
    #: With ``client_ca_file``: "required" (every client presents a certificate) or "optional"
    #: (a client that presents one must chain to the CA; others still reach the bearer check).
    client_auth: str = "required"
    reload_seconds: float = 5.0


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8780
    public_url: str = "http://127.0.0.1:8780"
    workers: int = 1
    max_body_bytes: int = 1_048_576
    max_pdf_bytes: int = 20 * 1_048_576
    max_digests: int = 1000
    shutdown_timeout: float = 20.0
    log_format: str = "json"
    #: Connection hygiene (signer.http.kit.connections): seconds for the first request head, for
    #: a whole request body, idle between requests; connections per worker process.
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 15.0
    max_connections: int = 1000
    #: Anonymous endpoints (signer.policy.public_limits): requests per minute per client address and
    #: for all addresses together, shared by every replica; 0: no limit.
    public_per_address_per_minute: int = 600
    public_total_per_minute: int = 6000
    tls: TlsSettings | None = None
    #: Development only: an http ``public_url`` on a host that is not loopback.
    allow_http_public_url: bool = False
    #: Strict-Transport-Security max-age (RFC 6797) sent when TLS is on or public_url is https.
    hsts_max_age: int = 31_536_000
    #: One structured line per request (signer.access_log); off by default.
    access_log: bool = False
    #: An Idempotency-Key whose request neither finished nor failed after this long belongs to
    #: a process that died: a retry with the key runs the request afresh. Keep it above the
    #: longest request (a large batch with time-stamps).
    idempotency_abandon_seconds: int = 120


@dataclass(frozen=True)
class MetricsSettings:
    """``[metrics]``: Prometheus metrics on their own listener (signer.metrics), off unless
    ``enabled``; with ``server.workers > 1`` one scrape holds every worker's counts."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9780


@dataclass(frozen=True)
class DatabaseSettings:
    url: Secret | None = None
    pool_min: int = 2
    pool_max: int = 10
    command_timeout: float = 5.0


@dataclass(frozen=True)
class CaSettings:
    names: CaNames
    policy: IssuancePolicy
    root_label: str = "qes-root-ca"
    issuing_label: str = "qes-issuing-ca"
    curve: Curve = "P-256"
    root_lifetime: timedelta = timedelta(days=3650 * 2)
    issuing_lifetime: timedelta = timedelta(days=3650)
    #: The CRL of the issuing CA that certified a TSA certificate, named in it as its CRL
    #: distribution point; ``{key_id}`` stands for that CA's subjectKeyIdentifier in hex, so
    #: every issuing CA generation keeps a CRL of its own (served at /ca/issuing/{key_id}.crl).
    issuing_crl_url: str = "http://127.0.0.1:8780/ca/issuing/{key_id}.crl"
    #: That CA's certificate, the TSA certificate's caIssuers (RFC 5280 §4.2.2.1), likewise.
    issuing_certificate_url: str = "http://127.0.0.1:8780/ca/issuing/{key_id}.cer"
    #: The delegated OCSP responder's key (RFC 6960 §4.2.2.2), made by `qes init`, with one
    #: certificate from the root and one from the issuing CA (served at /ocsp).
    ocsp_label: str = "qes-ocsp"
    ocsp_common_name: str = "QES Signer Development OCSP Responder"
    #: How often each worker checks whether `qes ca switch` made its generation past.
    switch_check_seconds: float = 60.0


@dataclass(frozen=True)
class TsaSettings:
    """The signature-time-stamp source (RFC 3161; STANDARDS.md §3).

    Built in (``url`` None): a TSA key in the HSM labelled ``label``, created by ``qes init``
    with a certificate from the issuing CA, also served at ``POST /tsa``. External: the RFC 3161
    service at ``url`` whose tokens must chain to the certificates in ``trust_anchor_file``.
    Either way a token whose genTime is more than ``max_clock_skew`` from the signer's clock
    refuses the signature (the key is destroyed, nothing is released). The built-in TSA key
    signs only during ``key_usage`` from its certificate's start (its privateKeyUsagePeriod),
    shorter than the certificate's ``lifetime``, so its last time-stamps stay verifiable for
    the rest of the certificate's life (EN 319 421 §7.7.4).
    """

    label: str = "qes-tsa"
    common_name: str = "QES Signer Development Time-Stamping Unit"
    policy_oid: str = "1.3.6.1.4.1.32473.1.2"
    lifetime: timedelta = timedelta(days=3 * 365)
    key_usage: timedelta = timedelta(days=365)
    accuracy: timedelta = timedelta(seconds=1)
    max_clock_skew: timedelta = timedelta(seconds=5)
    url: str | None = None
    trust_anchor_file: Path | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class OidcClientSettings:
    """A browser surface's OpenID Connect client at the IdP (RFC 6749 §2, OIDC Core §3.1).

    ``issuer`` names an ``[issuers.*]`` entry whose ``issuer`` URL is the OpenID Provider.
    """

    client_id: str
    client_secret: Secret
    issuer: str
    scope: str = "openid profile email"


@dataclass(frozen=True)
class AuditUiSettings(OidcClientSettings):
    """The audit (and approvals) web UI's OpenID Connect client.

    The redirect URI is ``{public_url}/audit/callback``. Sessions end after ``idle`` without a
    request or ``lifetime`` after login, whichever comes first.
    """

    scope: str = "openid profile email roles"
    idle: timedelta = timedelta(minutes=30)
    lifetime: timedelta = timedelta(hours=8)


#: Default retention of signing records: 7 years (2557 days, leap days included).
DEFAULT_RETENTION_DAYS = 2557
#: Shortest retention accepted: one year, so a typo cannot make `qes audit purge` erase the
#: recent evidence a dispute or an incident investigation needs.
MIN_RETENTION_DAYS = 365


@dataclass(frozen=True)
class AuditSettings:
    """Auditor role, optional web UI, and how long signing records are kept.

    ``retention_days``: `qes audit purge` erases the personal payload only of records older
    than this (GDPR Art. 5(1)(e) storage limitation and Art. 17 erasure, against the evidence
    a trust service keeps, eIDAS Art. 24(2)(h)); the log entries stay.
    ``finished_requests_keep_hours``: web-signing requests that ended (and their PDFs) are
    deleted this long after (``signer.flows.request_retention``); their records stay.
    """

    role: str = "qes-auditor"
    ui: AuditUiSettings | None = None
    retention_days: int = DEFAULT_RETENTION_DAYS
    finished_requests_keep_hours: int = 168


@dataclass(frozen=True)
class WebSigningSettings(OidcClientSettings):
    """Web apps send a person to sign (issue 4): the signer's own OIDC client at the IdP.

    Its ``issuer`` entry also gives the subject mapping of the certificate; the redirect URI
    is ``{public_url}/sign/callback``. Every login is fresh (``prompt=login``, ``max_age``;
    OIDC Core §3.1.2.1) and its ``auth_time`` must follow the request's creation.
    ``acr_levels`` orders the ``acr`` values relying parties may require, weakest first.
    """

    request_lifetime: timedelta = timedelta(minutes=15)
    max_age: timedelta = timedelta(minutes=5)
    acr_levels: tuple[str, ...] = ()
    #: The least ``acr`` (one of ``acr_levels``) of a CSC v2 OAuth2 credential authorisation.
    credential_acr: str | None = None


@dataclass(frozen=True)
class ApprovalsSettings:
    """m-of-n approval of batch signatures (issue 7): how long a held request waits, and the
    approvers' web UI's OIDC client (redirect URI ``{public_url}/approvals/callback``; ``ui``
    None: no web UI, the API and ``qes approvals`` still work)."""

    request_lifetime: timedelta = timedelta(hours=24)
    ui: AuditUiSettings | None = None


@dataclass(frozen=True)
class LogSettings:
    """The transparency log (issue 5): checkpoint signer and entry privacy key.

    ``origin`` is the checkpoint's first line and the note key name (C2SP tlog-checkpoint:
    a schema-less URL identifying the log). ``privacy_key`` is the HMAC key of the entries'
    keyed commitments (``ca.logentry``), hex, from ``privacy_key_env`` (default
    ``QES_LOG_PRIVACY_KEY``) or ``privacy_key_file``; when neither is set the service uses
    ``<data_dir>/log-privacy.key``, which ``qes init`` creates for development.
    """

    origin: str
    key_label: str = "qes-log"
    checkpoint_interval_seconds: float = 5.0
    privacy_key: Secret | None = None
    privacy_key_id: str = "k1"
    #: True when ``origin`` was not configured but derived from ``server.public_url``.
    origin_derived: bool = False
    #: Refusals before authentication (signer.policy.refusals): at most
    #: ``refusals_per_source`` entries per client address and ``refusals_total`` for all
    #: addresses per window; the rest are counted in one aggregate entry per window.
    refusal_window_seconds: int = 60
    refusals_per_source: int = 10
    refusals_total: int = 600
    #: Where the newest published checkpoint is also kept, outside the database (issue 14,
    #: signer.translog.anchor): storage that does not fail over or restore with PostgreSQL.
    anchor_file: Path | None = None


@dataclass(frozen=True)
class PolicySettings:
    """The signing policy and the kill switch (``signer.policy.rules``).

    ``file`` None: no policy file, each issuer's ``profiles`` decide (as before). The file is
    checked every ``reload_seconds`` and swapped when it changed and validates. ``admin_role``
    is the role (``roles_claim``) a token needs for the admin API (suspend/resume)."""

    file: Path | None = None
    reload_seconds: float = 1.0
    admin_role: str = "qes-admin"


@dataclass(frozen=True)
class CscSettings:
    """The Cloud Signature Consortium API (issue 6; ``signer.http.csc``).

    A credential lives as long as its certificate (``ca.validity_seconds``); its SAD lives
    ``sad_lifetime`` at most (never past the credential). ``max_active_credentials`` bounds the
    unused credentials one identity may hold (each is a key in the HSM); ``max_signatures`` is
    the most hashes one authorization may cover (CSC ``multisign``); every
    ``sweep_interval_seconds`` each process destroys the keys of expired credentials.
    """

    sad_lifetime: timedelta = timedelta(minutes=5)
    max_active_credentials: int = 5
    max_signatures: int = 100
    sweep_interval_seconds: float = 5.0


@dataclass(frozen=True)
class SweeperSettings:
    """What a crash left half-done is ended by every replica's sweeper (``signer.signing.sweeper``):
    every ``interval_seconds``, batch records 'issued' for longer than
    ``issued_after_seconds`` and web-signing/approval requests still 'signing'
    ``signing_after_seconds`` past their expiry. Both must exceed ``hsm.call_timeout_seconds``
    plus the commit timeouts (a live request is never ended under its feet). On the same
    interval every replica resends webhooks still due (``signer.flows.webhooks``): an ended
    request's undelivered webhook neither ended nor attempted within
    ``webhook_retry_after_seconds``, which must exceed the live retry loop's longest pause
    (60 s backoff plus the 10 s timeout), or a live delivery could be sent twice."""

    interval_seconds: float = 30.0
    issued_after_seconds: float = 120.0
    signing_after_seconds: float = 120.0
    webhook_retry_after_seconds: float = 120.0


@dataclass(frozen=True)
class ClientsSettings:
    """Relying-party credentials (``qes client``, issue 17): after ``qes client rotate`` the
    previous secret keeps working ``secret_grace_seconds`` (0: not at all), so the RP can roll
    its replicas without downtime."""

    secret_grace_seconds: int = 86400


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    database: DatabaseSettings
    hsm: HsmSettings
    ca: CaSettings
    tsa: TsaSettings
    issuers: tuple[IssuerSettings, ...]
    audit: AuditSettings
    data_dir: Path
    log: LogSettings
    web_signing: WebSigningSettings | None = None
    approvals: ApprovalsSettings = ApprovalsSettings()
    policy: PolicySettings = PolicySettings()
    csc: CscSettings = CscSettings()
    sweeper: SweeperSettings = SweeperSettings()
    metrics: MetricsSettings = MetricsSettings()
    clients: ClientsSettings = ClientsSettings()


class _Section:
    """Typed reads from one TOML table, each error naming ``section.key``."""

    def __init__(self, name: str, table: Mapping[str, Any]) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(f"{name}: expected a table")
        self.name = name
        self._table = dict(table)
        self._used: set[str] = set()

    def get(self, key: str, kind: type[T] | tuple[type, ...], default: Any = ...) -> Any:
        self._used.add(key)
        if key not in self._table:
            if default is ...:
                raise ConfigError(f"{self.name}.{key}: required setting is missing")
            return default
        value = self._table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{self.name}.{key}: expected {_kind_name(kind)}, got {value!r}")
        return value

    def bounded(self, key: str, kind: type[N], default: N, lo: float, hi: float, why: str) -> N:
        """``key`` as :meth:`get` reads it, refused with ``why`` unless ``lo <= value <= hi``."""
        value: N = self.get(key, kind, default)
        self.check(key, lo <= value <= hi, why)
        return value

    def one_of(self, key: str, default: S, choices: tuple[S, ...], why: str) -> S:
        """``key``, a string, refused with ``why`` unless it is one of ``choices``."""
        value: S = self.get(key, str, default)
        self.check(key, value in choices, why)
        return value

    def check(self, key: str, ok: bool, why: str) -> None:
        if not ok:
            raise ConfigError(f"{self.name}.{key}: {why}")

    def done(self) -> None:
        unknown = sorted(set(self._table) - self._used)
        if unknown:
            raise ConfigError(f"{self.name}.{unknown[0]}: unknown setting")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load_settings(path: Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (TOML), apply ``QES__…`` overrides from ``env`` and validate everything."""
    env = os.environ if env is None else env
    raw = read_raw(path, env)
    base = Path(path).parent if path is not None else Path.cwd()
    return _build(raw, env, base)


def read_raw(path: Path | None, env: Mapping[str, str]) -> dict[str, Any]:
    """The TOML at ``path`` (nothing: empty) with the ``QES__…`` overrides of ``env`` applied."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
    _apply_env(raw, env)
    return raw


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        table = raw
        for part in parts[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{name}: {'.'.join(parts[:-1])} is not a table")
        table[parts[-1]] = _literal(text)


def _literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _build(raw: dict[str, Any], env: Mapping[str, str], base: Path) -> Settings:
    known = {
        "data_dir",
        "server",
        "database",
        "hsm",
        "ca",
        "tsa",
        "issuers",
        "audit",
        "log",
        "web_signing",
        "approvals",
        "policy",
        "csc",
        "sweeper",
        "metrics",
        "clients",
        # The offline root's token: read by the ceremony commands only
        # (signer.settings.offline); the service's settings never carry its PIN.
        "offline",
    }
    for key in raw:
        if key not in known:
            raise ConfigError(f"{key}: unknown setting")
    data_dir = raw.get("data_dir", ".qes")
    if not isinstance(data_dir, str):
        raise ConfigError(f"data_dir: expected a string, got {data_dir!r}")
    server = _server(_Section("server", raw.get("server", {})), base)
    settings = Settings(
        server=server,
        database=_database(_Section("database", raw.get("database", {})), env, base),
        hsm=_hsm(_Section("hsm", raw.get("hsm", {})), env, base, server),
        ca=_ca(_Section("ca", raw.get("ca", {})), server),
        tsa=_tsa(_Section("tsa", raw.get("tsa", {})), base),
        issuers=_issuers(raw.get("issuers", {})),
        audit=_audit(_Section("audit", raw.get("audit", {})), env, base),
        data_dir=(base / data_dir).resolve(),
        log=_log(_Section("log", raw.get("log", {})), env, base, server),
        web_signing=_web_signing(_Section("web_signing", raw.get("web_signing", {})), env, base),
        approvals=_approvals(_Section("approvals", raw.get("approvals", {})), env, base),
        policy=_policy(_Section("policy", raw.get("policy", {})), base),
        csc=_csc(_Section("csc", raw.get("csc", {})), server),
        sweeper=_sweeper(_Section("sweeper", raw.get("sweeper", {}))),
        metrics=_metrics(_Section("metrics", raw.get("metrics", {}))),
        clients=_clients(_Section("clients", raw.get("clients", {}))),
    )
    ui = settings.audit.ui
    if ui is not None and ui.issuer not in {i.name for i in settings.issuers}:
        raise ConfigError(f"audit.ui_issuer: no [issuers.{ui.issuer}] is configured")
    approver_ui = settings.approvals.ui
    if approver_ui is not None and approver_ui.issuer not in {i.name for i in settings.issuers}:
        raise ConfigError(f"approvals.ui_issuer: no [issuers.{approver_ui.issuer}] is configured")
    web = settings.web_signing
    if web is not None and web.issuer not in {i.name for i in settings.issuers}:
        raise ConfigError(f"web_signing.issuer: no [issuers.{web.issuer}] is configured")
    return settings


def _clients(s: _Section) -> ClientsSettings:
    d = ClientsSettings()
    grace = s.bounded(
        "secret_grace_seconds",
        int,
        d.secret_grace_seconds,
        0,
        30 * 86400,
        "must be 0 .. 2592000 (30 days)",
    )
    s.done()
    return ClientsSettings(secret_grace_seconds=grace)


def _sweeper(s: _Section) -> SweeperSettings:
    d = SweeperSettings()
    values = {
        key: s.bounded(
            key, float, getattr(d, key), low, 86400, f"must be between {low:g} and 86400"
        )
        for key, low in (
            ("interval_seconds", 0.1),
            ("issued_after_seconds", 1.0),
            ("signing_after_seconds", 1.0),
            ("webhook_retry_after_seconds", 1.0),
        )
    }
    s.done()
    return SweeperSettings(**values)


def _connection_limits(s: _Section, d: ServerSettings) -> dict[str, Any]:
    """Connection hygiene and anonymous endpoints' limits (issue 17) of ``[server]``."""
    limits: dict[str, Any] = {}
    for key in ("header_timeout", "body_timeout", "keepalive_timeout"):
        limits[key] = float(s.get(key, (int, float), getattr(d, key)))
        s.check(key, 0.1 <= limits[key] <= 3600, "must be between 0.1 and 3600 seconds")
    limits["max_connections"] = s.bounded(
        "max_connections", int, d.max_connections, 1, 1_000_000, "must be 1 .. 1000000"
    )
    for key in ("public_per_address_per_minute", "public_total_per_minute"):
        limits[key] = s.bounded(
            key, int, getattr(d, key), 0, 10_000_000, "must be 0 (no limit) .. 10000000"
        )
    return limits


def _server(s: _Section, base: Path) -> ServerSettings:
    d = ServerSettings()
    port = s.bounded("port", int, d.port, 0, 65535, "must be between 0 and 65535")
    public_url = s.get("public_url", str, f"http://127.0.0.1:{port}").rstrip("/")
    s.check("public_url", public_url.startswith(("http://", "https://")), "must be an http(s) URL")
    allow_http = s.get("allow_http_public_url", bool, d.allow_http_public_url)
    s.check(
        "public_url",
        public_url.startswith("https://") or allow_http or _loopback(public_url),
        "must be an https URL (allow_http_public_url = true is for development only)",
    )
    tls_table = s.get("tls", dict, None)
    result = ServerSettings(
        host=s.get("host", str, d.host),
        port=port,
        public_url=public_url,
        workers=s.bounded("workers", int, d.workers, 1, 64, "must be between 1 and 64"),
        max_body_bytes=s.bounded(
            "max_body_bytes",
            int,
            d.max_body_bytes,
            1024,
            256 * 1024 * 1024,
            "must be 1 KiB .. 256 MiB",
        ),
        max_pdf_bytes=s.bounded(
            "max_pdf_bytes",
            int,
            d.max_pdf_bytes,
            1024,
            1024 * 1024 * 1024,
            "must be 1 KiB .. 1 GiB",
        ),
        max_digests=s.bounded(
            "max_digests", int, d.max_digests, 1, 100_000, "must be between 1 and 100000"
        ),
        shutdown_timeout=s.get("shutdown_timeout", float, d.shutdown_timeout),
        log_format=s.one_of(
            "log_format", d.log_format, ("json", "console"), "must be 'json' or 'console'"
        ),
        **_connection_limits(s, d),
        tls=None if tls_table is None else _tls(_Section("server.tls", tls_table), base),
        allow_http_public_url=allow_http,
        hsts_max_age=s.bounded(
            "hsts_max_age", int, d.hsts_max_age, 0, 2**31 - 1, "must be 0 or more seconds"
        ),
        access_log=s.get("access_log", bool, d.access_log),
        idempotency_abandon_seconds=s.bounded(
            "idempotency_abandon_seconds",
            int,
            d.idempotency_abandon_seconds,
            5,
            3600,
            "must be 5 .. 3600 seconds",
        ),
    )
    s.done()
    return result


def _loopback(url: str) -> bool:
    """An http URL that only this machine can reach is a development set-up by construction."""
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _tls(s: _Section, base: Path) -> TlsSettings:
    d_min, d_auth, d_reload = "1.3", "required", 5.0
    client_ca = s.get("client_ca_file", str, None)
    result = TlsSettings(
        certificate_file=base / s.get("certificate_file", str),
        key_file=base / s.get("key_file", str),
        min_version=s.one_of("min_version", d_min, ("1.2", "1.3"), "must be '1.3' or '1.2'"),
        client_ca_file=None if client_ca is None else base / client_ca,
        client_auth=s.one_of(
            "client_auth", d_auth, ("required", "optional"), "'required' or 'optional'"
        ),
        reload_seconds=s.bounded(
            "reload_seconds", float, d_reload, 0.1, 3600, "must be 0.1 .. 3600 seconds"
        ),
    )
    s.done()
    return result


def _metrics(s: _Section) -> MetricsSettings:
    d = MetricsSettings()
    port = s.bounded("port", int, d.port, 0, 65535, "must be between 0 and 65535")
    result = MetricsSettings(
        enabled=s.get("enabled", bool, d.enabled), host=s.get("host", str, d.host), port=port
    )
    s.done()
    return result


def _secret(
    s: _Section, key: str, env: Mapping[str, str], base: Path, default_env: str
) -> Secret | None:
    """A secret given as ``key_env`` (variable name) or ``key_file`` (path), never inline."""
    s.check(key, key not in s._table, f"put secrets in {key}_env or {key}_file, not inline")
    var = s.get(f"{key}_env", str, default_env)
    file = s.get(f"{key}_file", str, None)
    if file is not None:
        try:
            return Secret((base / file).read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(f"{s.name}.{key}_file: cannot read {file}: {exc.strerror}") from exc
    value = env.get(var)
    return Secret(value) if value else None


def _oidc_client(
    s: _Section, env: Mapping[str, str], base: Path, prefix: str, default_env: str
) -> tuple[str, Secret] | None:
    """The OpenID Connect client a UI logs in with (OIDC Core §2, ``client_secret_basic``):
    ``{prefix}client_id`` and its secret, which is then required; None without a client id."""
    client_id: str | None = s.get(f"{prefix}client_id", str, None)
    if client_id is None:
        return None
    key = f"{prefix}client_secret"
    secret = _secret(s, key, env, base, default_env)
    s.check(key, secret is not None, f"set ${default_env} or a file")
    assert secret is not None
    return client_id, secret


def _database(s: _Section, env: Mapping[str, str], base: Path) -> DatabaseSettings:
    d = DatabaseSettings()
    url = s.get("url", str, None)
    s._table.pop("url", None)
    secret = Secret(url) if url else _secret(s, "url", env, base, "QES_DATABASE_URL")
    if secret is not None:
        s.check(
            "url",
            secret.reveal().startswith(("postgresql://", "postgres://")),
            "must be a postgresql:// URL",
        )
    pool_min = s.get("pool_min", int, d.pool_min)
    pool_max = s.get("pool_max", int, d.pool_max)
    s.check("pool_max", 1 <= pool_min <= pool_max <= 200, "need 1 <= pool_min <= pool_max <= 200")
    result = DatabaseSettings(
        url=secret,
        pool_min=pool_min,
        pool_max=pool_max,
        command_timeout=s.get("command_timeout", float, d.command_timeout),
    )
    s.done()
    return result


def _hsm(s: _Section, env: Mapping[str, str], base: Path, server: ServerSettings) -> HsmSettings:
    module = s.get("module", str, "/usr/lib/softhsm/libsofthsm2.so")
    label = s.get("token_label", str, "qes")
    pin = _secret(s, "pin", env, base, "QES_HSM_PIN")
    s.check("pin", pin is not None, "no HSM PIN: set QES_HSM_PIN or hsm.pin_file")
    sessions = s.get("sessions", (int, str), "auto")
    if sessions == "auto":
        # An in-process software HSM is CPU-bound: one session per core the process may use
        # (bench/run.py: with 2 workers on 2 cores, 1 session each beat 2 each end to end).
        # A network HSM is latency-bound and wants more: set a number.
        sessions = max(1, (os.cpu_count() or 1) // server.workers)
    s.check(
        "sessions",
        isinstance(sessions, int) and 1 <= sessions <= 256,
        "must be 'auto' or between 1 and 256",
    )
    call_timeout = s.get("call_timeout_seconds", float, 15.0)
    s.check("call_timeout_seconds", 0 < call_timeout <= 600, "must be > 0 and <= 600")
    backoff = s.get("reconnect_max_seconds", float, 5.0)
    s.check("reconnect_max_seconds", 0 < backoff <= 600, "must be > 0 and <= 600")
    standbys = s.get("standby", list, [])
    renew = s.get("reinitialise_after", int, 10_000)
    s.check("reinitialise_after", renew >= 0, "must be >= 0 (0: never)")
    assert pin is not None
    result = HsmSettings(
        module=module,
        token_label=label,
        pin=pin,
        sessions=sessions,
        curve=s.one_of("curve", "P-256", CURVES, "must be 'P-256' or 'P-384'"),
        module_env=_module_env(s),
        standbys=tuple(
            _hsm_member(_Section(f"hsm.standby[{i}]", t), label) for i, t in enumerate(standbys)
        ),
        call_timeout_seconds=call_timeout,
        reconnect_max_seconds=backoff,
        reinitialise_after=renew,
    )
    s.done()
    return result


def _hsm_member(s: _Section, default_label: str) -> HsmMember:
    """One more member of the HSM's HA group (the same token's keys, the same PIN)."""
    result = HsmMember(
        module=s.get("module", str),
        token_label=s.get("token_label", str, default_label),
        module_env=_module_env(s),
    )
    s.done()
    return result


def _module_env(s: _Section) -> tuple[tuple[str, str], ...]:
    table = s.get("module_env", dict, {})
    for name, value in table.items():
        s.check("module_env", isinstance(value, str), f"{name}: expected a string")
    return tuple(sorted(table.items()))


def _ca(s: _Section, server: ServerSettings) -> CaSettings:
    names = _wrap(
        s,
        "names",
        lambda: CaNames(
            country=s.get("country", str, "DE"),
            organization=s.get("organization", str, "QES Signer Development"),
            organization_identifier=s.get("organization_identifier", str, "NTRDE-HRB000000"),
            root_common_name=s.get("root_common_name", str, "QES Signer Development Root CA"),
            issuing_common_name=s.get(
                "issuing_common_name", str, "QES Signer Development Issuing CA"
            ),
        ),
    )
    validity = s.bounded(
        "validity_seconds", int, 600, 60, 600, "must be between 60 and 600 (10 minutes)"
    )
    backdate = s.get("backdate_seconds", int, 30)
    s.check("backdate_seconds", 0 <= backdate < validity, "must be >= 0 and below validity")
    policy = _wrap(
        s,
        "policy",
        lambda: IssuancePolicy(
            service_policy_oid=s.get("policy_oid", str, "1.3.6.1.4.1.32473.1.1"),
            ca_issuers_url=s.get("ca_issuers_url", str, f"{server.public_url}/ca/issuing.cer"),
            pds_url=s.get("pds_url", str, "https://example.com/qes-signer/pds"),
            crl_url=s.get("crl_url", str, f"{server.public_url}/ca/root.crl"),
            validity=timedelta(seconds=validity),
            backdate=timedelta(seconds=backdate),
        ),
    )
    issuing_urls = {
        name: s.get(name, str, f"{server.public_url}/ca/issuing/{{key_id}}.{suffix}")
        for name, suffix in (("issuing_crl_url", "crl"), ("issuing_certificate_url", "cer"))
    }
    for name, url in issuing_urls.items():
        s.check(name, url.startswith(("http://", "https://")), "must be an http(s) URL")
    result = CaSettings(
        names=names,
        policy=policy,
        curve=s.one_of("curve", "P-256", CURVES, "must be 'P-256' or 'P-384'"),
        root_label=s.get("root_label", str, "qes-root-ca"),
        issuing_label=s.get("issuing_label", str, "qes-issuing-ca"),
        **issuing_urls,
        ocsp_label=s.get("ocsp_label", str, "qes-ocsp"),
        ocsp_common_name=s.get("ocsp_common_name", str, "QES Signer Development OCSP Responder"),
        switch_check_seconds=s.bounded(
            "switch_check_seconds", float, 60.0, 1.0, 3600.0, "must be between 1 and 3600"
        ),
    )
    s.done()
    return result


def _tsa(s: _Section, base: Path) -> TsaSettings:
    d = TsaSettings()
    policy_oid = s.get("policy_oid", str, d.policy_oid)
    s.check("policy_oid", _is_oid(policy_oid), "must be a dotted OID such as 1.3.6.1.4.1.32473.1")
    lifetime = s.bounded(
        "lifetime_days", int, d.lifetime.days, 1, 3650, "must be between 1 and 3650"
    )
    key_usage = s.get("key_usage_days", int, d.key_usage.days)
    s.check("key_usage_days", 1 <= key_usage < lifetime, "must be at least 1, below lifetime_days")
    accuracy = s.get("accuracy_seconds", float, d.accuracy.total_seconds())
    s.check("accuracy_seconds", 0 < accuracy <= 60, "must be above 0 and at most 60")
    skew = s.get("max_clock_skew_seconds", float, d.max_clock_skew.total_seconds())
    s.check("max_clock_skew_seconds", 0 < skew <= 300, "must be above 0 and at most 300")
    url = s.get("url", str, None)
    if url is not None:
        s.check("url", url.startswith(("http://", "https://")), "must be an http(s) URL")
    anchor = s.get("trust_anchor_file", str, None)
    s.check(
        "trust_anchor_file",
        (url is None) == (anchor is None),
        "give it together with tsa.url (the external TSA's root), and only then",
    )
    timeout = s.get("timeout_seconds", float, d.timeout)
    s.check("timeout_seconds", 0 < timeout <= 60, "must be above 0 and at most 60")
    result = TsaSettings(
        label=s.get("label", str, d.label),
        common_name=s.get("common_name", str, d.common_name),
        policy_oid=policy_oid,
        lifetime=timedelta(days=lifetime),
        key_usage=timedelta(days=key_usage),
        accuracy=timedelta(seconds=accuracy),
        max_clock_skew=timedelta(seconds=skew),
        url=url,
        trust_anchor_file=(base / anchor).resolve() if anchor is not None else None,
        timeout=timeout,
    )
    s.done()
    return result


def _is_oid(text: str) -> bool:
    arcs = text.split(".")
    return len(arcs) >= 2 and all(a.isdigit() and (a == "0" or a[0] != "0") for a in arcs)


def _wrap(s: _Section, what: str, make: Callable[[], T]) -> T:
    try:
        return make()
    except CaError as exc:
        raise ConfigError(f"{s.name}: {exc}") from exc


def _issuers(raw: Any) -> tuple[IssuerSettings, ...]:
    if not isinstance(raw, Mapping):
        raise ConfigError("issuers: expected a table of issuers")
    return tuple(_issuer(name, _Section(f"issuers.{name}", table)) for name, table in raw.items())


def _issuer(name: str, s: _Section) -> IssuerSettings:
    kwargs: dict[str, Any] = {
        "name": name,
        "issuer": s.get("issuer", str),
        "audience": s.get("audience", str),
        "subject_type": s.get("subject_type", str, "natural"),
        "subject": dict(s.get("subject", dict, {})),
        "profiles": tuple(s.get("profiles", list, ["advanced"])),
        "require_jti": _require_jti(s),
        "required_claims": dict(s.get("required_claims", dict, {})),
        "match_claims": dict(s.get("match_claims", dict, {})),
        "roles_claim": s.get("roles_claim", str, "roles"),
        "groups_claim": s.get("groups_claim", str, "groups"),
        "grants_roles": frozenset(s.get("grants_roles", list, [])),
        "token_types": frozenset(s.get("token_types", list, ["at+jwt"])),
        "jwks_uri": s.get("jwks_uri", str, None),
        "leeway": timedelta(seconds=s.get("leeway_seconds", int, 30)),
        "sender_constraint": s.get("sender_constraint", str, "none"),
        "dpop_nonce": s.get("dpop_nonce", bool, False),
        "dpop_max_age": timedelta(seconds=s.get("dpop_max_age_seconds", int, 60)),
    }
    if "dpop_algorithms" in s._table:
        kwargs["dpop_algorithms"] = tuple(s.get("dpop_algorithms", list))
    kwargs["default_profile"] = s.get(
        "default_profile", str, kwargs["profiles"][0] if kwargs["profiles"] else "advanced"
    )
    if "algorithms" in s._table:
        kwargs["algorithms"] = tuple(s.get("algorithms", list))
    s.done()
    try:
        return IssuerSettings(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{s.name}: {exc}") from exc


def _require_jti(s: _Section) -> bool | str:
    """``true`` (default: a token's ``jti`` starts one signing operation), ``false``, or
    ``"always"`` (tokens without ``jti`` refused)."""
    value: bool | str = s.get("require_jti", (bool, str), True)
    s.check("require_jti", isinstance(value, bool) or value == "always", 'true, false or "always"')
    return value


def _audit(s: _Section, env: Mapping[str, str], base: Path) -> AuditSettings:
    role = s.get("role", str, "qes-auditor")
    client = _oidc_client(s, env, base, "ui_", "QES_AUDIT_UI_CLIENT_SECRET")
    ui = None
    if client is not None:
        idle = s.bounded("ui_idle_minutes", int, 30, 1, 24 * 60, "must be between 1 and 1440")
        hours = s.bounded("ui_max_hours", int, 8, 1, 24, "must be between 1 and 24")
        ui = AuditUiSettings(
            *client,
            issuer=s.get("ui_issuer", str),
            scope=s.get("ui_scope", str, AuditUiSettings.scope),
            idle=timedelta(minutes=idle),
            lifetime=timedelta(hours=hours),
        )
    retention = s.bounded(
        "retention_days",
        int,
        DEFAULT_RETENTION_DAYS,
        MIN_RETENTION_DAYS,
        100 * 366,
        f"must be {MIN_RETENTION_DAYS} .. 36600 days",
    )
    result = AuditSettings(
        role=role,
        ui=ui,
        retention_days=retention,
        finished_requests_keep_hours=s.bounded(
            "finished_requests_keep_hours",
            int,
            AuditSettings.finished_requests_keep_hours,
            1,
            366 * 24,
            "must be 1 .. 8784 hours",
        ),
    )
    s.done()
    return result


def _policy(s: _Section, base: Path) -> PolicySettings:
    file = s.get("file", str, None)
    s.check("file", file is None or bool(file), "must be a path")
    role = s.get("admin_role", str, "qes-admin")
    s.check("admin_role", bool(role.strip()), "must not be empty")
    result = PolicySettings(
        file=None if file is None else (base / file).resolve(),
        reload_seconds=s.bounded(
            "reload_seconds", float, 1.0, 0.1, 60, "must be between 0.1 and 60"
        ),
        admin_role=role,
    )
    s.done()
    return result


def _web_signing(s: _Section, env: Mapping[str, str], base: Path) -> WebSigningSettings | None:
    client = _oidc_client(s, env, base, "", "QES_WEB_SIGNING_CLIENT_SECRET")
    if client is None:
        s.done()
        return None
    levels = s.get("acr_levels", list, [])
    s.check(
        "acr_levels",
        all(isinstance(v, str) and v for v in levels) and len(set(levels)) == len(levels),
        "must be distinct non-empty strings, weakest first",
    )
    credential_acr = s.get("credential_acr", str, None)
    s.check(
        "credential_acr",
        credential_acr is None or credential_acr in levels,
        "must be one of acr_levels",
    )
    result = WebSigningSettings(
        *client,
        issuer=s.get("issuer", str),
        scope=s.get("scope", str, WebSigningSettings.scope),
        request_lifetime=timedelta(
            minutes=s.bounded("request_minutes", int, 15, 1, 24 * 60, "must be between 1 and 1440")
        ),
        max_age=timedelta(
            seconds=s.bounded("max_age_seconds", int, 300, 30, 3600, "must be between 30 and 3600")
        ),
        acr_levels=tuple(levels),
        credential_acr=credential_acr,
    )
    s.done()
    return result


def _approvals(s: _Section, env: Mapping[str, str], base: Path) -> ApprovalsSettings:
    client = _oidc_client(s, env, base, "ui_", "QES_APPROVALS_UI_CLIENT_SECRET")
    ui = None
    if client is not None:
        ui = AuditUiSettings(
            *client,
            issuer=s.get("ui_issuer", str),
            scope=s.get("ui_scope", str, AuditUiSettings.scope),
        )
    result = ApprovalsSettings(
        request_lifetime=timedelta(
            minutes=s.bounded(
                "request_minutes", int, 24 * 60, 1, 14 * 24 * 60, "must be between 1 and 20160"
            )
        ),
        ui=ui,
    )
    s.done()
    return result


def _log(s: _Section, env: Mapping[str, str], base: Path, server: ServerSettings) -> LogSettings:
    default_origin = urlsplit(server.public_url).netloc + "/log"
    origin = s.get("origin", str, None)
    derived = origin is None
    origin = default_origin if origin is None else origin
    s.check(
        "origin",
        bool(origin) and "+" not in origin and not any(c.isspace() for c in origin),
        "must be non-empty without spaces or '+' (it is the note key name)",
    )
    key_id = s.get("privacy_key_id", str, "k1")
    s.check("privacy_key_id", 0 < len(key_id) <= 64 and key_id.isascii(), "1..64 ASCII chars")
    per_source = s.bounded("refusals_per_source", int, 10, 1, 100_000, "must be 1 .. 100000")
    total = s.get("refusals_total", int, 600)
    s.check(
        "refusals_total",
        per_source <= total <= 1_000_000,
        "must be between refusals_per_source and 1000000",
    )
    result = LogSettings(
        origin=origin,
        key_label=s.get("key_label", str, "qes-log"),
        checkpoint_interval_seconds=s.bounded(
            "checkpoint_interval_seconds", float, 5.0, 0.1, 3600, "must be 0.1 .. 3600"
        ),
        privacy_key=_secret(s, "privacy_key", env, base, "QES_LOG_PRIVACY_KEY"),
        privacy_key_id=key_id,
        origin_derived=derived,
        refusal_window_seconds=s.bounded(
            "refusal_window_seconds", int, 60, 1, 3600, "must be 1 .. 3600"
        ),
        refusals_per_source=per_source,
        refusals_total=total,
        anchor_file=_optional_path(s, "anchor_file", base),
    )
    s.done()
    return result


def _optional_path(s: _Section, key: str, base: Path) -> Path | None:
    value: str | None = s.get(key, str, None)
    if value is None:
        return None
    s.check(key, bool(value.strip()), "must be a path")
    return (base / value).resolve()


def _csc(s: _Section, server: ServerSettings) -> CscSettings:
    d = CscSettings()
    most = s.get("max_signatures", int, min(d.max_signatures, server.max_digests))
    s.check(
        "max_signatures",
        1 <= most <= server.max_digests,
        f"must be between 1 and server.max_digests ({server.max_digests})",
    )
    result = CscSettings(
        sad_lifetime=timedelta(
            seconds=s.bounded(
                "sad_lifetime_seconds",
                int,
                int(d.sad_lifetime.total_seconds()),
                10,
                600,
                "must be between 10 and 600",
            )
        ),
        max_active_credentials=s.bounded(
            "max_active_credentials",
            int,
            d.max_active_credentials,
            1,
            1000,
            "must be between 1 and 1000",
        ),
        max_signatures=most,
        sweep_interval_seconds=s.bounded(
            "sweep_interval_seconds",
            float,
            d.sweep_interval_seconds,
            0.1,
            300,
            "must be between 0.1 and 300",
        ),
    )
    s.done()
    return result
