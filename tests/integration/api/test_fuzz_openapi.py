"""A seeded, bounded schemathesis run over ``/openapi.json`` against `qes serve` (issue 17,
item 5): every operation the document describes, schema-valid (positive) and schema-breaking
(negative) requests, once with a batch token and once with an auditor token from the real IdP.

Every answer must pass schemathesis's ``not_a_server_error``, ``status_code_conformance``,
``content_type_conformance`` and ``response_schema_conformance``: no 5xx from any input, and
every status, media type and body as the document says. No check and no operation is left out.

The service is a real `qes serve` with every surface on (one worker, SoftHSM token, PostgreSQL,
the npm IdP) and a 60-second certificate: CSC ``credentials/list`` makes a key per call, and
the service's own sweeper destroys those keys once their credentials expire, which the test
waits for so the token holds only long-lived keys afterwards. The CSC operations run first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from signer.keys.credential import CREDENTIAL_PREFIX
from tests.support.service import EVERY_SURFACE, SignerProcess
from tests.support.softhsm import SoftHsmToken

SEED = 20261207
EXAMPLES = 12  # per operation, generation mode and token
BUDGET_SECONDS = 120
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CREDENTIAL_LIFETIME = 60  # the shortest ca.validity_seconds
# Raw bodies (a PDF, an RFC 3161 query, an RFC 6960 request) are sent as generated octets.
schemathesis.serializer.alias(
    ["application/pdf", "application/timestamp-query", "application/ocsp-request"],
    "application/octet-stream",
)


@pytest.fixture(scope="module")
def signer(serve: Callable[..., AbstractContextManager[SignerProcess]]) -> Iterator[SignerProcess]:
    with serve(
        "fuzz-signer",
        QES__SERVER__WORKERS="1",
        QES__CA__VALIDITY_SECONDS=str(CREDENTIAL_LIFETIME),
        **EVERY_SURFACE,
    ) as process:
        yield process


def _operations(schema: Any) -> list[Any]:
    """Every operation of the document, the CSC ones first (see the module docstring)."""
    operations = [result.ok() for result in schema.get_all_operations()]
    return sorted(operations, key=lambda op: (not op.path.startswith("/csc/"), op.label))


def _fuzz(operation: Any, mode: GenerationMode, token: str, base_url: str) -> list[str]:
    """EXAMPLES seeded cases of ``operation``; the failures, one line each."""
    failures: list[str] = []
    session = requests.Session()

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is reported
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        try:
            case.call_and_validate(
                base_url=base_url,
                session=session,
                headers={"Authorization": f"Bearer {token}"},
                checks=CHECKS,
                timeout=30,
                allow_redirects=False,  # the service's answers, not the IdP's
            )
        except (AssertionError, FailureGroup) as exc:
            failures.append(f"{operation.label} [{mode.value}]: {_summary(exc)}")

    run()
    return failures


def _breakable(operation: Any) -> bool:
    """Whether a request can break the operation's schema: it has a body, a required
    parameter that can be left out (not in the path), or a parameter that not every text
    satisfies. The others (no body, optional or path parameters of unconstrained text) have no
    negative case: hypothesis would search for one in vain (Unsatisfiable), and schemathesis's
    own runner skips them the same way."""
    definition = operation.definition.raw
    if definition.get("requestBody"):
        return True
    for parameter in definition.get("parameters", []):
        if parameter.get("required") and parameter.get("in") != "path":
            return True
        if parameter.get("schema", {}) != {"type": "string"}:
            return True
    return False


def _summary(exc: BaseException) -> str:
    """The failure's first lines and its curl line (schemathesis filters the token out)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    curl = [line for line in lines if line.startswith("curl ")]
    return " | ".join(lines[:6] + curl)[:1200]


async def test_every_operation_answers_as_documented_and_never_5xx(
    signer: SignerProcess,
    batch_token: str,
    auditor_token: str,
    softhsm_token: SoftHsmToken,
) -> None:
    schema = schemathesis.openapi.from_url(f"{signer.url}/openapi.json")
    operations = _operations(schema)
    assert len(operations) >= 70  # every surface of the development config is described
    started = time.monotonic()
    try:
        failures = _fuzz_all(operations, (batch_token, auditor_token), signer.url)
        elapsed = time.monotonic() - started
    finally:
        _wait_for_credential_keys_to_go(softhsm_token, started + CREDENTIAL_LIFETIME + 30)
    assert failures == [], "\n\n".join(failures)
    assert elapsed < BUDGET_SECONDS, f"the fuzz took {elapsed:.0f} s"


def _fuzz_all(operations: list[Any], tokens: tuple[str, ...], base_url: str) -> list[str]:
    failures: list[str] = []
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if _breakable(operation):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            for token in tokens:
                failures += _fuzz(operation, mode, token, base_url)
    return failures


def _wait_for_credential_keys_to_go(token: SoftHsmToken, deadline: float) -> None:
    """The service's sweeper destroys the keys of expired CSC credentials (every 5 s)."""
    while True:
        left = [o.label for o in token.list_objects() if o.label.startswith(CREDENTIAL_PREFIX)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert left == [], f"CSC credential keys outlived their credentials: {left}"
