# shellcheck shell=bash
# The test world's node, sourced by world.sh (which calls node_net, node_up and node_down;
# REGCRED_TEST_NODE=0 leaves the node out). One node, `regcred-node`, with what a real one
# runs: containerd (config version 3) with runc and a bridge CNI, the kubelet, kube-proxy
# (iptables, inside the world's network namespace only) and kube-scheduler, CoreDNS as the
# cluster DNS, and registries that authenticate like the real ones (registry_front.py in
# tests/fixtures) under their real names, over TLS with the world's CA.
#
# Addresses (all inside the world's network namespace, which has no route out):
#   10.99.0.2         node0 (a veth; the kubelet refuses a loopback node IP): node IP,
#                     kube-apiserver's advertise address (the `kubernetes` Service's endpoint)
#   10.99.0.10:53     CoreDNS (the kubelet's clusterDNS)
#   10.99.0.11..15    registries: ECR, Artifact Registry + gcr.io, ACR, ECR Public, quay.io
#   10.99.0.16        the cloud APIs a pod calls by name (Entra ID, Google STS and IAM
#                     credentials), relayed to their fixtures on the world's loopback
#   10.244.0.0/22     pods (bridge cni0, host-local IPAM, no masquerade)
#   10.0.0.0/24       Services (kube-proxy)
#
# Host quirks and what gets past each (../shared/PROBES.md, "Measured in round 3"):
# - cgroups are hybrid v1: failCgroupV1: false; pods live under a cgroup root of the world's
#   own (/regcred-<id>), the only cgroup change, removed by node_down.
# - root lacks CAP_SYS_RESOURCE: containerd's restrict_oom_score_adj = true.
# - the kubelet writes host-wide sysctls (vm.overcommit_memory, kernel.panic, ...): containerd
#   and the kubelet run in a mount namespace of the node's own (a holder process keeps it;
#   propagation slave, so nothing mounted there reaches the host) where those /proc/sys files
#   are masked by files of the world dir, and tmpfs covers /run, /var/lib and /var/log (the
#   paths containerd, CNI and the kubelet write that no flag moves). All their mounts
#   (secret volumes, rootfs overlays, sandbox netns files) die with that namespace.
# - `ip netns exec` would give each process a private mount namespace (the kubelet's volumes
#   would never reach containerd): the node's processes enter the network namespace with
#   nsenter --net, and all share the holder's mount namespace.
# - no node-wide registry credentials: a pod without a pull secret must fail. The pause image
#   is imported (ctr images import), never pulled.

NODE_NAME=regcred-node
NODE_IP=10.99.0.2
NODE_DNS_IP=10.99.0.10
POD_CIDR=10.244.0.0/22
POD_GW=10.244.0.1
SANDBOX_IMAGE=registry.k8s.io/pause:3.10.1
# Registry names -> address (one front per address; see tests/fixtures/registry_front.py).
NODE_ECR_HOST=123456789012.dkr.ecr.us-east-1.amazonaws.com
NODE_REGISTRIES=(
  "10.99.0.11 ecr $NODE_ECR_HOST"
  "10.99.0.12 google us-docker.pkg.dev gcr.io"
  "10.99.0.13 acr regcredworld.azurecr.io regcredother.azurecr.io"
  "10.99.0.14 ecr-public public.ecr.aws"
  "10.99.0.15 static quay.io"
  # Not a registry: keyless sources in pods reach Entra ID and Google's federation here, with
  # their default URLs. Pods only (CoreDNS): the world itself keeps its loopback fixtures.
  "10.99.0.16 api login.microsoftonline.com sts.googleapis.com iamcredentials.googleapis.com"
)
# The fixture behind each `api` name (registry_front.py --relay).
NODE_API_RELAYS=(
  "login.microsoftonline.com=https://127.0.0.1:443"
  "sts.googleapis.com=http://127.0.0.1:8085"
  "iamcredentials.googleapis.com=http://127.0.0.1:8085"
)
# The kubelet's host-wide sysctls (pkg/kubelet/cm setupKernelTunables): masked, never written.
NODE_MASKED_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

node_enabled() { [[ "${REGCRED_TEST_NODE:-1}" != 0 ]]; }

# The node's network, before the API server starts (it advertises the node IP).
node_net() {
  local ns="$1" r
  ip -n "$ns" link add node0 type veth peer name node0-peer
  ip -n "$ns" link set node0-peer up
  ip -n "$ns" link set node0 up
  ip -n "$ns" addr add "$NODE_IP/24" dev node0
  ip -n "$ns" addr add "$NODE_DNS_IP/32" dev node0
  for r in "${NODE_REGISTRIES[@]}"; do
    read -r ip _ <<<"$r"
    ip -n "$ns" addr add "$ip/32" dev node0
  done
}

