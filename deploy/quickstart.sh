#!/usr/bin/env bash
# Quick start: from a fresh Debian/Ubuntu checkout to a running signer and one verified signature.
#
#   bash deploy/quickstart.sh         install what is missing, start SoftHSM2 token, PostgreSQL,
#                                     dev IdP, signer (web signing on) and the example web app,
#                                     sign a sample file, verify it with OpenSSL
#   bash deploy/quickstart.sh start --hsm-server
#                                     the same, with the SoftHSM2 token behind `p11-kit server` (an
#                                     HSM in another process, as a network HSM is: kill it, hang
#                                     it with SIGSTOP, start it again, and watch the signer cope)
#   bash deploy/quickstart.sh stop    stop the example web app, the signer, the dev IdP, the HSM
#                                     server and the private PostgreSQL
#
# Everything it creates lives in .qes/ (gitignored). Running it again reuses the HSM token, the
# database and the CA and restarts nothing that already runs. Set QES_DATABASE_URL to use your own
# PostgreSQL instead of the private one in .qes/postgres. DEVELOPMENT ONLY: demo IdP, demo secrets.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DATA=.qes
CONFIG=deploy/dev/qes.toml
SIGNER_URL=http://127.0.0.1:8780
IDP_URL=http://127.0.0.1:9400
RP_URL=http://127.0.0.1:8090
RP_PORT=8090
METRICS_URL=http://127.0.0.1:9780/metrics
IDP_CONFIG=deploy/dev-idp/demo.json
HSM_LABEL=qes-dev
ROOT_TOKEN_LABEL=qes-root
QES=.venv/bin/qes
PY=.venv/bin/python

fail() {
  echo "quickstart: $*" >&2
  exit 1
}
trap 'echo "quickstart: failed (line $LINENO): $BASH_COMMAND" >&2' ERR
step() { printf '[%s] %s\n' "$1" "$2"; }

# ------------------------------------------------------------------ processes and pid files

# The pid in $1 if that process is alive and its command line contains $2.
alive() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

# Start "$@" in its own session, detached from this terminal, logging to $2; pid into $1.
launch() {
  local pidfile=$1 log=$2
  shift 2
  : >"$log"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$log" 2>&1 &
  local i
  for i in $(seq 50); do
    [ -s "$pidfile" ] && return 0
    sleep 0.1
  done
  fail "could not start $1"
}

# TERM the process in pid file $1 (if it is still what $2 says), wait, KILL after 20 s.
terminate() {
  local pidfile=$1 what=$2 name=$3 pid i
  if ! alive "$pidfile" "$what"; then
    rm -f "$pidfile"
    echo "$name: not running"
    return 0
  fi
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    echo "$name: killed (pid $pid did not stop within 20 s)"
  else
    echo "$name: stopped (pid $pid)"
  fi
  rm -f "$pidfile"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true; }

# ------------------------------------------------------------------ stop

cmd_stop() {
  terminate "$DATA/rp.pid" "example-rp/rp.py" "example web app"
  terminate "$DATA/signer.pid" "serve" "signer"
  terminate "$DATA/hsm-server.pid" "hsm.sock" "HSM server"
  terminate "$DATA/idp.pid" "server.mjs" "dev IdP"
  if [ ! -d "$DATA/postgres/data" ] || [ ! -x "$QES" ]; then
    echo "PostgreSQL: no private cluster in $DATA/postgres"
  elif [ -f "$DATA/postgres/port" ] && port_busy "$(cat "$DATA/postgres/port")"; then
    "$QES" db stop --data-dir "$ROOT/$DATA/postgres" || fail "could not stop the private PostgreSQL"
    echo "PostgreSQL: stopped ($DATA/postgres)"
  else
    echo "PostgreSQL: not running"
  fi
}

# ------------------------------------------------------------------ steps

# Before installing or starting anything: the dev ports must be ours or free.
preflight() {
  if ! alive "$DATA/idp.pid" server.mjs && port_busy 9400; then
    fail "port 9400 is taken by another process (another checkout's IdP? run its 'deploy/quickstart.sh stop')"
  fi
  if ! alive "$DATA/signer.pid" serve && port_busy 8780; then
    fail "port 8780 is taken by another process (another checkout's signer? run its 'deploy/quickstart.sh stop')"
  fi
  if ! alive "$DATA/rp.pid" example-rp/rp.py && port_busy $RP_PORT; then
    fail "port $RP_PORT is taken by another process (another checkout's example web app? run its 'deploy/quickstart.sh stop')"
  fi
}

