#!/usr/bin/env bash
# Sees dependency drift before users do (not part of CI): builds a throwaway venv with the newest
# releases that pyproject.toml allows, runs the whole test suite in it and prints which packages
# differ from the lock and what failed.
#
#   bash deploy/drift.sh [pytest args...]
#
# The venv lives in a temporary folder and is removed afterwards; .venv and the lock are not
# touched. A clean run means `bash deploy/lock.sh --upgrade` is safe; otherwise fix the code (or
# narrow the range in pyproject.toml) first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv=$work/venv

echo "drift: building a venv with the newest allowed releases"
python3 -m venv "$venv"
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" PIP_CONSTRAINT="" \
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" PIP_CONSTRAINT="" \
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade --upgrade-strategy eager \
  -e ".[test]"

echo "drift: packages whose newest allowed release differs from requirements/test.txt"
"$venv/bin/python" - "$ROOT/requirements/test.txt" <<'PY'
import re
import sys
from importlib.metadata import distributions

def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()

locked = {}
for line in open(sys.argv[1], encoding="utf-8"):
    m = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;\\]+)", line)
    if m:
        locked[norm(m.group(1))] = m.group(2)
fresh = {norm(d.metadata["Name"]): d.version for d in distributions()}
fresh.pop("qes-signer", None)
rows = []
for name in sorted(set(locked) | set(fresh)):
    if name in ("pip",):
        continue
    old, new = locked.get(name, "-"), fresh.get(name, "-")
    if old != new and not (new == "-" and name in ("colorama", "tzdata")):
        rows.append((name, old, new))
width = max([len(r[0]) for r in rows] + [7])
print(f"  {'package':<{width}}  {'locked':<14} newest allowed")
for name, old, new in rows:
    print(f"  {name:<{width}}  {old:<14} {new}")
print(f"  ({len(rows)} differ)" if rows else "  none: the lock is current")
PY

echo "drift: running the whole suite against those releases"
cd "$ROOT"
export PATH="$venv/bin:$PATH"
failed=()
ruff check . >"$work/ruff.log" 2>&1 || failed+=("ruff: $(tail -1 "$work/ruff.log")")
mypy >"$work/mypy.log" 2>&1 || failed+=("mypy: $(tail -1 "$work/mypy.log")")
set +e
pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$work/pytest.log"
code=${PIPESTATUS[0]}
set -e
[ "$code" -eq 0 ] || failed+=("pytest exit $code: $(tail -1 "$work/pytest.log")")
echo "drift: what failed with the newest releases:"
if [ ${#failed[@]} -eq 0 ]; then
  echo "  nothing"
  exit 0
fi
printf '  %s\n' "${failed[@]}"
grep -E '^(FAILED|ERROR) ' "$work/pytest.log" | sed 's/^/  /' || true
exit 1