# The registries' names in a hosts file (the world's; CoreDNS answers them to pods too);
# `api` (the cloud APIs' names) only for the pods' file.
node_hosts_lines() {
  local r ip kind names
  for r in "${NODE_REGISTRIES[@]}"; do
    read -r ip kind names <<<"$r"
    [[ "$kind" != api || "${1:-}" == pods ]] || continue
    printf '%s %s\n' "$ip" "$names"
  done
}

# start_node_proc NAME LOG CMD...: like start_proc, but in the node's mount namespace.
start_node_proc() {
  local name="$1" logf="$2"
  shift 2
  setsid nsenter --net="/run/netns/$NETNS" --mount="/proc/$NODE_HOLDER/ns/mnt" -- "$@" </dev/null >>"$logf" 2>&1 &
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

innode() { nsenter --net="/run/netns/$NETNS" --mount="/proc/$NODE_HOLDER/ns/mnt" -- "$@"; }

node_cgroup_root() { printf '/regcred-%s\n' "${1#regcred-}"; }

node_up() {
  local bin="$1" nbin="$2" ppbin="$3" venv="$4"
  local N="$DIR/node" pki="$DIR/pki"
  mkdir -p "$N"/{containerd/root,containerd/state,kubelet,pod-logs,cni/net.d,cni/ipam,sysctl,images,registry}
  local cgroot
  cgroot="$(node_cgroup_root "$NETNS")"
  printf '%s\n' "$cgroot" >"$N/cgroup-root"
  # The kubelet wants its cgroup root to exist in every v1 hierarchy; cpuset needs its cpus
  # and mems before a task can join.
  local h
  for h in /sys/fs/cgroup/*/; do
    h="${h%/}"
    [[ -f "$h/cgroup.procs" && "$h" != */unified ]] || continue
    mkdir -p "$h$cgroot"
    if [[ -f "$h/cpuset.cpus" ]]; then
      cat "$h/cpuset.cpus" >"$h$cgroot/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$cgroot/cpuset.mems"
    fi
  done

  # Identities: the kubelet (Node authorizer + NodeRestriction), the scheduler, kube-proxy.
  bash "$HERE/mint-user.sh" "$DIR" "system:node:$NODE_NAME" system:nodes >/dev/null &
  local m1=$!
  bash "$HERE/mint-user.sh" "$DIR" system:kube-scheduler >/dev/null &
  local m2=$!
  bash "$HERE/mint-user.sh" "$DIR" system:kube-proxy >/dev/null &
  local m3=$!
  # The registries' certificate (every name they serve), from the world's CA.
  local names="" r ip kind hn
  for r in "${NODE_REGISTRIES[@]}"; do
    read -r ip kind hn <<<"$r"
    for h in $hn; do names="${names:+$names, }DNS:$h"; done
  done
  openssl genrsa -out "$pki/registries.key" 2048 2>/dev/null
  openssl req -new -key "$pki/registries.key" -subj "/CN=registries" -out "$pki/registries.csr" 2>/dev/null
  printf '%s\n' "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature, keyEncipherment" \
    "extendedKeyUsage = serverAuth" "subjectAltName = $names" >"$pki/registries.ext"
  openssl x509 -req -in "$pki/registries.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 30 -sha256 \
    -extfile "$pki/registries.ext" -out "$pki/registries.crt" 2>/dev/null
  rm -f "$pki/registries.csr" "$pki/registries.ext"
  chmod 600 "$pki/registries.key"
  if ! wait "$m1" || ! wait "$m2" || ! wait "$m3"; then
    die "minting the node's identities failed"
  fi

  # The mount namespace of the node (see the header), kept by a holder process.
  local s
  for s in "${NODE_MASKED_SYSCTLS[@]}"; do
    # The value the kubelet wants, so it is content; its writes land in this file.
    case "$s" in
      vm/overcommit_memory | kernel/panic_on_oops) echo 1 ;;
      vm/panic_on_oom) echo 0 ;;
      kernel/panic) echo 10 ;;
      kernel/keys/root_maxkeys) echo 1000000 ;;
      kernel/keys/root_maxbytes) echo 25000000 ;;
    esac >"$N/sysctl/${s//\//.}"
  done
  cp "/etc/netns/$NETNS/hosts" "$N/hosts"
  # CoreDNS's answers to pods: never the world's loopback (a pod's 127.0.0.1 is its own).
  {
    grep -vE '^(127\.|::1)' "/etc/netns/$NETNS/hosts" | grep -vE '^10\.99\.0\.1[1-9] '
    node_hosts_lines pods
  } >"$N/pod-hosts"
  local holder_script="$N/holder.sh"
  {
    echo 'set -e'
    for s in "${NODE_MASKED_SYSCTLS[@]}"; do
      printf 'mount --bind %q %q\n' "$N/sysctl/${s//\//.}" "/proc/sys/$s"
    done
    echo 'mount -t tmpfs -o mode=755 regcred-node-run /run'
    echo 'mount -t tmpfs -o mode=755 regcred-node-varlib /var/lib'
    echo 'mount -t tmpfs -o mode=755 regcred-node-varlog /var/log'
    printf 'mount --bind %q /etc/hosts\n' "$N/hosts"
    echo 'echo ready'
    echo 'exec sleep infinity'
  } >"$holder_script"
  setsid nsenter --net="/run/netns/$NETNS" -- unshare -m --propagation slave bash "$holder_script" \
    </dev/null >"$DIR/logs/node-holder.log" 2>&1 &
  NODE_HOLDER=$!
  local st=""
  for _ in $(seq 1 50); do
    st="$(proc_start "$NODE_HOLDER")" && grep -q ready "$DIR/logs/node-holder.log" && break
    check_alive node-holder "$NODE_HOLDER" "$DIR/logs/node-holder.log" || die "the node's mount namespace could not be set up"
    sleep 0.05
  done
  # unshare execs bash, which execs sleep: the holder's PID stays the same.
  printf '%s %s %s\n' node-holder "$NODE_HOLDER" "${st:-0}" >>"$DIR/pids"
  printf '%s\n' "$NODE_HOLDER" >"$N/holder.pid"

  # containerd
  local sock="$N/containerd/containerd.sock"
  mkdir -p "$N/certs.d"
  for r in "${NODE_REGISTRIES[@]}"; do
    read -r ip kind hn <<<"$r"
    [[ "$kind" != api ]] || continue
    for h in $hn; do
      mkdir -p "$N/certs.d/$h"
      printf 'server = "https://%s"\n\n[host."https://%s"]\n  capabilities = ["pull", "resolve"]\n  ca = "%s"\n' \
        "$h" "$h" "$pki/ca.crt" >"$N/certs.d/$h/hosts.toml"
    done
  done
  cat >"$N/containerd.toml" <<EOF
