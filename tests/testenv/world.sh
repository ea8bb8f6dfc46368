#!/usr/bin/env bash
# The test world: a real kube-apiserver + etcd, a moto server (AWS ECR/STS) and
# a Google OAuth2 token fixture, all on 127.0.0.1 with free ports.
#
#   world.sh up DIR          start everything in the background, write DIR/env
#                            (sourceable `export` lines) and DIR/pids, wait until
#                            all are ready, exit 0 (processes keep running).
#   world.sh down DIR        stop (TERM, then KILL) every process `up` started
#                            in DIR; idempotent.
#   world.sh run -- CMD...   mktemp a DIR, up, run CMD with DIR/env applied,
#                            down on exit/INT/TERM; exits with CMD's status.
#                            The DIR is removed when CMD passes, kept (and
#                            printed) when it fails; REGCRED_TEST_KEEP_WORLD=1
#                            always keeps it.
#
# Binaries: tests/testenv/build-k8s.sh (kube-apiserver, etcd; honours
# KUBEBUILDER_ASSETS) and tests/testenv/setup-venv.sh (moto, cryptography).
# Both build/install on first use and are cached under
# ${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/.
#
# Quirks of this world (no controller-manager, no scheduler, no kubelet):
# - Namespaces get NO `default` ServiceAccount and no kube-root-ca.crt
#   ConfigMap: tests create the ServiceAccounts they need. Pods cannot be
#   created without their ServiceAccount (ServiceAccount admission is on).
# - Nothing garbage-collects: deleting a namespace leaves it Terminating.
# - Identities are client certificates signed by DIR/pki/ca.crt; mint more
#   with tests/testenv/mint-user.sh DIR NAME [GROUP...].
# Logs: DIR/logs/*.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SELF="$HERE/world.sh"
# shellcheck source=versions.env
source "$HERE/versions.env"

log() { printf '[world] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

READY_TIMEOUT="${REGCRED_TEST_READY_TIMEOUT:-180}"

usage() {
  sed -n '2,16p' "$SELF" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- processes

# "STATE STARTTIME" of a PID from /proc/PID/stat (starttime recognises a recycled PID).
proc_stat() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }" # drop "pid (comm) "; then field 1 is state, field 20 starttime
  awk '{print $1, $20}' <<<"$stat"
}

proc_start() {
  local st
  st="$(proc_stat "$1")" || return 1
  printf '%s\n' "${st#* }"
}

alive() { # pid [starttime]: running (not a zombie) and, if given, same start time
  local st
  st="$(proc_stat "$1")" || return 1
  [[ "${st%% *}" != Z ]] || return 1
  [[ -z "${2:-}" || "${st#* }" == "$2" ]]
}

# start NAME LOGFILE CMD... : runs CMD in its own session, records "NAME PID START",
# sets LAST_PID.
start_proc() {
  local name="$1" logf="$2"
  shift 2
  setsid "$@" </dev/null >>"$logf" 2>&1 &
  local pid=$!
  local st=""
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    st="$(proc_start "$pid")" && break
    sleep 0.05
  done
  printf '%s %s %s\n' "$name" "$pid" "${st:-0}" >>"$DIR/pids"
  log "started $name (pid $pid)"
  LAST_PID=$pid
}

check_alive() { # NAME PID LOG
  if ! alive "$2"; then
    log "$1 exited early; last lines of $3:"
    tail -n 30 "$3" >&2 || true
    return 1
  fi
}

wait_for() { # NAME PID LOG CMD...: poll CMD until it succeeds
  local name="$1" pid="$2" logf="$3"
  shift 3
  local deadline=$((SECONDS + READY_TIMEOUT))
  while ! "$@" >/dev/null 2>&1; do
    check_alive "$name" "$pid" "$logf" || return 1
    if ((SECONDS >= deadline)); then
      log "$name not ready after ${READY_TIMEOUT}s; last lines of $logf:"
      tail -n 30 "$logf" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  log "$name ready"
}

