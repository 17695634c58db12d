"""Configuration: the committed dev config loads; every bad value names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from signer.errors import ConfigError
from signer.settings.config import load_settings
from tests.support.service import DEV_CONFIG

ENV = {"QES_HSM_PIN": "1234"}


def test_dev_config_loads_with_secrets_from_the_environment() -> None:
    s = load_settings(DEV_CONFIG, env={**ENV, "QES_DATABASE_URL": "postgresql://db/qes"})
    assert s.hsm.pin.reveal() == "1234" and "1234" not in repr(s)
    assert s.database.url is not None and "postgresql://db/qes" not in repr(s)
    assert [i.name for i in s.issuers] == ["demo_organisations", "demo_people"]
    assert s.ca.policy.validity.total_seconds() == 600


def test_environment_overrides_are_typed() -> None:
    s = load_settings(
        DEV_CONFIG,
        env={
            **ENV,
            "QES__SERVER__PORT": "9001",
            "QES__SERVER__LOG_FORMAT": "console",
            "QES__ISSUERS__DEMO_PEOPLE__REQUIRE_JTI": "true",
        },
    )
    assert s.server.port == 9001 and s.server.log_format == "console"
    assert s.issuers[1].require_jti is True


def test_pin_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "pin").write_text("9876\n")
    cfg = tmp_path / "qes.toml"
    cfg.write_text('[hsm]\npin_file = "pin"\n')
    assert load_settings(cfg, env={}).hsm.pin.reveal() == "9876"


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("", {}, "hsm.pin: no HSM PIN: set QES_HSM_PIN or hsm.pin_file"),
        ('[hsm]\npin = "1234"\n', ENV, "hsm.pin: put secrets in pin_env or pin_file, not inline"),
        ("[server]\nport = 70000\n", ENV, "server.port: must be between 0 and 65535"),
        ("[server]\nworkers = 0\n", ENV, "server.workers: must be between 1 and 64"),
        ("[server]\ncolour = 1\n", ENV, "server.colour: unknown setting"),
        ("[ca]\nvalidity_seconds = 601\n", ENV, "ca.validity_seconds: must be between 60 and 600"),
        (
            "[sweeper]\nwebhook_retry_after_seconds = 0.5\n",
            ENV,
            "sweeper.webhook_retry_after_seconds: must be between 1 and 86400",
        ),
        ('[hsm]\ncurve = "P-521"\n', ENV, "hsm.curve: must be 'P-256' or 'P-384'"),
        ('[hsm]\nsessions = "many"\n', ENV, "hsm.sessions: must be 'auto' or between 1 and 256"),
        ("[hsm]\nsessions = 0\n", ENV, "hsm.sessions: must be 'auto' or between 1 and 256"),
        ('[ca]\ncountry = "Germany"\n', ENV, "ca: "),
        ('[database]\nurl = "mysql://x"\n', ENV, "database.url: must be a postgresql:// URL"),
        ('[issuers.x]\naudience = "a"\n', ENV, "issuers.x.issuer: required setting is missing"),
        (
            '[issuers.x]\nissuer = "http://idp.example.com"\naudience = "a"\n[issuers.x.subject]\n'
            'common_name = "{name}"\n',
            ENV,
            "issuers.x: issuer must use https",
        ),
        ("colour = 1\n", ENV, "colour: unknown setting"),
        ("[server\n", ENV, "config file"),
    ],
)
def test_bad_values_name_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    cfg = tmp_path / "qes.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env=env)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("workers", "cores", "expected"), [(1, 2, 2), (2, 2, 1), (4, 2, 1), (2, 8, 4)]
)
def test_auto_sessions_share_the_cores_among_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, cores: int, expected: int
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    cfg = tmp_path / "qes.toml"
    cfg.write_text(f'[server]\nworkers = {workers}\n[hsm]\nsessions = "auto"\n')
    assert load_settings(cfg, env=ENV).hsm.sessions == expected
    cfg.write_text(f"[server]\nworkers = {workers}\n[hsm]\nsessions = 3\n")
    assert load_settings(cfg, env=ENV).hsm.sessions == 3


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.toml"):
        load_settings(tmp_path / "nope.toml", env=ENV)


def test_retention_defaults_to_seven_years_and_refuses_less_than_one() -> None:
    assert load_settings(DEV_CONFIG, env=ENV).audit.retention_days == 2557
    s = load_settings(DEV_CONFIG, env={**ENV, "QES__AUDIT__RETENTION_DAYS": "3650"})
    assert s.audit.retention_days == 3650
    with pytest.raises(ConfigError, match=r"^audit\.retention_days: must be 365"):
        load_settings(DEV_CONFIG, env={**ENV, "QES__AUDIT__RETENTION_DAYS": "364"})


def test_csc_settings_defaults_overrides_and_bad_values() -> None:
    s = load_settings(DEV_CONFIG, env=ENV).csc
    assert (s.sad_lifetime.total_seconds(), s.max_active_credentials) == (300, 5)
    assert (s.max_signatures, s.sweep_interval_seconds) == (100, 5.0)
    s = load_settings(
        DEV_CONFIG,
        env={**ENV, "QES__CSC__SAD_LIFETIME_SECONDS": "60", "QES__CSC__MAX_SIGNATURES": "7"},
    ).csc
    assert (s.sad_lifetime.total_seconds(), s.max_signatures) == (60, 7)
    for key, value, message in (
        ("SAD_LIFETIME_SECONDS", "601", r"^csc\.sad_lifetime_seconds: must be between"),
        ("MAX_SIGNATURES", "1001", r"^csc\.max_signatures: must be between 1 and server"),
        ("MAX_ACTIVE_CREDENTIALS", "0", r"^csc\.max_active_credentials: must be between"),
        ("SWEEP_INTERVAL_SECONDS", '"often"', r"^csc\.sweep_interval_seconds: expected a number"),
        ("COLOUR", "1", r"^csc\.colour: unknown setting"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(DEV_CONFIG, env={**ENV, f"QES__CSC__{key}": value})


def test_log_origin_and_refusal_limits() -> None:
    derived = load_settings(DEV_CONFIG, env=ENV).log
    assert derived.origin == "127.0.0.1:8780/log" and derived.origin_derived is True
    assert (derived.refusal_window_seconds, derived.refusals_per_source) == (60, 10)
    assert derived.refusals_total == 600
    given = load_settings(
        DEV_CONFIG,
        env={**ENV, "QES__LOG__ORIGIN": "example.com/log", "QES__LOG__REFUSALS_PER_SOURCE": "3"},
    ).log
    assert given.origin == "example.com/log" and given.origin_derived is False
    assert given.refusals_per_source == 3
    for key, value in (
        ("REFUSAL_WINDOW_SECONDS", "0"),
        ("REFUSALS_PER_SOURCE", "0"),
        ("REFUSALS_TOTAL", "5"),  # below refusals_per_source (10)
        ("REFUSALS_TOTAL", '"many"'),
    ):
        with pytest.raises(ConfigError, match=f"log.{key.lower()}"):
            load_settings(DEV_CONFIG, env={**ENV, f"QES__LOG__{key}": value})


def _walk_values(value: object, seen: set[int]) -> list[object]:
    """Every value reachable from a settings object through its dataclass fields."""
    import dataclasses

    if id(value) in seen:
        return []
    seen.add(id(value))
    found: list[object] = [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            found += _walk_values(getattr(value, f.name), seen)
    elif isinstance(value, (tuple, list)):
        for item in value:
            found += _walk_values(item, seen)
    return found


def test_the_service_settings_never_hold_the_root_pin(tmp_path: Path) -> None:
    """Issue 15 item 1: `[offline]` (the root token) is read by the ceremony commands only;
    the service's settings carry neither its PIN nor its token label, whatever is set."""
    from signer.secrets import Secret
    from signer.settings.offline import load_offline_settings

    env = {**ENV, "QES_ROOT_PIN": "root-4711", "QES__OFFLINE__TOKEN_LABEL": "vault-root"}
    s = load_settings(DEV_CONFIG, env=env)
    secrets = [v.reveal() for v in _walk_values(s, set()) if isinstance(v, Secret)]
    assert "root-4711" not in secrets and "1234" in secrets
    assert "vault-root" not in repr(s)
    offline = load_offline_settings(DEV_CONFIG, env={"QES_ROOT_PIN": "root-4711"})
    assert offline is not None  # the offline side needs no online HSM PIN nor database
    assert offline.hsm.pin.reveal() == "root-4711" and offline.hsm.token_label == "qes-root"
    assert offline.transcript == s.data_dir / "ceremony" / "transcript.jsonl"
    assert load_offline_settings(DEV_CONFIG, env=ENV, required=False) is None
    with pytest.raises(ConfigError, match=r"offline\.pin: no root token PIN"):
        load_offline_settings(DEV_CONFIG, env=ENV)
    cfg = tmp_path / "qes.toml"
    cfg.write_text('[offline]\npin = "inline"\n')
    with pytest.raises(ConfigError, match=r"offline\.pin: put secrets in"):
        load_offline_settings(cfg, env={})