version = 3
root = "$N/containerd/root"
state = "$N/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = "$N/containerd/debug.sock"

[plugins.'io.containerd.internal.v1.opt']
  path = "$N/containerd/opt"

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$nbin/cni"]
    conf_dir = "$N/cni/net.d"
    max_conf_num = 1

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$SANDBOX_IMAGE"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$N/certs.d"
EOF
  cat >"$N/cni/net.d/10-regcred.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "regcred-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$N/cni/ipam"
      }
    }
  ]
}
EOF
  local ctd_log="$DIR/logs/containerd.log"
  start_node_proc containerd "$ctd_log" env PATH="$nbin:$PATH" "$nbin/containerd" --config "$N/containerd.toml" --log-level warn
  local pid_ctd=$LAST_PID
  wait_for containerd "$pid_ctd" "$ctd_log" "$nbin/ctr" --address "$sock" version

  # The images: pause (imported into containerd, never pulled) and the test image, both a
  # static binary appended by crane onto an empty base, through a registry on the world's
  # loopback that also backs the registry fronts.
  local reg_log="$DIR/logs/registry-backend.log" backend=127.0.0.1:5001
  printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\nlog:\n  level: warn\n' \
    "$N/registry" "$backend" >"$N/registry.yml"
  start_proc registry-backend "$reg_log" "$ppbin/registry" serve "$N/registry.yml"
  local pid_reg=$LAST_PID
  wait_for registry-backend "$pid_reg" "$reg_log" inns curl -fsS --max-time 2 "http://$backend/v2/"
  local img="$N/images"
  mkdir -p "$img/pause" "$img/app/bin"
  cp "$nbin/pause" "$img/pause/pause"
  cp "$nbin/busybox" "$img/app/bin/busybox"
  for s in sh sleep cat echo ls wget; do ln -sf busybox "$img/app/bin/$s"; done
  tar -C "$img/pause" -cf "$img/pause.tar" pause
  tar -C "$img/app" -cf "$img/app.tar" bin
  local crane="$ppbin/crane"
  {
    inns "$crane" append --insecure -f "$img/pause.tar" -t "$backend/pause:3.10.1" \
      && inns "$crane" mutate --insecure --set-platform linux/amd64 --entrypoint /pause "$backend/pause:3.10.1" \
      && inns "$crane" pull --insecure "$backend/pause:3.10.1" "$img/pause-image.tar" \
      && inns "$crane" append --insecure -f "$img/app.tar" -t "$backend/app:base" \
      && inns "$crane" mutate --insecure --set-platform linux/amd64 --cmd /bin/sh "$backend/app:base"
  } >>"$DIR/logs/images.log" 2>&1 || die "building the node's images failed; see $DIR/logs/images.log"
  "$nbin/ctr" --address "$sock" -n k8s.io images import --no-unpack=false "$img/pause-image.tar" >>"$DIR/logs/images.log" 2>&1 \
    || die "importing the pause image failed; see $DIR/logs/images.log"
  "$nbin/ctr" --address "$sock" -n k8s.io images tag --force "$backend/pause:3.10.1" "$SANDBOX_IMAGE" >>"$DIR/logs/images.log" 2>&1
  "$nbin/ctr" --address "$sock" -n k8s.io images rm "$backend/pause:3.10.1" >>"$DIR/logs/images.log" 2>&1

  # The registries: one front per address, each checking credentials with its cloud fixture.
  local front_log="$DIR/logs/registry-front.log" front_args=()
  for r in "${NODE_REGISTRIES[@]}"; do
    read -r ip kind hn <<<"$r"
    front_args+=(--listen "$ip:443=$kind")
  done
  for r in "${NODE_API_RELAYS[@]}"; do front_args+=(--relay "$r"); done
  printf '%s\n' "regcred-quay:{SHA}$(printf '%s' "$(cat /proc/sys/kernel/random/uuid)" | tee "$N/quay-password" | openssl dgst -sha1 -binary | base64)" >"$N/quay.htpasswd"
  start_proc registry-front "$front_log" "$venv/bin/python" -u "$REPO/tests/fixtures/registry_front.py" \
    "${front_args[@]}" --backend "http://$backend" --cert "$pki/registries.crt" --key "$pki/registries.key" \
    --ecr-verify "http://127.0.0.1:4566/_fixture/verify" --google-tokeninfo "http://127.0.0.1:8085/tokeninfo" \
    --acr "https://127.0.0.1:443" --acr-ca "$pki/ca.crt" --htpasswd "$N/quay.htpasswd" --control 127.0.0.1:5002
  local pid_front=$LAST_PID

  # kubelet
  local kcfg="$N/kubelet.yaml"
  printf 'nameserver %s\n' "$NODE_DNS_IP" >"$N/resolv.conf"
  cat >"$kcfg" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $cgroot
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
containerRuntimeEndpoint: unix://$sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$NODE_DNS_IP]
clusterDomain: cluster.local
resolvConf: $N/resolv.conf
podLogsDir: $N/pod-logs
failSwapOn: false
protectKernelDefaults: false
registerNode: true
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 1Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
nodeStatusReportFrequency: 10s
EOF
  local kl_log="$DIR/logs/kubelet.log" t0=$SECONDS
  NODE_START_NS="$(date +%s%N)"
  start_node_proc kubelet "$kl_log" "$bin/kubelet" --config "$kcfg" \
    --kubeconfig "$DIR/users/system_node_$NODE_NAME/kubeconfig" --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" --root-dir "$N/kubelet" --v="${REGCRED_TEST_KUBELET_V:-1}"
  local pid_kl=$LAST_PID

  local sched_log="$DIR/logs/kube-scheduler.log"
  start_proc kube-scheduler "$sched_log" "$bin/kube-scheduler" \
    --kubeconfig "$DIR/users/system_kube-scheduler/kubeconfig" \
    --authentication-kubeconfig "$DIR/users/system_kube-scheduler/kubeconfig" \
    --authorization-kubeconfig "$DIR/users/system_kube-scheduler/kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 10259 --v=1
  local pid_sched=$LAST_PID

  cat >"$N/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $DIR/users/system_kube-proxy/kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  local kp_log="$DIR/logs/kube-proxy.log"
  start_node_proc kube-proxy "$kp_log" "$bin/kube-proxy" --config "$N/kube-proxy.yaml" --v=1
  local pid_kp=$LAST_PID

  cat >"$N/Corefile" <<EOF