do_down() {
  local dir="$1"
  [[ -f "$dir/pids" ]] || { log "down: nothing recorded in $dir"; return 0; }
  local -a names=() pids=() starts=()
  local n p s
  while read -r n p s; do
    [[ -n "${p:-}" ]] || continue
    # never signal our own caller (the `run` watchdog calls down itself)
    [[ "$p" == "$$" || "$p" == "$PPID" ]] && continue
    names+=("$n"); pids+=("$p"); starts+=("$s")
  done <"$dir/pids"
  local i
  # reverse start order: fixtures, then kube-apiserver, then etcd
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    if alive "${pids[i]}" "${starts[i]}"; then
      kill -TERM -- "-${pids[i]}" 2>/dev/null || kill -TERM "${pids[i]}" 2>/dev/null || true
    fi
  done
  local deadline=$((SECONDS + ${REGCRED_TEST_KILL_GRACE:-5}))
  while :; do
    local left=0
    for i in "${!pids[@]}"; do
      alive "${pids[i]}" "${starts[i]}" && left=1
    done
    ((left == 0)) && break
    if ((SECONDS >= deadline)); then
      for i in "${!pids[@]}"; do
        if alive "${pids[i]}" "${starts[i]}"; then
          log "down: ${names[i]} (pid ${pids[i]}) ignored TERM; KILL"
          kill -KILL -- "-${pids[i]}" 2>/dev/null || kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
      done
      sleep 0.2
      break
    fi
    sleep 0.1
  done
  mv -f "$dir/pids" "$dir/pids.down" 2>/dev/null || true
  log "down: stopped ${#pids[@]} process(es) of $dir"
}

# ---------------------------------------------------------------- certificates

gen_pki() {
  local pki="$DIR/pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -days 30 -sha256 -subj "/CN=regcred-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  openssl genrsa -out "$pki/apiserver.key" 2048 2>/dev/null
  openssl req -new -key "$pki/apiserver.key" -subj "/CN=kube-apiserver" -out "$pki/apiserver.csr" 2>/dev/null
  cat >"$pki/apiserver.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, IP:10.0.0.1, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
EOF
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 30 -sha256 \
    -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  rm -f "$pki/apiserver.csr" "$pki/apiserver.ext"
  # ServiceAccount token signing key pair
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key
}

free_ports() { # N -> N distinct free TCP ports on 127.0.0.1, one per line
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
for s in socks:
    s.close()
EOF
}

# ---------------------------------------------------------------- up