setup() {
  mkdir -p "$DATA"
  chmod 711 "$DATA" # the postgres user must reach .qes/postgres when we run as root
  if ! command -v curl >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q >"$DATA/setup.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
        curl ca-certificates >>"$DATA/setup.log" 2>&1 ||
      { tail -n 5 "$DATA/setup.log" >&2; fail "could not install curl (log: $DATA/setup.log)"; }
  fi
  if ! bash deploy/setup.sh >>"$DATA/setup.log" 2>&1; then
    tail -n 15 "$DATA/setup.log" >&2
    fail "deploy/setup.sh failed (log: $DATA/setup.log)"
  fi
  step 1/8 "setup: system packages, .venv and dev IdP modules present (log: $DATA/setup.log)"
}

# A random secret saved once (0600) and reused afterwards.
secret_file() {
  if [ ! -s "$1" ]; then
    (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$1")
  fi
  chmod 600 "$1"
}

hsm() {
  local dir=$DATA/softhsm
  mkdir -p "$dir/tokens"
  chmod 700 "$dir"
  secret_file "$DATA/hsm-pin"
  secret_file "$DATA/hsm-so-pin"
  # Rewritten every run so a moved checkout still points at its own token directory.
  cat >"$dir/softhsm2.conf" <<EOF
directories.tokendir = $ROOT/$dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
  export SOFTHSM2_CONF=$ROOT/$dir/softhsm2.conf
  QES_HSM_PIN=$(cat "$DATA/hsm-pin")
  export QES_HSM_PIN
  # The offline root's token (README "Key ceremony"): on this one machine beside the online
  # token, with a PIN of its own that only `qes init` is given, never `qes serve`.
  secret_file "$DATA/root-pin"
  secret_file "$DATA/root-so-pin"
  if ! softhsm2-util --show-slots 2>/dev/null | grep -Eq "Label: +$ROOT_TOKEN_LABEL *$"; then
    softhsm2-util --init-token --free --label "$ROOT_TOKEN_LABEL" \
      --so-pin "$(cat "$DATA/root-so-pin")" --pin "$(cat "$DATA/root-pin")" >"$DATA/softhsm.log" 2>&1 ||
      fail "softhsm2-util --init-token failed: $(tail -n 1 "$DATA/softhsm.log")"
  fi
  if softhsm2-util --show-slots 2>/dev/null | grep -Eq "Label: +$HSM_LABEL *$"; then
    step 2/8 "HSM: SoftHSM2 tokens '$HSM_LABEL' and '$ROOT_TOKEN_LABEL' (offline root) reused ($dir)"
    return
  fi
  softhsm2-util --init-token --free --label "$HSM_LABEL" \
    --so-pin "$(cat "$DATA/hsm-so-pin")" --pin "$QES_HSM_PIN" >"$DATA/softhsm.log" 2>&1 ||
    fail "softhsm2-util --init-token failed: $(tail -n 1 "$DATA/softhsm.log")"
  step 2/8 "HSM: SoftHSM2 tokens '$HSM_LABEL' and '$ROOT_TOKEN_LABEL' (offline root) created ($dir, PINs in $DATA/hsm-pin, $DATA/root-pin)"
}

# --hsm-server: the token behind p11-kit server (OPERATIONS.md); the signer loads p11-kit's
# client module and finds the server through P11_KIT_SERVER_ADDRESS (hsm.module_env).
P11KIT_CLIENT=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so
HSM_SOCKET=$ROOT/$DATA/hsm.sock
hsm_server() {
  [ "$HSM_SERVER" = 1 ] || return 0
  command -v p11-kit >/dev/null && [ -e "$P11KIT_CLIENT" ] ||
    fail "--hsm-server needs p11-kit and p11-kit-modules (bash deploy/setup.sh installs them)"
  if ! alive "$DATA/hsm-server.pid" hsm.sock; then
    rm -f "$HSM_SOCKET"
    launch "$DATA/hsm-server.pid" "$DATA/hsm-server.log" p11-kit server -f -n "$HSM_SOCKET" \
      --provider /usr/lib/softhsm/libsofthsm2.so "pkcs11:token=$HSM_LABEL"
    local i
    for i in $(seq 50); do
      [ -S "$HSM_SOCKET" ] && break
      sleep 0.1
    done
    [ -S "$HSM_SOCKET" ] || fail "p11-kit server did not start (log: $DATA/hsm-server.log)"
  fi
  export QES__HSM__MODULE=$P11KIT_CLIENT
  export QES__HSM__MODULE_ENV="{P11_KIT_SERVER_ADDRESS = \"unix:path=$HSM_SOCKET\"}"
  export QES__HSM__CALL_TIMEOUT_SECONDS=${QES__HSM__CALL_TIMEOUT_SECONDS:-5}
  step 2/8 "HSM: p11-kit server (pid $(cat "$DATA/hsm-server.pid")) exports token '$HSM_LABEL' on $DATA/hsm.sock"
}

database() {
  if [ -n "${QES_DATABASE_URL:-}" ]; then
    step 3/8 "database: using \$QES_DATABASE_URL"
    return
  fi
  local url verb=started
  [ -f "$DATA/postgres/port" ] && port_busy "$(cat "$DATA/postgres/port")" && verb="already running"
  url=$("$QES" db start --data-dir "$ROOT/$DATA/postgres" 2>"$DATA/db.log") ||
    fail "private PostgreSQL did not start: $(tail -n 1 "$DATA/db.log") (log: $DATA/postgres/postgres.log)"
  export QES_DATABASE_URL=$url
  step 3/8 "database: private PostgreSQL $verb at $url (data: $DATA/postgres)"
}

idp() {
  local discovery=$IDP_URL/.well-known/openid-configuration i
  if alive "$DATA/idp.pid" server.mjs; then
    [ "$(http_status "$discovery")" = 200 ] || fail "dev IdP (pid $(cat "$DATA/idp.pid")) runs but $discovery does not answer; see $DATA/idp.log"
    step 4/8 "dev IdP: already running at $IDP_URL (pid $(cat "$DATA/idp.pid"))"
    return
  fi
  port_busy 9400 && fail "port 9400 is taken by another process (another checkout's IdP? run its 'deploy/quickstart.sh stop')"
  launch "$DATA/idp.pid" "$DATA/idp.log" node deploy/dev-idp/server.mjs "$IDP_CONFIG"
  for i in $(seq 300); do
    [ "$(http_status "$discovery")" = 200 ] && break
    alive "$DATA/idp.pid" server.mjs || { tail -n 10 "$DATA/idp.log" >&2; fail "dev IdP exited (log: $DATA/idp.log)"; }
    sleep 0.1
  done
  [ "$(http_status "$discovery")" = 200 ] || { tail -n 10 "$DATA/idp.log" >&2; fail "dev IdP not ready after 30 s (log: $DATA/idp.log)"; }
  step 4/8 "dev IdP: started at $IDP_URL (pid $(cat "$DATA/idp.pid"), log $DATA/idp.log)"
}

init_ca() {
  local out
  # stdout: log lines (migrations), then the summary (CA, TSA, log key lines); stderr: the
  # reason on failure. The whole summary stays in init.log.
  # The one-machine key ceremony: both tokens here, the root's PIN for this command only
  # (the signer never gets it); the transcript is $DATA/ceremony/transcript.jsonl.
  out=$(QES_ROOT_PIN=$(cat "$DATA/root-pin") QES__OFFLINE__MODULE=/usr/lib/softhsm/libsofthsm2.so \
    "$QES" init --config "$CONFIG" 2>"$DATA/init.log") ||
    fail "qes init failed: $(tail -n 1 "$DATA/init.log")"
  printf '%s\n' "$out" >>"$DATA/init.log"
  out=$(grep -m 1 '^CA ' <<<"$out" || true)
  step 5/8 "CA: ${out#CA } (key ceremony on one machine; CA, TSA and log keys: $DATA/init.log)"
}

signer() {
  local i
  if alive "$DATA/signer.pid" serve; then
    for i in $(seq 100); do
      [ "$(http_status "$SIGNER_URL/readyz")" = 200 ] && break
      sleep 0.1
    done
    [ "$(http_status "$SIGNER_URL/readyz")" = 200 ] || { tail -n 10 "$DATA/signer.log" >&2; fail "signer (pid $(cat "$DATA/signer.pid")) runs but $SIGNER_URL/readyz is not 200 (log: $DATA/signer.log)"; }
    step 6/8 "signer: already running at $SIGNER_URL (pid $(cat "$DATA/signer.pid"))"
    return
  fi
  port_busy 8780 && fail "port 8780 is taken by another process (another checkout's signer? run its 'deploy/quickstart.sh stop')"
  port_busy 9780 && fail "port 9780 (metrics) is taken by another process (another checkout's signer? run its 'deploy/quickstart.sh stop')"
  # The audit web UI's OIDC client (demo secret from $IDP_CONFIG, public like every demo secret).
  # Web signing (web apps send a person to sign) through the demo-signer-web client.
  QES__AUDIT__UI_CLIENT_ID=demo-audit-ui QES__AUDIT__UI_ISSUER=demo_people \
    QES_AUDIT_UI_CLIENT_SECRET=demo-only-audit-ui-secret-not-for-production \
    QES__WEB_SIGNING__CLIENT_ID=demo-signer-web QES__WEB_SIGNING__ISSUER=demo_people \
    QES_WEB_SIGNING_CLIENT_SECRET=$(demo_secret demo-signer-web) \
    QES__APPROVALS__UI_CLIENT_ID=demo-approvals-ui QES__APPROVALS__UI_ISSUER=demo_people \
    QES_APPROVALS_UI_CLIENT_SECRET=$(demo_secret demo-approvals-ui) \
    QES__METRICS__ENABLED=true QES__METRICS__PORT=9780 QES__SERVER__ACCESS_LOG=true \
    launch "$DATA/signer.pid" "$DATA/signer.log" "$QES" serve --config "$CONFIG"
  for i in $(seq 600); do
    [ "$(http_status "$SIGNER_URL/readyz")" = 200 ] && break
    alive "$DATA/signer.pid" serve || { tail -n 15 "$DATA/signer.log" >&2; fail "signer exited (log: $DATA/signer.log)"; }
    sleep 0.1
  done
  [ "$(http_status "$SIGNER_URL/readyz")" = 200 ] || { tail -n 15 "$DATA/signer.log" >&2; fail "signer not ready after 60 s (log: $DATA/signer.log)"; }
  step 6/8 "signer: started at $SIGNER_URL (pid $(cat "$DATA/signer.pid"), log $DATA/signer.log)"
}

# The example web app: registered once with `qes client add` (its id and secret kept in
# $DATA/example-rp.env, 0600, and registered again only if the database no longer knows it),
# then started on $RP_URL.
example_rp() {
  local creds=$DATA/example-rp.env i out id=""
  if [ -s "$creds" ]; then
    id=$(sed -n 's/^QES_RP_CLIENT_ID=//p' "$creds")
  fi
  if [ -z "$id" ] || ! "$QES" client list --config "$CONFIG" 2>>"$DATA/rp.log" | grep -Eq "^$id +.* active "; then
    out=$("$QES" client add "Example web app" --redirect-uri "$RP_URL/signed" --config "$CONFIG" 2>>"$DATA/rp.log") ||
      fail "qes client add failed (log: $DATA/rp.log)"
    (umask 077 && sed -n -e 's/^client_id: /QES_RP_CLIENT_ID=/p' -e 's/^client_secret: /QES_RP_CLIENT_SECRET=/p' <<<"$out" >"$creds")
    id=$(sed -n 's/^QES_RP_CLIENT_ID=//p' "$creds")
    [ -n "$id" ] || fail "qes client add printed no client_id"
  fi
  chmod 600 "$creds"
  if alive "$DATA/rp.pid" example-rp/rp.py; then
    [ "$(http_status "$RP_URL/")" = 200 ] || fail "example web app (pid $(cat "$DATA/rp.pid")) runs but $RP_URL/ does not answer 200 (log: $DATA/rp.log)"
    step 7/8 "example web app: already running at $RP_URL (pid $(cat "$DATA/rp.pid"), client $id)"
    return
  fi
  port_busy $RP_PORT && fail "port $RP_PORT is taken by another process (another checkout's example web app? run its 'deploy/quickstart.sh stop')"
  (
    set -a
    # shellcheck disable=SC1090
    . "$creds"
    set +a
    QES_URL=$SIGNER_URL QES_RP_URL=$RP_URL launch "$DATA/rp.pid" "$DATA/rp.log" "$PY" deploy/example-rp/rp.py
  )
  for i in $(seq 100); do
    [ "$(http_status "$RP_URL/")" = 200 ] && break
    alive "$DATA/rp.pid" example-rp/rp.py || { tail -n 10 "$DATA/rp.log" >&2; fail "example web app exited (log: $DATA/rp.log)"; }
    sleep 0.1
  done
  [ "$(http_status "$RP_URL/")" = 200 ] || { tail -n 10 "$DATA/rp.log" >&2; fail "example web app not ready after 10 s (log: $DATA/rp.log)"; }
  step 7/8 "example web app: started at $RP_URL (pid $(cat "$DATA/rp.pid"), client $id, log $DATA/rp.log)"
}

# The client secret of demo client $1 in $IDP_CONFIG (public demo values).
demo_secret() {
  "$PY" -c 'import json,sys; print(next(c["client_secret"] for c in json.load(open(sys.argv[1]))["clients"] if c["client_id"] == sys.argv[2]))' "$IDP_CONFIG" "$1"
}

# Client-credentials token (RFC 6749 §4.4) for demo client $1 into file $2 (0600).
fetch_token() {
  local client=$1 out=$2 secret endpoint body code
  secret=$(demo_secret "$client")
  endpoint=$(curl -sS --max-time 5 "$IDP_URL/.well-known/openid-configuration" |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["token_endpoint"])') ||
    fail "cannot read the token endpoint from $IDP_URL/.well-known/openid-configuration"
  body=$(mktemp)
  code=$(curl -sS --max-time 10 -o "$body" -w '%{http_code}' -u "$client:$secret" \
    -d grant_type=client_credentials -d scope=sign --data-urlencode resource=urn:qes-signer \
    "$endpoint") || { rm -f "$body"; fail "token request for $client failed (curl)"; }
  if [ "$code" != 200 ]; then
    local reason
    reason=$(head -c 300 "$body")
    rm -f "$body"
    fail "token endpoint answered $code for $client: $reason"
  fi
  (umask 077 && "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$body" >"$out")
  chmod 600 "$out"
  rm -f "$body"
}

sign_and_verify() {
  local dir=$DATA/sample doc out serial
  doc=$dir/contract.txt
  mkdir -p "$dir"
  [ -f "$doc" ] || printf 'Sample contract for the qes-signer quick start.\nSigned with a one-off HSM key and a 10-minute certificate.\n' >"$doc"
  fetch_token demo-batch "$DATA/batch.token"
  out=$("$QES" sign "$doc" --token-file "$DATA/batch.token" 2>&1) || fail "qes sign failed: $(tail -n 1 <<<"$out")"
  serial=$(sed -n 's/^signed .* with certificate \([0-9a-f]*\) .*/\1/p' <<<"$out")
  step 8/8 "signed $doc: $(head -n 1 <<<"$out" | sed 's/^signed 1 file(s) with //')"

  # Split the chain (leaf, issuing CA, root) for `openssl verify`.
  awk -v d="$dir" '/-----BEGIN CERTIFICATE-----/{n++} n==1{print >(d"/leaf.pem")} n==2{print >(d"/issuing.pem")} n==3{print >(d"/root.pem")}' "$doc.chain.pem"
  [ -s "$dir/root.pem" ] || fail "$doc.chain.pem does not hold leaf, issuing and root certificates"

  local c1="openssl x509 -in $doc.chain.pem -pubkey -noout -out $doc.pub"
  local c2="openssl dgst -sha256 -verify $doc.pub -signature $doc.sig $doc"
  local c3="openssl verify -CAfile $dir/root.pem -untrusted $dir/issuing.pem $dir/leaf.pem"
  local r2 r3
  $c1 || fail "openssl could not read the public key from $doc.chain.pem"
  r2=$($c2 2>&1) || fail "signature does NOT verify: $r2"
  r3=$($c3 2>&1) || fail "certificate chain does NOT verify: $r3"
  echo "      OpenSSL: $r2; chain: ${r3##*: }. Repeat with:"
  echo "        $c1"
  echo "        $c2"
  echo "        $c3"
  echo "      (the certificate is valid for 10 minutes; later add -attime $(date +%s) to the last command)"

  # The same document as CAdES B-T: the built-in TSA time-stamps the signature in the same step.
  out=$("$QES" sign "$doc" --format cades --quiet --token-file "$DATA/batch.token" 2>&1) || fail "qes sign --format cades failed: $(tail -n 1 <<<"$out")"
  local c4="openssl cms -verify -binary -inform DER -in $doc.p7s -content $doc -CAfile $dir/root.pem -purpose any -cades -out /dev/null"
  local r4
  r4=$($c4 2>&1) || fail "CAdES signature does NOT verify: $r4"
  echo "      CAdES B-T signature $doc.p7s (time-stamped at once): OpenSSL: $r4. Repeat with:"
  echo "        $c4"

  fetch_token demo-auditor "$DATA/auditor.token"
  echo "      audit log (.venv/bin/qes audit list --token-file $DATA/auditor.token --limit 5):"
  out=$("$QES" audit list --token-file "$DATA/auditor.token" --limit 5 2>&1) || fail "qes audit list failed: $(tail -n 1 <<<"$out")"
  grep -v -e '^more: ' -e '^$' <<<"$out" | sed 's/^/        /' # the newest 5 are enough here
  [ -z "$serial" ] || echo "      one record in full: .venv/bin/qes audit show $serial --token-file $DATA/auditor.token"

  # The seal job's signatures wait for 2 of the 3 seal approvers (deploy/dev/policy.toml).
  fetch_token demo-seal-batch "$DATA/seal.token"
  out=$("$QES" sign "$doc" --token-file "$DATA/seal.token" 2>&1) || true
  case $out in
    *"held for approval"*)
      echo "      seal job (demo-seal-batch): ${out#qes: }"
      echo "        it is listed at $SIGNER_URL/approvals (log in as dana / demo-dana or erik / demo-erik)."
      echo "        To see one through: run"
      echo "          .venv/bin/qes sign $doc --token-file $DATA/seal.token --wait-approval 600"
      echo "        and, while it waits, approve its request there as dana, then as erik: it writes the"
      echo "        signature once the second approval is in. (Scripts use qes approvals list|approve"
      echo "        with an approver's access token from the IdP.)" ;;
    *) fail "the seal job's request was not held for approval: $(tail -n 1 <<<"$out")" ;;
  esac
}