.:53 {
    bind $NODE_DNS_IP
    errors
    ready 127.0.0.1:8181
    hosts $N/pod-hosts {
        fallthrough
    }
    kubernetes cluster.local in-addr.arpa {
        kubeconfig $DIR/users/regcred-admin/kubeconfig
        fallthrough in-addr.arpa
    }
}
EOF
  local dns_log="$DIR/logs/coredns.log"
  start_proc coredns "$dns_log" "$nbin/coredns" -conf "$N/Corefile"
  local pid_dns=$LAST_PID

  local admin=(--cacert "$pki/ca.crt" --cert "$DIR/users/regcred-admin/client.crt" --key "$DIR/users/regcred-admin/client.key")
  wait_for kubelet "$pid_kl" "$kl_log" \
    inns sh -c "curl -fsS --max-time 5 $(printf '%q ' "${admin[@]}") '$REGCRED_NODE_API/api/v1/nodes/$NODE_NAME' | tr -d ' \\n' | grep -q '\"type\":\"Ready\",\"status\":\"True\"'"
  local ready_ms=$((($(date +%s%N) - NODE_START_NS) / 1000000))
  printf '%s\n' "$ready_ms" >"$N/ready-ms"
  log "node $NODE_NAME Ready ${ready_ms} ms after the kubelet started ($((SECONDS - t0)) s)"
  wait_for kube-scheduler "$pid_sched" "$sched_log" inns curl -fsS -k --max-time 2 https://127.0.0.1:10259/healthz
  wait_for kube-proxy "$pid_kp" "$kp_log" inns curl -fsS --max-time 2 http://127.0.0.1:10256/healthz
  wait_for coredns "$pid_dns" "$dns_log" inns curl -fsS --max-time 2 http://127.0.0.1:8181/ready
  wait_for registry-front "$pid_front" "$front_log" inns curl -fsS --max-time 2 http://127.0.0.1:5002/healthz
}

