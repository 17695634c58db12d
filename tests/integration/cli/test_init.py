"""`qes init`: creates the CA in the HSM, is idempotent, and replaces keys only with --force."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg import scratch_database
from tests.support.service import qes_init
from tests.support.softhsm import SoftHsmToken


@pytest.fixture
def init_env(
    softhsm_token: SoftHsmToken, pg_admin: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """Own database and own CA, TSA, OCSP and log key labels: the session's keys stay intact."""
    with scratch_database(pg_admin) as url:
        yield {
            **softhsm_token.env(),
            "QES_HSM_PIN": softhsm_token.pin,
            "QES_DATABASE_URL": url,
            "QES__DATA_DIR": f'"{tmp_path}"',  # the ceremony's transcript, not the repo's .qes
            "QES__HSM__TOKEN_LABEL": softhsm_token.label,
            "QES__CA__ROOT_LABEL": "init-test-root",
            "QES__CA__ISSUING_LABEL": "init-test-ca",
            "QES__TSA__LABEL": "init-test-tsa",
            "QES__CA__OCSP_LABEL": "init-test-ocsp",
            "QES__LOG__KEY_LABEL": "init-test-log",
        }


def test_init_is_idempotent_and_needs_force_to_replace(
    init_env: dict[str, str], softhsm_token: SoftHsmToken, pg_admin: str
) -> None:
    first = qes_init(init_env)
    assert first.returncode == 0 and first.stdout.startswith("CA created"), first.stderr
    again = qes_init(init_env)
    assert again.returncode == 0 and again.stdout.startswith("CA already present"), again.stderr
    assert softhsm_token.offline is not None
    labels = [o.label for o in softhsm_token.list_objects()]
    root_labels = [o.label for o in softhsm_token.offline.list_objects()]
    # pub+priv each, the root's in the offline root token
    assert labels.count("init-test-ca") == 2 and root_labels.count("init-test-root") == 2
    assert "init-test-root" not in labels  # the root key is in the offline root token only

    with scratch_database(pg_admin) as other:  # keys exist, certificates do not: refuse
        refused = qes_init({**init_env, "QES_DATABASE_URL": other})
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            "qes: HSM already holds init-test-root, init-test-ca without matching certificates;"
            " run `qes init --force` to replace the CA keys"
        ]
        forced = qes_init({**init_env, "QES_DATABASE_URL": other}, "--force")
        assert forced.returncode == 0 and forced.stdout.startswith("CA created"), forced.stderr
    labels = [o.label for o in softhsm_token.list_objects()]
    root_labels = [o.label for o in softhsm_token.offline.list_objects()]
    assert labels.count("init-test-ca") == 2 and root_labels.count("init-test-root") == 2
    assert "init-test-root" not in labels
