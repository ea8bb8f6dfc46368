#!/usr/bin/env bash
# The test world: a real kube-apiserver + kube-controller-manager + etcd, moto (AWS
# ECR/STS) behind a cloud fixture that behaves as AWS does, a Google OAuth2 token fixture,
# and the link-local credential endpoints of EC2 (IMDSv2), EKS (Pod Identity agent) and
# GKE (metadata server), all inside a network namespace of its own.
#
#   world.sh up DIR          create the network namespace, start everything in it
#                            in the background, write DIR/env (sourceable `export`
#                            lines), DIR/netns and DIR/pids, wait until all are
#                            ready, exit 0 (processes keep running).
#   world.sh exec DIR [-- CMD...]
#                            run CMD (default: $SHELL) inside DIR's network
#                            namespace with DIR/env applied: the only way to reach
#                            the world (its 127.0.0.1 is not the host's).
#   world.sh down DIR        stop (TERM, then KILL) every process `up` started
#                            in DIR and anything left in its namespace, delete the
#                            namespace; idempotent.
#   world.sh run -- CMD...   mktemp a DIR, up, run CMD in the namespace with
#                            DIR/env applied, down on exit/INT/TERM (a watchdog
#                            downs it even if this script is SIGKILLed); exits
#                            with CMD's status. The DIR is removed when CMD
#                            passes, kept (and printed) when it fails;
#                            REGCRED_TEST_KEEP_WORLD=1 always keeps it.
#
# Network: `ip netns add regcred-<random>` (needs root or CAP_SYS_ADMIN), lo up with
# 169.254.169.254/32 and 169.254.170.23/32 on it, /etc/netns/<name>/hosts mapping
# metadata.google.internal to 169.254.169.254 and login.microsoftonline.com and the
# test registries (*.azurecr.io) to 127.0.0.1. Every service listens on fixed ports
# of the namespace's own loopback (two worlds never collide): etcd 2379, API server
# 6443, moto 5000, AWS API front 4566, Google token fixture 8085, Entra ID + ACR
# 443 (TLS; control 4443), IMDS + GKE metadata 169.254.169.254:80, Pod Identity
# agent 169.254.170.23:80.
#
# Binaries: tests/testenv/build-k8s.sh (kube-apiserver, kube-controller-manager, etcd, and
# the node's kubelet, kube-scheduler, kube-proxy; honours KUBEBUILDER_ASSETS),
# tests/testenv/setup-venv.sh (moto, cryptography), and for the node build-node.sh
# (containerd, CoreDNS, CNI, busybox, pause) and build-pullproof.sh (crane, registry).
# Both build/install on first use and are cached under
# ${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/.
#
# Quirks of this world (one node, tests/testenv/node.sh; REGCRED_TEST_NODE=0: none, no Pod runs):
# - kube-controller-manager runs the serviceaccount, serviceaccount-token,
#   root-ca-cert-publisher, namespace and garbagecollector controllers only (with the node
#   also nodelifecycle, deployment, replicaset, job, cronjob, endpointslice, resourcequota). A new
#   namespace gets its `default` ServiceAccount and kube-root-ca.crt ConfigMap a
#   moment AFTER it is created (as in a real cluster: create-or-ignore, or wait);
#   deleted namespaces finalize (their contents are deleted, then the namespace).
# - The aggregated ClusterRoles (view, edit, admin) have no rules (no
#   clusterrole-aggregation controller): bind explicit Roles.
# - Identities are client certificates signed by DIR/pki/ca.crt; mint more
#   with tests/testenv/mint-user.sh DIR NAME [GROUP...].
# Logs: DIR/logs/*.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SELF="$HERE/world.sh"
# shellcheck source=versions.env
source "$HERE/versions.env"
# shellcheck source=node.sh
source "$HERE/node.sh"

