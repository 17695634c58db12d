#!/usr/bin/env bash
# Installs what qes-signer needs on a Debian/Ubuntu machine and prepares the project:
# system packages (only those missing), a virtualenv in .venv with the project and its test
# tools, and the development IdP's node modules. Safe to run again; does nothing already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
have_cmd pkcs11-tool || need+=(opensc)
have_cmd openssl || need+=(openssl)
have_cmd curl || need+=(curl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
have_cmd node || need+=(nodejs)
have_cmd npm || need+=(npm)
have_cmd python3 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
have_cmd chromium || need+=(chromium) # the audit UI's browser tests (Playwright drives it)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.qes-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi

if [ ! -d deploy/dev-idp/node_modules ] || [ deploy/dev-idp/package-lock.json -nt deploy/dev-idp/node_modules ]; then
  echo "setup: installing the development IdP (npm ci)"
  (cd deploy/dev-idp && npm ci --no-audit --no-fund --loglevel=error)
fi