# The node's lines of DIR/env.
node_env() {
  local N="$DIR/node" r ip kind hn
  echo "export REGCRED_TEST_NODE=$NODE_NAME"
  echo "export REGCRED_TEST_NODE_DIR=$(printf '%q' "$N")"
  echo "export REGCRED_TEST_NODE_CTR=$(printf '%q' "$2/ctr")"
  echo "export REGCRED_TEST_CONTAINERD_SOCK=$(printf '%q' "$N/containerd/containerd.sock")"
  echo "export REGCRED_TEST_REGISTRY_BACKEND=127.0.0.1:5001"
  echo "export REGCRED_TEST_REGISTRY_CONTROL=http://127.0.0.1:5002"
  echo "export REGCRED_TEST_CRANE=$(printf '%q' "$3/crane")"
  echo "export REGCRED_TEST_QUAY_USER=regcred-quay"
  echo "export REGCRED_TEST_QUAY_PASSWORD_FILE=$(printf '%q' "$N/quay-password")"
  echo "export REGCRED_TEST_ECR_REGISTRY=$NODE_ECR_HOST"
}

# Before the world's processes are stopped: the kubelet first (it would restart containers),
# then every process in the node's cgroups (the pods': ours alone, by construction).
node_down() {
  local dir="$1" n p s
  [[ -f "$dir/node/cgroup-root" ]] || return 0
  local cgroot
  cgroot="$(cat "$dir/node/cgroup-root")"
  if [[ -f "$dir/pids" ]]; then
    while read -r n p s; do
      if [[ "$n" == kubelet ]] && alive "$p" "$s"; then
        kill -TERM "$p" 2>/dev/null || true
        for _ in $(seq 1 50); do alive "$p" "$s" || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
      fi
    done <"$dir/pids"
  fi
  local d pid left
  for _ in $(seq 1 50); do
    left=0
    for d in /sys/fs/cgroup/*"$cgroot"; do
      [[ -d "$d" ]] || continue
      while read -r pid; do
        [[ -n "$pid" ]] || continue
        left=1
        kill -KILL "$pid" 2>/dev/null || true
      done < <(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null)
    done
    ((left)) || break
    sleep 0.1
  done
}

# After the world's processes are gone: the cgroup root, deepest first.
node_cleanup() {
  local dir="$1"
  [[ -f "$dir/node/cgroup-root" ]] || return 0
  local cgroot d
  cgroot="$(cat "$dir/node/cgroup-root")"
  [[ "$cgroot" == /regcred-* ]] || return 0
  for d in /sys/fs/cgroup/*"$cgroot"; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d "$d" ]] && log "down: could not remove cgroup $d"
  done
  rm -f "$dir/node/cgroup-root"
}