do_up() {
  DIR="$1"
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  if [[ -f "$DIR/pids" ]]; then
    local n p s
    while read -r n p s; do
      if [[ -n "${p:-}" ]] && alive "$p" "$s"; then
        die "$DIR already has a running world ($n pid $p); run: $SELF down $DIR"
      fi
    done <"$DIR/pids"
    rm -f "$DIR/pids"
  fi
  rm -rf "$DIR/etcd" "$DIR/pki" "$DIR/users" "$DIR/google" "$DIR/apiserver" "$DIR/logs" "$DIR/env" "$DIR/pids.down"
  mkdir -p "$DIR/logs"
  : >"$DIR/pids"

  local bin venv
  bin="$(bash "$HERE/build-k8s.sh" | tail -n 1)"
  venv="$(bash "$HERE/setup-venv.sh" | tail -n 1)"
  [[ -x "$bin/kube-apiserver" && -x "$bin/etcd" ]] || die "no kube-apiserver/etcd in '$bin'"
  [[ -x "$venv/bin/python" ]] || die "no python in venv '$venv'"

  # If anything below fails, stop what was started.
  local prev_exit_trap
  prev_exit_trap="$(trap -p EXIT)"
  trap 'rc=$?; if [[ $rc -ne 0 ]]; then log "up failed (exit $rc); stopping what was started"; do_down "$DIR" || true; fi' EXIT

  local ports
  mapfile -t ports < <(free_ports 5)
  local etcd_port="${ports[0]}" peer_port="${ports[1]}" api_port="${ports[2]}" moto_port="${ports[3]}" google_port="${ports[4]}"
  local api_url="https://127.0.0.1:$api_port"
  local etcd_url="http://127.0.0.1:$etcd_port"
  local moto_url="http://127.0.0.1:$moto_port"
  local google_url="http://127.0.0.1:$google_port"
  printf '%s\n' "$api_url" >"$DIR/server-url"

  gen_pki
  local admin_kc restricted_kc
  admin_kc="$(bash "$HERE/mint-user.sh" "$DIR" regcred-admin system:masters | tail -n 1)"
  restricted_kc="$(bash "$HERE/mint-user.sh" "$DIR" regcred-restricted | tail -n 1)"

  # 1. etcd
  local etcd_log="$DIR/logs/etcd.log"
  start_proc etcd "$etcd_log" "$bin/etcd" \
    --name regcred-test \
    --data-dir "$DIR/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "regcred-test=http://127.0.0.1:$peer_port" \
    --initial-cluster-state new \
    --unsafe-no-fsync \
    --log-level warn
  local pid_etcd=$LAST_PID

  # 3./4. moto and the Google fixture start while etcd warms up
  local moto_log="$DIR/logs/moto.log"
  start_proc moto "$moto_log" "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port"
  local pid_moto=$LAST_PID

  mkdir -p "$DIR/google"
  chmod 700 "$DIR/google"
  local google_key="$DIR/google/service-account.json"
  local google_log="$DIR/logs/google-token-fixture.log"
  "$venv/bin/python" "$REPO/tests/fixtures/google_token_server.py" gen-key \
    --out "$google_key" --token-uri "$google_url/token"
  start_proc google-token-fixture "$google_log" "$venv/bin/python" -u \
    "$REPO/tests/fixtures/google_token_server.py" serve \
    --host 127.0.0.1 --port "$google_port" --key-file "$google_key"
  local pid_google=$LAST_PID

  wait_for etcd "$pid_etcd" "$etcd_log" \
    sh -c "curl -fsS --max-time 2 '$etcd_url/health' | grep -q '\"health\":\"true\"'"

  # 2. kube-apiserver
  local pki="$DIR/pki" api_log="$DIR/logs/kube-apiserver.log"
  mkdir -p "$DIR/apiserver"
  # REGCRED_WORLD_AUDIT=1: one audit line per request (metadata only) in DIR/logs/audit.log,
  # for the benchmark's request counts.
  local audit=()
  if [[ "${REGCRED_WORLD_AUDIT:-}" == 1 ]]; then
    printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n' >"$DIR/apiserver/audit-policy.yaml"
    audit=(--audit-policy-file="$DIR/apiserver/audit-policy.yaml" --audit-log-path="$DIR/logs/audit.log" --audit-log-maxbackup=0)
  fi
  start_proc kube-apiserver "$api_log" "$bin/kube-apiserver" \
    "${audit[@]}" \
    --etcd-servers="$etcd_url" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$api_port" \
    --cert-dir="$DIR/apiserver" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=RBAC \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --profiling=false \
    --v=1
  local pid_api=$LAST_PID

  wait_for moto "$pid_moto" "$moto_log" \
    curl -sS --max-time 2 -o /dev/null "$moto_url/moto-api/"
  wait_for google-token-fixture "$pid_google" "$google_log" \
    curl -fsS --max-time 2 "$google_url/healthz"
  wait_for kube-apiserver "$pid_api" "$api_log" \
    sh -c "curl -fsS --max-time 5 --cacert '$pki/ca.crt' --cert '$DIR/users/regcred-admin/client.crt' --key '$DIR/users/regcred-admin/client.key' '$api_url/readyz' | grep -qx ok"

  q() { printf '%q' "$1"; }
  {
    echo "# Test world $(date -u +%FT%TZ) from $SELF"
    echo "# Source this file: . $(q "$DIR/env")"
    echo "#"
    echo "# Quirks: no controller-manager runs, so new namespaces get NO 'default'"
    echo "# ServiceAccount and no kube-root-ca.crt ConfigMap; create the ServiceAccounts"
    echo "# a test needs. Deleted namespaces stay Terminating. Admission plugins: the"
    echo "# kube-apiserver defaults (ServiceAccount admission on). Authorization: RBAC."
    echo "# Identities: admin = CN=regcred-admin,O=system:masters; restricted ="
    echo "# CN=regcred-restricted with no bindings (403 on everything). More:"
    echo "#   bash $(q "$HERE/mint-user.sh") \"\$REGCRED_TEST_WORLD_DIR\" NAME [GROUP...]"
    echo "# Google: the key file's token_uri points at the fixture. GOOGLE_APPLICATION_CREDENTIALS"
    echo "# is deliberately NOT exported; set it per test to \$REGCRED_TEST_GOOGLE_KEY_FILE."
    echo "# Fixture control: POST \$REGCRED_TEST_GOOGLE_FIXTURE_URL/control"
    echo "#   {\"mode\":\"ok|401|500|invalid-json|slow\",\"expires_in\":N,\"delay\":S,\"reset_stats\":true};"
    echo "#   GET \$REGCRED_TEST_GOOGLE_FIXTURE_URL/stats."
    echo "export REGCRED_TEST_WORLD_DIR=$(q "$DIR")"
    echo "export KUBECONFIG=$(q "$admin_kc")"
    echo "export REGCRED_TEST_KUBECONFIG=$(q "$admin_kc")"
    echo "export REGCRED_TEST_RESTRICTED_KUBECONFIG=$(q "$restricted_kc")"
    echo "export REGCRED_TEST_API_SERVER=$(q "$api_url")"
    echo "export REGCRED_TEST_CA_CERT=$(q "$pki/ca.crt")"
    echo "export REGCRED_TEST_CA_KEY=$(q "$pki/ca.key")"
    echo "export REGCRED_TEST_ADMIN_CERT=$(q "$DIR/users/regcred-admin/client.crt")"
    echo "export REGCRED_TEST_ADMIN_KEY=$(q "$DIR/users/regcred-admin/client.key")"
    echo "export REGCRED_TEST_RESTRICTED_CERT=$(q "$DIR/users/regcred-restricted/client.crt")"
    echo "export REGCRED_TEST_RESTRICTED_KEY=$(q "$DIR/users/regcred-restricted/client.key")"
    echo "export REGCRED_TEST_MINT_USER=$(q "$HERE/mint-user.sh")"
    echo "export REGCRED_TEST_ETCD_URL=$(q "$etcd_url")"
    echo "export REGCRED_TEST_K8S_VERSION=$(q "$K8S_VERSION")"
    echo "export REGCRED_TEST_BIN_DIR=$(q "$bin")"
    echo "export REGCRED_TEST_PYTHON=$(q "$venv/bin/python")"
    echo "export REGCRED_TEST_MOTO_URL=$(q "$moto_url")"
    echo "export REGCRED_TEST_AWS_ACCOUNT_ID=123456789012"
    echo "export AWS_ENDPOINT_URL=$(q "$moto_url")"
    echo "export AWS_ACCESS_KEY_ID=testing"
    echo "export AWS_SECRET_ACCESS_KEY=testing"
    echo "export AWS_REGION=us-east-1"
    echo "export AWS_DEFAULT_REGION=us-east-1"
    echo "export AWS_EC2_METADATA_DISABLED=true"
    echo "unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
    echo "export AWS_CONFIG_FILE=/dev/null"
    echo "export AWS_SHARED_CREDENTIALS_FILE=/dev/null"
    echo "export REGCRED_TEST_GOOGLE_KEY_FILE=$(q "$google_key")"
    echo "export REGCRED_TEST_GOOGLE_TOKEN_URL=$(q "$google_url/token")"
    echo "export REGCRED_TEST_GOOGLE_FIXTURE_URL=$(q "$google_url")"
    echo "export REGCRED_TEST_GOOGLE_CLIENT_EMAIL=regcred-test@regcred-test.iam.gserviceaccount.com"
    echo "export NO_PROXY=127.0.0.1,localhost\${NO_PROXY:+,\$NO_PROXY}"
    echo "export no_proxy=127.0.0.1,localhost\${no_proxy:+,\$no_proxy}"
  } >"$DIR/env.tmp"
  mv -f "$DIR/env.tmp" "$DIR/env"
  trap - EXIT
  [[ -n "$prev_exit_trap" ]] && eval "$prev_exit_trap"
  log "world up in $DIR: kube-apiserver $api_url, etcd $etcd_url, moto $moto_url, google $google_url"
  printf '%s\n' "$DIR/env"
}

