"""An outside schemathesis run over ``/openapi.json``, with more examples than the suite's.

    .venv/bin/python bench/fuzz.py [--examples 50] [--seed N] [--keep]

Starts the service as ``bench/run.py`` does (throwaway SoftHSM2 token, scratch database, dev
IdP, ``qes init``, ``qes serve``) with every surface on and a 60-second certificate, then runs
the schemathesis command line, as an outsider would, over every operation of the document: schema-
valid and schema-breaking requests (``--mode all``), ``--examples`` per operation, the batch
client's token, with the checks the suite's test uses (issue 17: no 5xx from any input, status,
media type and body as documented). It prints schemathesis's summary, then waits for the
credential keys that CSC calls made to expire and be swept, and lists the token from a separate
process: only the long-lived keys may be left. Exit 0 only if schemathesis found nothing and the
token is clean.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # bench/run.py: service start-up helpers

from tests.support.service import EVERY_SURFACE, LONG_LIVED_LABELS

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)
CREDENTIAL_LIFETIME = 60  # seconds: the shortest ca.validity_seconds
SWEEP_WAIT = CREDENTIAL_LIFETIME + 90  # the sweeper's interval on top


def fuzz(url: str, token: str, examples: int, seed: int, workdir: Path) -> int:
    """schemathesis's exit code (0: no failure); its output goes to stdout as it runs, its
    files (.schemathesis/) to ``workdir``."""
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--mode",
        "all",
        "--checks",
        CHECKS,
        "--continue-on-failure",
        "--request-timeout",
        "30",
    ]
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks", "PYTHONPATH": here}
    return subprocess.run(cmd, check=False, timeout=3600, cwd=workdir, env=env).returncode


def leftover_keys(service: bench.BenchService) -> list[str]:
    """Labels on the token other than the long-lived keys, once swept (listed from a separate
    process, as the suite's leak check does)."""
    deadline = time.monotonic() + SWEEP_WAIT
    while True:
        left = [o.label for o in service.token.list_objects() if o.label not in LONG_LIVED_LABELS]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=50, help="per operation and mode")
    p.add_argument("--seed", type=int, default=20261207)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, no secrets)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="qes-fuzz-"))
    extra = {
        **EVERY_SURFACE,
        "QES__CA__VALIDITY_SECONDS": str(CREDENTIAL_LIFETIME),
    }
    try:
        with contextlib.ExitStack() as stack:
            service = bench.start_service(stack, tmp, 1, extra, token_ttl=3600)
            started = time.monotonic()
            code = fuzz(service.signer.url, service.batch_token, args.examples, args.seed, tmp)
            took = time.monotonic() - started
            left = leftover_keys(service)
        print(f"schemathesis exit code: {code} ({args.examples} examples, {took:.0f} s)")
        print(f"keys left in the token: {len(left)} {left if left else ''}".rstrip())
        return 0 if code == 0 and not left else 1
    finally:
        bench.clean_up(tmp, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
