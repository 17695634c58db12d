"""Production settings (issue 13): the https rule for ``public_url``, ``[server.tls]``,
``[metrics]`` and the access-log switch; the shipped production example loads; sd_notify sends
what systemd expects."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from signer.cli.sdnotify import notify
from signer.errors import ConfigError
from signer.settings.config import load_settings
from tests.support.service import ROOT

ENV = {"QES_HSM_PIN": "1234"}
PRODUCTION = ROOT / "deploy" / "production" / "qes.toml"


def _load(tmp_path: Path, text: str) -> object:
    cfg = tmp_path / "qes.toml"
    cfg.write_text(text)
    return load_settings(cfg, env=ENV)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://signer.example.com", True),
        ("http://127.0.0.1:8780", True),  # loopback: only this machine can reach it
        ("http://localhost:8780", True),
        ("http://signer.example.com", False),
        ("http://10.0.0.5:8780", False),
    ],
)
def test_public_url_must_be_https_unless_loopback_or_flagged(
    tmp_path: Path, url: str, allowed: bool
) -> None:
    text = f'[server]\npublic_url = "{url}"\n'
    if allowed:
        _load(tmp_path, text)
        return
    with pytest.raises(ConfigError, match=r"^server\.public_url: must be an https URL"):
        _load(tmp_path, text)
    s = _load(tmp_path, text + "allow_http_public_url = true\n")
    assert s.server.public_url == url  # type: ignore[attr-defined]


def test_tls_settings_resolve_against_the_config_file(tmp_path: Path) -> None:
    s = _load(
        tmp_path,
        '[server]\npublic_url = "https://s.example"\n[server.tls]\ncertificate_file = "t.crt"\n'
        'key_file = "/etc/qes/t.key"\nclient_ca_file = "ca.pem"\n',
    )
    tls = s.server.tls  # type: ignore[attr-defined]
    assert tls.certificate_file == tmp_path / "t.crt"
    assert tls.key_file == Path("/etc/qes/t.key")
    assert tls.client_ca_file == tmp_path / "ca.pem"
    assert (tls.min_version, tls.client_auth) == ("1.3", "required")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[server.tls]\nkey_file = "k"\n', "server.tls.certificate_file"),
        ('[server.tls]\ncertificate_file = "c"\nkey_file = "k"\nmin_version = "1.0"\n',
         "server.tls.min_version"),
        ('[server.tls]\ncertificate_file = "c"\nkey_file = "k"\nclient_auth = "maybe"\n',
         "server.tls.client_auth"),
        ('[server.tls]\ncertificate_file = "c"\nkey_file = "k"\ncipher = "x"\n',
         "server.tls.cipher"),
        ("[metrics]\nport = 70000\n", "metrics.port"),
        ('[metrics]\nenabled = "yes"\n', "metrics.enabled"),
        ('[server]\naccess_log = "on"\n', "server.access_log"),
        ("[server]\nidempotency_abandon_seconds = 1\n", "server.idempotency_abandon_seconds"),
    ],
)  # fmt: skip
def test_bad_production_settings_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(key) + ":"):
        _load(tmp_path, text)


def test_metrics_and_access_log_are_off_by_default(tmp_path: Path) -> None:
    s = _load(tmp_path, "")
    assert s.metrics.enabled is False and s.server.access_log is False  # type: ignore[attr-defined]


#: The secrets the production example takes from the environment.
SECRETS = {
    "QES_HSM_PIN": "1234",
    "QES_DATABASE_URL": "postgresql://db/qes",
    "QES_LOG_PRIVACY_KEY": "00" * 32,
    "QES_WEB_SIGNING_CLIENT_SECRET": "s",
    "QES_AUDIT_UI_CLIENT_SECRET": "s",
}


def test_production_example_loads_with_its_secrets_from_the_environment() -> None:
    s = load_settings(PRODUCTION, env=SECRETS)
    assert s.server.public_url.startswith("https://")
    assert s.server.tls is not None and s.server.tls.min_version == "1.3"
    assert s.server.allow_http_public_url is False
    assert s.metrics.enabled is True


def test_sd_notify_sends_one_datagram(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert notify("READY=1", "STATUS=up", env={"NOTIFY_SOCKET": str(path)})
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
    assert notify("READY=1", env={}) is False  # not started by systemd: nothing to do
    assert notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_sd_notify_abstract_socket() -> None:
    name = f"qes-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("READY=1", env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_the_production_example_names_the_offline_root_token_for_the_root_machine() -> None:
    """Its ``[offline]`` section loads on the root machine (root PIN only, no online PIN) with
    the production CA names, and the service's settings from the same file never hold it."""
    from signer.settings.offline import load_offline_settings

    offline = load_offline_settings(PRODUCTION, env={"QES_ROOT_PIN": "4321"})
    assert offline is not None and offline.hsm.token_label == "qes-root"
    assert offline.hsm.pin.reveal() == "4321"
    assert offline.ca.names.organization == "Example Trust Services GmbH"
    served = load_settings(PRODUCTION, env={**SECRETS, "QES_ROOT_PIN": "4321"})
    assert "4321" not in repr(served) and "token_label='qes-root'" not in repr(served)