# ---------------------------------------------------------------- run

do_run() {
  [[ "${1:-}" == "--" ]] && shift
  [[ $# -gt 0 ]] || usage
  local dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/regcred-world.XXXXXX")"
  local child="" watchdog="" status=1 cleaned=0

  cleanup() {
    local rc=$?
    ((cleaned)) && return
    cleaned=1
    trap '' INT TERM
    if [[ -n "$child" ]] && kill -0 "$child" 2>/dev/null; then
      kill -TERM -- "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$child" 2>/dev/null || true
    fi
    do_down "$dir" || true
    if [[ -n "$watchdog" ]]; then kill -- "-$watchdog" 2>/dev/null || kill "$watchdog" 2>/dev/null || true; fi
    rm -rf "$dir/etcd" # ~60 MB of preallocated WAL; logs and certs are kept
    if [[ "$status" == 0 && "${REGCRED_TEST_KEEP_WORLD:-0}" != 1 ]]; then
      rm -rf "$dir"
    else
      log "world dir kept for inspection: $dir (logs in $dir/logs)"
    fi
    return "$rc"
  }
  on_signal() {
    local sig="$1"
    log "caught SIG$sig; tearing the world down"
    status=$((128 + $(kill -l "$sig")))
    cleanup
    exit "$status"
  }
  trap cleanup EXIT
  trap 'on_signal INT' INT
  trap 'on_signal TERM' TERM
  trap 'on_signal HUP' HUP

  do_up "$dir" >/dev/null
  # Watchdog: if this script is SIGKILLed, still tear the world down.
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec bash "$2" down "$3"' \
    world-watchdog "$$" "$SELF" "$dir" </dev/null >>"$dir/logs/watchdog.log" 2>&1 &
  watchdog=$!

  set +e
  (
    set -a
    # shellcheck disable=SC1091
    source "$dir/env"
    set +a
    exec setsid "$@"
  ) &
  child=$!
  # Recorded like the world's processes, so that `down` (from the watchdog
  # too) also stops the command and everything in its process group.
  local st=""
  for _ in 1 2 3 4 5 6 7 8 9 10; do st="$(proc_start "$child")" && break; sleep 0.05; done
  printf '%s %s %s\n' test-command "$child" "${st:-0}" >>"$dir/pids"
  wait "$child"
  status=$?
  # `wait` also returns early when a trapped signal arrives; on_signal exits then.
  set -e
  child=""
  exit "$status"
}

# ---------------------------------------------------------------- main

cmd="${1:-}"
shift || true
case "$cmd" in
  up)
    [[ $# -eq 1 ]] || usage
    do_up "$1"
    ;;
  down)
    [[ $# -eq 1 ]] || usage
    [[ -d "$1" ]] || { log "down: no such dir $1"; exit 0; }
    do_down "$(cd "$1" && pwd)"
    ;;
  run)
    do_run "$@"
    ;;
  *)
    usage
    ;;
esac