summary() {
  cat <<EOF

Running (development only; demo IdP secrets are public):
  signer      $SIGNER_URL  pid $(cat "$DATA/signer.pid" 2>/dev/null || echo '?')  log $DATA/signer.log
              API description: $SIGNER_URL/openapi.json
              Prometheus metrics: $METRICS_URL  (access log in the signer log)
  dev IdP     $IDP_URL  pid $(cat "$DATA/idp.pid" 2>/dev/null || echo '?')  log $DATA/idp.log
              users alice/demo-alice, bob/demo-bob; clients demo-batch, demo-auditor ($IDP_CONFIG)
  audit UI    $SIGNER_URL/audit  (log in as carol / demo-carol, the demo auditor)
  approvals   $SIGNER_URL/approvals  (dana, erik, fiona / demo-<name>: 2 of 3 approve the
              seal job demo-seal-batch's signatures; deploy/dev/policy.toml)
  example app $RP_URL  pid $(cat "$DATA/rp.pid" 2>/dev/null || echo '?')  log $DATA/rp.log
              upload a file, sign it in the browser as alice / demo-alice, download the
              signature (web signing; the app's client id and secret: $DATA/example-rp.env)
EOF
  if [ -d "$DATA/postgres/data" ] && [ "${QES_DATABASE_URL:-}" = "$("$QES" db url --data-dir "$ROOT/$DATA/postgres" 2>/dev/null)" ]; then
    echo "  PostgreSQL  $QES_DATABASE_URL  log $DATA/postgres/postgres.log"
  else
    echo "  PostgreSQL  yours (\$QES_DATABASE_URL)"
  fi
  cat <<EOF
  SoftHSM2    token '$HSM_LABEL' in $DATA/softhsm (SOFTHSM2_CONF=$DATA/softhsm/softhsm2.conf)
Tokens expire after 10 minutes; run this script again for fresh ones (nothing is restarted).
Stop everything: bash deploy/quickstart.sh stop
EOF
  if [ "$HSM_SERVER" = 1 ]; then
    cat <<EOF
  HSM server  p11-kit server, process group $(cat "$DATA/hsm-server.pid"): kill -9 -- -PID (dies),
              kill -STOP -- -PID (hangs), kill -CONT -- -PID; bash deploy/quickstart.sh start
              --hsm-server brings a killed one back; watch $SIGNER_URL/readyz
EOF
  fi
}

HSM_SERVER=0
[ "${2:-}" = --hsm-server ] && HSM_SERVER=1
case "${1:-start}" in
  start)
    preflight
    setup
    hsm
    hsm_server
    database
    idp
    init_ca
    signer
    example_rp
    sign_and_verify
    summary
    ;;
  stop) cmd_stop ;;
  -h | --help | help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) fail "unknown command '$1' (use: bash deploy/quickstart.sh [start [--hsm-server]|stop])" ;;
esac
