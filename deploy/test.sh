#!/usr/bin/env bash
# Runs the whole test suite: lint (ruff), types (mypy) and pytest on real SoftHSM2, PostgreSQL
# and a real OpenID Provider process. Installs what is missing first (deploy/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh --test
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== lint-imports"
.venv/bin/lint-imports
echo "== pytest"
set +e
.venv/bin/pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$code"
