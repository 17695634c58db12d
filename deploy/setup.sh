#!/usr/bin/env bash
# Installs what qes-signer needs on a Debian/Ubuntu machine and prepares the project. Safe to run
# again: it does nothing already done.
#
#   bash deploy/setup.sh          what the service and the quick start need: SoftHSM2, p11-kit
#                                 (the quick start's --hsm-server), OpenSSL,
#                                 PostgreSQL, Node.js (the demo IdP), .venv from requirements/run.txt
#   bash deploy/setup.sh --test   also what the tests need: Chromium (driven by Playwright),
#                                 pgBackRest, HAProxy, Prometheus (promtool), buildah, mmdebstrap,
#                                 podman, systemd-analyze, kubectl (Kustomize), and .venv from
#                                 requirements/test.txt
#
# Python packages come only from the committed lock, hash-checked (pip --require-hashes); the
# project itself is then installed without dependencies. When a lock file changes, the next run
# rebuilds .venv from it, so a machine always runs exactly what was tested. Refresh the lock with
# deploy/lock.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

set_name=run
case "${1:-}" in
  "") ;;
  --test) set_name=test ;;
  *)
    echo "usage: bash deploy/setup.sh [--test]" >&2
    exit 2
    ;;
esac

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }

[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
have_cmd pkcs11-tool || need+=(opensc)
have_cmd openssl || need+=(openssl)
have_cmd curl || need+=(curl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# the HSM in another process (p11-kit server + its client module): the quick start's
# --hsm-server and the fault tests
have_cmd p11-kit || need+=(p11-kit)
[ -e /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so ] || need+=(p11-kit-modules)
have_cmd node || need+=(nodejs)
have_cmd npm || need+=(npm)
have_cmd python3 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ "$set_name" = test ]; then
  have_cmd chromium || need+=(chromium) # the browser tests (Playwright drives Debian's build)
  have_cmd pgbackrest || need+=(pgbackrest) # the backup and restore drill (deploy/pgbackrest)
  # The production pieces, tested for real: a load balancer in front of two replicas, a
  # Prometheus that scrapes the service (promtool checks the alert rules), the container image
  # built from a Debian base made here (no registry), and the systemd unit's checks.
  have_cmd haproxy || need+=(haproxy)
  have_cmd promtool || need+=(prometheus)
  have_cmd buildah || need+=(buildah)
  have_cmd mmdebstrap || need+=(mmdebstrap)
  have_cmd podman || need+=(podman)
  have_cmd systemd-analyze || need+=(systemd)
  have_cmd kubectl || need+=(kubernetes-client) # `kubectl kustomize` renders deploy/kubernetes/
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# ---------------------------------------------------------------- Python, from the lock only

lock_hash() { sha256sum "requirements/$1.txt" | cut -d' ' -f1; }
stamp() { echo ".venv/.qes-$1.sha256"; }
installed() { [ -f "$(stamp "$1")" ] && [ "$(cat "$(stamp "$1")")" = "$(lock_hash "$1")" ]; }

PY=${PYTHON:-python3}
# A venv made from another run set, or from an older lock, is rebuilt: nothing is left over.
if [ -x .venv/bin/python ] && ! installed run; then
  echo "setup: requirements/run.txt changed: rebuilding .venv"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi

install_set() {
  local name=$1 log
  log=$(mktemp)
  echo "setup: installing requirements/$name.txt (hash-checked)"
  # No index but PyPI's, no machine-wide constraint or find-links: the lock decides.
  if ! PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" PIP_CONSTRAINT="" \
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-input \
    --require-hashes --no-deps --only-binary=:all: -r "requirements/$name.txt" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "setup: requirements/$name.txt could not be installed as locked (a hash that does" \
      "not match, a missing package or no network; pip's words are above). Restore the file" \
      "with 'git checkout requirements/' or refresh the lock with 'bash deploy/lock.sh'." >&2
    exit 1
  fi
  rm -f "$log"
}

project_hash() { sha256sum pyproject.toml | cut -d' ' -f1; }
if ! installed run; then
  install_set run
  rm -f "$(stamp project)"
  lock_hash run >"$(stamp run)"
fi
# The project itself (editable) again when pyproject.toml changed: a moved console script or
# package data must reach an existing .venv too.
if [ ! -f "$(stamp project)" ] || [ "$(cat "$(stamp project)")" != "$(project_hash)" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    --no-build-isolation --no-index -e .
  project_hash >"$(stamp project)"
fi
if [ "$set_name" = test ] && ! installed test; then
  install_set test
  lock_hash test >"$(stamp test)"
fi

if [ ! -d deploy/dev-idp/node_modules ] || [ deploy/dev-idp/package-lock.json -nt deploy/dev-idp/node_modules ]; then
  echo "setup: installing the development IdP (npm ci)"
  (cd deploy/dev-idp && npm ci --no-audit --no-fund --loglevel=error)
fi