log() { printf '[world] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

READY_TIMEOUT="${REGCRED_TEST_READY_TIMEOUT:-180}"
SA_ISSUER=https://kubernetes.default.svc.cluster.local
# The Entra tenant and the registries of the Azure fixture (the first is the tests' own).
AZURE_TENANT=5e7c1a2b-0f3d-4c8e-9a61-2b7d4f0c9e13
AZURE_REGISTRIES="regcredworld.azurecr.io regcredother.azurecr.io"
# The workload identity pool provider the Google fixture's STS trusts (issuer SA_ISSUER).
WIF_PROVIDER=projects/123456789012/locations/global/workloadIdentityPools/regcred-pool/providers/world

usage() {
  sed -n '2,/^# Binaries/{/^# Binaries/!p;}' "$SELF" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- network namespace

# The namespace named in DIR/netns (empty if none).
netns_of() { cat "$1/netns" 2>/dev/null || true; }

# Runs a command inside the world's namespace ($NETNS, set by do_up).
inns() { ip netns exec "$NETNS" "$@"; }

netns_create() {
  command -v ip >/dev/null || die "the 'ip' command (iproute2) is needed to create the world's network namespace"
  NETNS="regcred-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
  ip netns add "$NETNS" 2>"$DIR/logs/netns.err" \
    || die "cannot create network namespace $NETNS ($(cat "$DIR/logs/netns.err")); the test world needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN)"
  printf '%s\n' "$NETNS" >"$DIR/netns"
  ip -n "$NETNS" link set lo up
  ip -n "$NETNS" addr add 169.254.169.254/32 dev lo # EC2 IMDS, GKE metadata server
  ip -n "$NETNS" addr add 169.254.170.23/32 dev lo  # EKS Pod Identity agent
  # `ip netns exec` bind-mounts /etc/netns/NAME/hosts over /etc/hosts.
  mkdir -p "/etc/netns/$NETNS"
  printf '%s\n' \
    "127.0.0.1 localhost" \
    "::1 localhost ip6-localhost ip6-loopback" \
    "169.254.169.254 metadata.google.internal metadata" \
    "127.0.0.1 login.microsoftonline.com" >"/etc/netns/$NETNS/hosts"
  if node_enabled; then
    # The registries (ACR's too) live on the node's addresses, fronted by registry_front.py,
    # which relays ACR's token endpoints to the Azure fixture.
    node_net "$NETNS"
    node_hosts_lines >>"/etc/netns/$NETNS/hosts"
  else
    echo "127.0.0.1 $AZURE_REGISTRIES" >>"/etc/netns/$NETNS/hosts"
  fi
  log "network namespace $NETNS"
}

# Stops whatever still runs in the namespace (only the world's processes can be there),
# then deletes it.
netns_delete() {
  local ns="$1" pid
  [[ -n "$ns" ]] || return 0
  if ip netns list 2>/dev/null | grep -qE "^$ns( |\$)"; then
    local -a stragglers=()
    mapfile -t stragglers < <(ip netns pids "$ns" 2>/dev/null)
    if ((${#stragglers[@]})); then
      for pid in "${stragglers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
      for _ in $(seq 1 30); do
        mapfile -t stragglers < <(ip netns pids "$ns" 2>/dev/null)
        ((${#stragglers[@]})) || break
        sleep 0.1
      done
      for pid in "${stragglers[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    ip netns del "$ns" 2>/dev/null || log "down: could not delete network namespace $ns"
  fi
  rm -rf "/etc/netns/$ns"
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

# start NAME LOGFILE CMD... : runs CMD in its own session inside the world's network
# namespace, records "NAME PID START", sets LAST_PID.
start_proc() {
  local name="$1" logf="$2"
  shift 2
  setsid ip netns exec "$NETNS" "$@" </dev/null >>"$logf" 2>&1 &
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
  if [[ ! -f "$dir/pids" ]]; then
    netns_delete "$(netns_of "$dir")"
    rm -f "$dir/netns"
    log "down: nothing recorded in $dir"
    return 0
  fi
  node_down "$dir"
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
  local ns
  ns="$(netns_of "$dir")"
  netns_delete "$ns"
  rm -f "$dir/netns"
  node_cleanup "$dir"
  log "down: stopped ${#pids[@]} process(es) of $dir${ns:+, deleted network namespace $ns}"
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
  # Entra ID and the container registries (tests/fixtures/azure_fixture.py), under their
  # real names: the binary reaches them with its own defaults, trusting this CA.
  openssl genrsa -out "$pki/azure.key" 2048 2>/dev/null
  openssl req -new -key "$pki/azure.key" -subj "/CN=login.microsoftonline.com" -out "$pki/azure.csr" 2>/dev/null
  printf '%s\n' "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature, keyEncipherment" \
    "extendedKeyUsage = serverAuth" "subjectAltName = DNS:login.microsoftonline.com, DNS:*.azurecr.io" >"$pki/azure.ext"
  openssl x509 -req -in "$pki/azure.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 30 -sha256 \
    -extfile "$pki/azure.ext" -out "$pki/azure.crt" 2>/dev/null
  rm -f "$pki/azure.csr" "$pki/azure.ext"
  # ServiceAccount token signing key pair
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key
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
  netns_delete "$(netns_of "$DIR")"
  rm -rf "$DIR/etcd" "$DIR/pki" "$DIR/users" "$DIR/google" "$DIR/apiserver" "$DIR/kcm" "$DIR/logs" "$DIR/env" "$DIR/pids.down" "$DIR/netns" "$DIR/node"
  mkdir -p "$DIR/logs"
  : >"$DIR/pids"

  local bin venv
  bin="$(bash "$HERE/build-k8s.sh" | tail -n 1)"
  venv="$(bash "$HERE/setup-venv.sh" | tail -n 1)"
  [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/etcd" ]] \
    || die "no kube-apiserver/kube-controller-manager/etcd in '$bin'"
  [[ -x "$venv/bin/python" ]] || die "no python in venv '$venv'"
  local nbin="" ppbin=""
  if node_enabled; then
    nbin="$(bash "$HERE/build-node.sh" | tail -n 1)"
    ppbin="$(bash "$HERE/build-pullproof.sh" | tail -n 1)"
  fi

  # If anything below fails, stop what was started.
  local prev_exit_trap
  prev_exit_trap="$(trap -p EXIT)"
  trap 'rc=$?; if [[ $rc -ne 0 ]]; then log "up failed (exit $rc); stopping what was started"; do_down "$DIR" || true; fi' EXIT

  netns_create
  # Fixed ports: the namespace's loopback is the world's alone.
  local etcd_port=2379 peer_port=2380 api_port=6443 moto_port=5000 google_port=8085 cloud_port=4566
  local api_url="https://127.0.0.1:$api_port"
  local etcd_url="http://127.0.0.1:$etcd_port"
  local moto_url="http://127.0.0.1:$moto_port"
  local google_url="http://127.0.0.1:$google_port"
  local cloud_url="http://127.0.0.1:$cloud_port"
  printf '%s\n' "$api_url" >"$DIR/server-url"

  gen_pki
  # Identities, minted in parallel (RSA key generation is most of up's own CPU time).
  bash "$HERE/mint-user.sh" "$DIR" regcred-admin system:masters >/dev/null &
  local mint1=$!
  bash "$HERE/mint-user.sh" "$DIR" regcred-restricted >/dev/null &
  local mint2=$!
  bash "$HERE/mint-user.sh" "$DIR" system:kube-controller-manager >/dev/null &
  local mint3=$!
  if ! wait "$mint1" || ! wait "$mint2" || ! wait "$mint3"; then
    die "minting the world's identities failed"
  fi
  local admin_kc="$DIR/users/regcred-admin/kubeconfig"
  local restricted_kc="$DIR/users/regcred-restricted/kubeconfig"
  local kcm_kc="$DIR/users/system_kube-controller-manager/kubeconfig"

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
    --host 127.0.0.1 --port "$google_port" --key-file "$google_key" \
    --sa-public-key "$DIR/pki/sa.pub" --issuer "$SA_ISSUER" --wif-provider "$WIF_PROVIDER"
  local pid_google=$LAST_PID

  # The AWS API as AWS behaves, in front of moto: a new ECR token per call, SigV4 and web
  # identity tokens checked; and the link-local credential endpoints (IMDSv2, GKE
  # metadata server, EKS Pod Identity agent). tests/fixtures/cloud_fixture.py.
  local cloud_log="$DIR/logs/cloud-fixture.log"
  start_proc cloud-fixture "$cloud_log" "$venv/bin/python" -u "$REPO/tests/fixtures/cloud_fixture.py" \
    --upstream "$moto_url" --api "127.0.0.1:$cloud_port" \
    --metadata 169.254.169.254:80 --pod-identity 169.254.170.23:80 \
    --sa-public-key "$DIR/pki/sa.pub" --issuer "$SA_ISSUER" --static-key testing:testing
  local pid_cloud=$LAST_PID

  # Entra ID and ACR over HTTPS on 127.0.0.1:443 (the hosts file names them); control on
  # plain HTTP. tests/fixtures/azure_fixture.py.
  local azure_log="$DIR/logs/azure-fixture.log" azure_control="http://127.0.0.1:4443"
  local azure_registry_args=() r
  for r in $AZURE_REGISTRIES; do azure_registry_args+=(--registry "$r"); done
  start_proc azure-fixture "$azure_log" "$venv/bin/python" -u "$REPO/tests/fixtures/azure_fixture.py" \
    --tls 127.0.0.1:443 --control 127.0.0.1:4443 --cert "$DIR/pki/azure.crt" --key "$DIR/pki/azure.key" \
    --tenant "$AZURE_TENANT" "${azure_registry_args[@]}" \
    --sa-public-key "$DIR/pki/sa.pub" --issuer "$SA_ISSUER"
  local pid_azure=$LAST_PID

  wait_for etcd "$pid_etcd" "$etcd_log" \
    inns sh -c "curl -fsS --max-time 2 '$etcd_url/health' | grep -q '\"health\":\"true\"'"

  # 2. kube-apiserver
  local pki="$DIR/pki" api_log="$DIR/logs/kube-apiserver.log"
  mkdir -p "$DIR/apiserver"
  # REGCRED_WORLD_AUDIT=1: one audit line per request (metadata only) in DIR/logs/audit.log,
  # for the benchmark's request counts.
  local audit=()
  # With the node: reachable from pods (the `kubernetes` Service's endpoint is the node IP,
  # kept by the API server's lease reconciler), the Node authorizer and NodeRestriction for
  # the kubelet, and the kubelet reached by its InternalIP (no DNS for node names).
  local api_net=(--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none
    --authorization-mode=RBAC)
  if node_enabled; then
    # shellcheck disable=SC2054 # Node,RBAC is one value
    api_net=(--bind-address=0.0.0.0 --advertise-address="$NODE_IP" --authorization-mode=Node,RBAC
      --enable-admission-plugins=NodeRestriction --kubelet-preferred-address-types=InternalIP
      --kubelet-client-certificate="$DIR/users/regcred-admin/client.crt"
      --kubelet-client-key="$DIR/users/regcred-admin/client.key" --kubelet-certificate-authority=)
  fi
  if [[ "${REGCRED_WORLD_AUDIT:-}" == 1 ]]; then
    printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n' >"$DIR/apiserver/audit-policy.yaml"
    audit=(--audit-policy-file="$DIR/apiserver/audit-policy.yaml" --audit-log-path="$DIR/logs/audit.log" --audit-log-maxbackup=0)
  fi
  start_proc kube-apiserver "$api_log" "$bin/kube-apiserver" \
    "${audit[@]}" "${api_net[@]}" \
    --etcd-servers="$etcd_url" \
    --secure-port="$api_port" \
    --cert-dir="$DIR/apiserver" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-account-issuer="$SA_ISSUER" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --profiling=false \
    --v=1
  local pid_api=$LAST_PID

  # 3. kube-controller-manager: starts now and waits for the API server by itself. Its
  # controllers act under their own ServiceAccounts (kube-system), as kubeadm sets it up.
  local kcm_log="$DIR/logs/kube-controller-manager.log"
  local kcm_controllers=serviceaccount,serviceaccount-token,root-ca-cert-publisher,namespace,garbagecollector
  # The node's not-ready taint is lifted by the node lifecycle controller, as in a cluster; with
  # the node, the workload controllers too (a Deployment's pods, a Job's, a CronJob's Jobs) and
  # the EndpointSlices of Services with a selector, which kube-proxy routes (the chart's
  # `helm test` asks its Service), and ResourceQuota usage.
  node_enabled && kcm_controllers="$kcm_controllers,nodelifecycle,deployment,replicaset,job,cronjob,endpointslice,resourcequota"
  start_proc kube-controller-manager "$kcm_log" "$bin/kube-controller-manager" \
    --kubeconfig="$kcm_kc" \
    --controllers="$kcm_controllers" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --leader-elect=false \
    --secure-port=0 \
    --profiling=false \
    --v=1
  local pid_kcm=$LAST_PID

  wait_for moto "$pid_moto" "$moto_log" \
    inns curl -sS --max-time 2 -o /dev/null "$moto_url/moto-api/"
  wait_for google-token-fixture "$pid_google" "$google_log" \
    inns curl -fsS --max-time 2 "$google_url/healthz"
  wait_for cloud-fixture "$pid_cloud" "$cloud_log" \
    inns sh -c "curl -fsS --max-time 2 '$cloud_url/_fixture/healthz' && curl -sS --max-time 2 -o /dev/null http://169.254.169.254/ && curl -sS --max-time 2 -o /dev/null http://169.254.170.23/"
  wait_for azure-fixture "$pid_azure" "$azure_log" \
    inns sh -c "curl -fsS --max-time 2 '$azure_control/healthz' >/dev/null && curl -sS --max-time 2 -o /dev/null --cacert '$DIR/pki/ca.crt' https://login.microsoftonline.com/"
  wait_for kube-apiserver "$pid_api" "$api_log" \
    inns sh -c "curl -fsS --max-time 5 --cacert '$pki/ca.crt' --cert '$DIR/users/regcred-admin/client.crt' --key '$DIR/users/regcred-admin/client.key' '$api_url/readyz' | grep -qx ok"
  # The controllers work once the `default` namespace has its `default` ServiceAccount.
  wait_for kube-controller-manager "$pid_kcm" "$kcm_log" \
    inns curl -fsS --max-time 5 -o /dev/null --cacert "$pki/ca.crt" --cert "$DIR/users/regcred-admin/client.crt" \
    --key "$DIR/users/regcred-admin/client.key" "$api_url/api/v1/namespaces/default/serviceaccounts/default"
  if node_enabled; then
    REGCRED_NODE_API="$api_url" node_up "$bin" "$nbin" "$ppbin" "$venv"
  fi

  q() { printf '%q' "$1"; }
  {
    echo "# Test world $(date -u +%FT%TZ) from $SELF"
    echo "# Everything listens inside the network namespace $NETNS: from the host, enter it with"
    echo "#   bash $(q "$SELF") exec $(q "$DIR")            (a shell with this file applied), or"
    echo "#   bash $(q "$SELF") exec $(q "$DIR") -- CMD...  (or: ip netns exec $NETNS CMD..., after sourcing this file)"
    echo "#"
    echo "# Quirks: kube-controller-manager runs (serviceaccount, serviceaccount-token,"
    echo "# root-ca-cert-publisher, namespace, garbagecollector): a new namespace gets its"
    echo "# 'default' ServiceAccount a moment AFTER it is created (create-or-ignore-AlreadyExists,"
    echo "# or wait for it); deleted namespaces finalize. One node (tests/testenv/node.sh) unless REGCRED_TEST_NODE=0."
    echo "# Admission plugins: the kube-apiserver defaults (ServiceAccount admission on)."
    echo "# Authorization: RBAC; the aggregated ClusterRoles view/edit/admin have no rules."
    echo "# Identities: admin = CN=regcred-admin,O=system:masters; restricted ="
    echo "# CN=regcred-restricted with no bindings (403 on everything). More:"
    echo "#   bash $(q "$HERE/mint-user.sh") \"\$REGCRED_TEST_WORLD_DIR\" NAME [GROUP...]"
    echo "# Google: the key file's token_uri points at the fixture. GOOGLE_APPLICATION_CREDENTIALS"
    echo "# is deliberately NOT exported; set it per test to \$REGCRED_TEST_GOOGLE_KEY_FILE."
    echo "# Fixture control: POST \$REGCRED_TEST_GOOGLE_FIXTURE_URL/control"
    echo "#   {\"mode\":\"ok|401|500|invalid-json|slow\",\"expires_in\":N,\"delay\":S,\"reset_stats\":true};"
    echo "#   GET \$REGCRED_TEST_GOOGLE_FIXTURE_URL/stats."
    echo "# Google workload identity federation (same fixture): STS at \$REGCRED_TEST_GOOGLE_FIXTURE_URL/v1/token"
    echo "#   for the audience \$REGCRED_TEST_GOOGLE_WIF_AUDIENCE, subject tokens from this API server"
    echo "#   (kubectl create token SA --audience https://iam.googleapis.com/<provider>); impersonation of"
    echo "#   \$REGCRED_TEST_GOOGLE_CLIENT_EMAIL at /v1/projects/-/serviceAccounts/<email>:generateAccessToken."
    echo "# AWS: AWS_ENDPOINT_URL is the cloud fixture in front of moto (REGCRED_TEST_MOTO_URL):"
    echo "#   every ECR GetAuthorizationToken answers a new token valid 12 h; SigV4 is checked"
    echo "#   (key testing/testing, or keys STS/IMDS/Pod Identity handed out); web identity"
    echo "#   tokens must come from this API server for the audience sts.amazonaws.com."
    echo "#   POST \$REGCRED_TEST_ECR_FIXTURE_URL/_fixture/control {\"ecr\":{\"lifetime\":S},\"reset_stats\":true};"
    echo "#   GET \$REGCRED_TEST_ECR_FIXTURE_URL/_fixture/stats (ecr.token_calls, ...)."
    echo "# Keyless (same fixture): EC2 IMDSv2 and the GKE metadata server on 169.254.169.254:80"
    echo "#   (metadata.google.internal), the EKS Pod Identity agent on 169.254.170.23:80"
    echo "#   (/v1/credentials, Authorization = a ServiceAccount token for pods.eks.amazonaws.com)."
    echo "#   IRSA: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE with a token of this API server"
    echo "#   (kubectl create token SA --audience sts.amazonaws.com). Each endpoint: control"
    echo "#   {\"imds\"|\"gke\"|\"pod_identity\": {\"mode\": \"ok|absent|hang|refuse|error\"}}. The static"
    echo "#   keys below win in the SDK's chain: unset them (and AWS_EC2_METADATA_DISABLED) to go keyless."
    echo "# Azure: Entra ID (login.microsoftonline.com) and ACR (\$REGCRED_TEST_AZURE_REGISTRY) on"
    echo "#   https://127.0.0.1:443 by their real names (this namespace's hosts file), certificate"
    echo "#   from \$REGCRED_TEST_CA_CERT (give the binary SSL_CERT_FILE=that). Tenant"
    echo "#   \$REGCRED_TEST_AZURE_TENANT. Register an app per test: POST \$REGCRED_TEST_AZURE_CONTROL_URL/apps"
    echo "#   {\"client_id\",\"secret\"?,\"subjects\":[system:serviceaccount:NS:SA],\"refresh_lifetime\"?,\"acr_pull\":[host]};"
    echo "#   GET \$REGCRED_TEST_AZURE_CONTROL_URL/stats. Federated tokens: audience api://AzureADTokenExchange."
    echo "export REGCRED_TEST_WORLD_DIR=$(q "$DIR")"
    echo "export REGCRED_TEST_NETNS=$(q "$NETNS")"
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
    echo "export REGCRED_TEST_ECR_FIXTURE_URL=$(q "$cloud_url")"
    echo "export REGCRED_TEST_SA_ISSUER=$(q "$SA_ISSUER")"
    echo "export REGCRED_TEST_POD_IDENTITY_URI=http://169.254.170.23/v1/credentials"
    echo "export REGCRED_TEST_AWS_ACCOUNT_ID=123456789012"
    echo "export AWS_ENDPOINT_URL=$(q "$cloud_url")"
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
    echo "export REGCRED_TEST_GOOGLE_WIF_AUDIENCE=$(q "//iam.googleapis.com/$WIF_PROVIDER")"
    echo "export REGCRED_TEST_AZURE_CONTROL_URL=$(q "$azure_control")"
    echo "export REGCRED_TEST_AZURE_TENANT=$(q "$AZURE_TENANT")"
    echo "export REGCRED_TEST_AZURE_REGISTRY=$(q "${AZURE_REGISTRIES%% *}")"
    echo "export REGCRED_TEST_AZURE_OTHER_REGISTRY=$(q "${AZURE_REGISTRIES##* }")"
    echo "unset AZURE_TENANT_ID AZURE_CLIENT_ID AZURE_FEDERATED_TOKEN_FILE AZURE_AUTHORITY_HOST AZURE_CLIENT_SECRET"
    echo "export NO_PROXY=127.0.0.1,localhost\${NO_PROXY:+,\$NO_PROXY}"
    echo "export no_proxy=127.0.0.1,localhost\${no_proxy:+,\$no_proxy}"
    if node_enabled; then node_env "$bin" "$nbin" "$ppbin"; fi
  } >"$DIR/env.tmp"
  mv -f "$DIR/env.tmp" "$DIR/env"
  trap - EXIT
  [[ -n "$prev_exit_trap" ]] && eval "$prev_exit_trap"
  log "world up in $DIR (network namespace $NETNS): kube-apiserver $api_url, etcd $etcd_url, moto $moto_url (AWS API via $cloud_url), google $google_url; enter it with: bash $SELF exec $DIR"
  printf '%s\n' "$DIR/env"
}

# ---------------------------------------------------------------- run

do_run() {
  [[ "${1:-}" == "--" ]] && shift
  [[ $# -gt 0 ]] || usage
  local dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/regcred-world.XXXXXX")"
  local child="" watchdog="" status=1 cleaned=0

  # shellcheck disable=SC2317 # invoked from traps
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
  # shellcheck disable=SC2317 # invoked from traps
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
  local ns
  ns="$(netns_of "$dir")"
  # Watchdog: if this script is SIGKILLed, still tear the world down.
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec bash "$2" down "$3"' \
    world-watchdog "$$" "$SELF" "$dir" </dev/null >>"$dir/logs/watchdog.log" 2>&1 &
  watchdog=$!

  set +e
  (
    set -a
    # shellcheck disable=SC1091
    source "$dir/env"
    set +a
    exec setsid ip netns exec "$ns" "$@"
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

# ---------------------------------------------------------------- exec

do_exec() {
  local dir
  dir="$(cd "$1" && pwd)"
  shift
  [[ "${1:-}" == "--" ]] && shift
  local ns
  ns="$(netns_of "$dir")"
  [[ -n "$ns" && -f "$dir/env" ]] || die "no world is up in $dir (run: $SELF up $dir)"
  ((${#@})) || set -- "${SHELL:-bash}"
  set -a
  # shellcheck disable=SC1091
  source "$dir/env"
  set +a
  exec ip netns exec "$ns" "$@"
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
  exec)
    [[ $# -ge 1 ]] || usage
    do_exec "$@"
    ;;
  *)
    usage
    ;;
esac
