#!/usr/bin/env bash
# Chart tests. Run inside a test world (make chart-test does:
#   bash tests/testenv/world.sh run -- bash tests/chart/run.sh):
#  1. helm lint --strict with every fixture values file; hadolint on the Dockerfile
#  2. helm-unittest suites (charts/regcred-refresher/tests)
#  3. the chart README is the one generated from values.yaml
#  4. kubeconform -strict against schemas generated from the world's API server OpenAPI
#  5. every rendered manifest (all fixtures, hooks included) applied with --dry-run=server
#  6. the chart's RBAC really applied (helm install --no-hooks), then the binary runs --once
#     with a token of the chart's own ServiceAccount and succeeds; dropping any single verb
#     of the rules it uses makes it fail (necessary), and `kubectl auth can-i` shows what it
#     cannot do (no other secret names, no namespaces outside a namespaced target list, no
#     delete without prune, no list of secrets in cronjob mode, and with prune no list or watch
#     of secrets without a name); the daemon's admin listener on [::] answers on IPv4 and IPv6
#  7. lifecycle: install (cronjob), upgrade to deployment and back, then the pre-delete cleanup
#     hook's script under its own ServiceAccount removes this release's secrets, references
#     and Lease and nothing else; helm uninstall.
# Needs: target/debug/regcred-refresher (cargo build), Go (tools are go-installed and cached).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CHART="$REPO/charts/regcred-refresher"
FIX="$HERE/fixtures"
BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/regcred-refresher"
: "${KUBECONFIG:?run inside the test world: bash tests/testenv/world.sh run -- bash tests/chart/run.sh}"

TOOLS_BIN="$(bash "$HERE/tools.sh" | tail -n 1)"
export PATH="$TOOLS_BIN:$PATH"
HELM_PLUGINS="$(dirname "$TOOLS_BIN")/helm-plugins"
export HELM_PLUGINS
WORK="$(mktemp -d)"
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"
trap 'rm -rf "$WORK"' EXIT
[[ -x "$BIN" ]] || { echo "run.sh: $BIN missing: run cargo build first" >&2; exit 1; }

PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); printf 'ok   %s\n' "$*"; }
bad() { FAILED=$((FAILED + 1)); printf 'FAIL %s\n' "$*"; }
# check NAME CMD...: CMD must succeed
check() { local n="$1"; shift; if "$@" >"$WORK/out" 2>&1; then ok "$n"; else bad "$n"; sed 's/^/     /' "$WORK/out" | tail -n 30; fi; }
# refuse NAME CMD...: CMD must fail
refuse() { local n="$1"; shift; if "$@" >"$WORK/out" 2>&1; then bad "$n (unexpectedly succeeded)"; sed 's/^/     /' "$WORK/out" | tail -n 10; else ok "$n"; fi; }
step() { printf '\n== %s\n' "$*"; }

FIXTURES=("$FIX"/values-*.yaml)

step "helm lint"
for f in "${FIXTURES[@]}"; do
  check "helm lint --strict $(basename "$f")" helm lint --strict "$CHART" -f "$f"
done
refuse "helm lint refuses mode=daemonset (schema)" helm lint --strict "$CHART" -f "$FIX/values-static.yaml" --set mode=daemonset
refuse "helm lint refuses replicaCount=two (schema)" helm lint --strict "$CHART" -f "$FIX/values-static.yaml" --set replicaCount=two
# The schema refuses what the binary refuses at start (a clean install that crash-loops is the
# worst place to learn it) and accepts what the binary accepts.
refuse "helm lint refuses leaderElection.leaseDuration=3 (the binary takes 5..3600)" \
  helm lint --strict "$CHART" -f "$FIX/values-static.yaml" --set leaderElection.leaseDuration=3
refuse "helm lint refuses registries[].name ECR_Main (a DNS label, as the binary checks)" \
  helm lint --strict "$CHART" -f "$FIX/values-static.yaml" --set 'config.registries[0].name=ECR_Main' \
  --set 'config.secrets[0].registries[0]=ECR_Main'
for a in 0.0.0 0.0.0.256 01.2.3.4 ":::1" "fe80::1::2" localhost; do
  refuse "helm lint refuses admin.address=$a (not an IP address)" \
    helm lint --strict "$CHART" -f "$FIX/values-static.yaml" --set-string "admin.address=$a"
done
for a in 0.0.0.0 127.0.0.1 "::" "::1" "[::]" "fd00:ec2::254" "::ffff:10.0.0.1"; do
  check "helm lint accepts admin.address=$a" helm lint --strict "$CHART" -f "$FIX/values-static.yaml" --set-string "admin.address=$a"
done
check "helm lint accepts a dotted secret name (a DNS subdomain, as the binary checks)" \
  helm lint --strict "$CHART" -f "$FIX/values-static.yaml" --set 'config.secrets[0].name=regcred.ecr'

check "Chart.yaml has home, sources, icon and Artifact Hub annotations" bash -c \
  "helm show chart '$CHART' | grep -q '^home: https://' && helm show chart '$CHART' | grep -q '^icon: https://' \
   && helm show chart '$CHART' | grep -A1 '^sources:' | grep -q 'https://' \
   && helm show chart '$CHART' | grep -q 'artifacthub.io/license:' && helm show chart '$CHART' | grep -q 'artifacthub.io/images:'"

step "Dockerfile lint"
check "hadolint Dockerfile" hadolint "$REPO/Dockerfile"

step "helm unittest"
check "helm unittest charts/regcred-refresher" helm unittest "$CHART"

step "chart README is generated from values.yaml"
cp -r "$CHART" "$WORK/chart-copy"
bash "$HERE/gen-readme.sh" "$WORK/chart-copy" >/dev/null 2>&1
check "README.md up to date (bash tests/chart/gen-readme.sh)" diff -u "$CHART/README.md" "$WORK/chart-copy/README.md"

step "kubeconform (schemas from the world's API server)"
kubectl apply -f "$FIX/servicemonitor-crd.yaml" -f "$FIX/monitoring-crds.yaml" >/dev/null
kubectl wait --for=condition=Established --timeout=60s >/dev/null \
  crd/servicemonitors.monitoring.coreos.com crd/podmonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com
kubectl get --raw /openapi/v2 >"$WORK/openapi.json"
python3 "$HERE/openapi2jsonschema.py" "$WORK/openapi.json" "$WORK/schemas" 2>/dev/null
render() { # FIXTURE RELEASE NAMESPACE [helm args...]
  local f="$1" rel="$2" ns="$3"
  shift 3
  helm template "$rel" "$CHART" -n "$ns" -f "$f" "$@"
}
for f in "${FIXTURES[@]}"; do
  render "$f" r regcred >"$WORK/render.yaml"
  check "kubeconform -strict $(basename "$f")" kubeconform -strict -summary \
    -schema-location "$WORK/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$WORK/render.yaml"
done

step "every rendered manifest accepted by the API server (--dry-run=server)"
# Namespaces the manifests live in must exist for a server dry run.
kubectl create namespace regcred >/dev/null
for ns in ns-a ns-b; do kubectl create namespace "$ns" >/dev/null; done
for f in "${FIXTURES[@]}"; do
  render "$f" r regcred >"$WORK/render.yaml"
  check "kubectl apply --dry-run=server $(basename "$f") ($(grep -c '^kind:' "$WORK/render.yaml") objects)" \
    kubectl apply --dry-run=server -f "$WORK/render.yaml"
done
for extra in "--set mode=cronjob --set cronjob.timeZone=Europe/Paris --set cronjob.ttlSecondsAfterFinished=600" \
  "--set metrics.service.enabled=true --set metrics.serviceMonitor.enabled=true --set replicaCount=3"; do
  # shellcheck disable=SC2086
  render "$FIX/values-full.yaml" r regcred $extra >"$WORK/render.yaml"
  check "kubectl apply --dry-run=server values-full.yaml $extra" kubectl apply --dry-run=server -f "$WORK/render.yaml"
done

# ---------------------------------------------------------------- the binary under the chart's RBAC

API="$REGCRED_TEST_API_SERVER"
# sa_kubeconfig NS SA: a kubeconfig holding a real token of the ServiceAccount.
sa_kubeconfig() {
  local kc="$WORK/kubeconfig-$1-$2"
  local token
  token="$(kubectl -n "$1" create token "$2" --duration=1h)"
  cat >"$kc" <<EOF
apiVersion: v1
kind: Config
clusters: [{ name: world, cluster: { server: "$API", certificate-authority: "$REGCRED_TEST_CA_CERT" } }]
users: [{ name: sa, user: { token: "$token" } }]
contexts: [{ name: sa, context: { cluster: world, user: sa } }]
current-context: sa
EOF
  echo "$kc"
}

# local_config RELEASE NS: the chart's rendered config.yaml with /etc/regcred/secrets/<s>/<k>
# pointing at local copies of those Secrets (what the pod's read-only mounts hold).
local_config() {
  local rel="$1" ns="$2" dir="$WORK/mounts-$1"
  mkdir -p "$dir"
  kubectl -n "$ns" get configmap "$rel-regcred-refresher" -o jsonpath='{.data.config\.yaml}' >"$dir/config.yaml"
  local path
  # shellcheck disable=SC2013 # paths hold no spaces
  for path in $(grep -o '/etc/regcred/secrets/[^[:space:]"]*' "$dir/config.yaml" | sort -u); do
    local rest="${path#/etc/regcred/secrets/}" name key
    name="${rest%%/*}"
    key="${rest#*/}"
    mkdir -p "$dir/secrets/$name"
    kubectl -n "$ns" get secret "$name" -o json | jq -r --arg k "$key" '.data[$k] | @base64d' >"$dir/secrets/$name/$key"
  done
  sed -i "s#/etc/regcred/secrets/#$dir/secrets/#g" "$dir/config.yaml"
  echo "$dir/config.yaml"
}

once() { # KUBECONFIG CONFIG: one cycle of the binary, as release $REL (the chart sets REGCRED_INSTANCE)
  KUBECONFIG="$1" REGCRED_INSTANCE="$REL" "$BIN" --once --config "$2" --log-format text
}

can() { # SA-USER VERB RESOURCE [args]: expect yes
  local who="$1"
  shift
  check "can-i $*" kubectl auth can-i --as="$who" "$@"
}
cannot() {
  local who="$1"
  shift
  refuse "cannot $*" kubectl auth can-i --as="$who" "$@"
}

# reset_targets NS...: the state before a first run (no secret, ServiceAccount without refs).
reset_targets() {
  local secret="$1"
  shift
  local ns
  for ns in "$@"; do
    kubectl -n "$ns" delete secret "$secret" --ignore-not-found >/dev/null
    # kube-controller-manager creates `default` a moment after the namespace: wait for it,
    # then drop its references (deleting it would race the controller recreating it).
    kubectl -n "$ns" wait --for=create serviceaccount/default --timeout=30s >/dev/null
    kubectl -n "$ns" patch serviceaccount default --type=merge -p '{"imagePullSecrets":null}' >/dev/null
  done
}

# conflict_in NS: a hand-made secret of the managed name, which the refresher must leave alone.
conflict_in() {
  kubectl -n "$1" delete secret regcred --ignore-not-found >/dev/null
  kubectl -n "$1" create secret docker-registry regcred --docker-server=mine.example \
    --docker-username=u --docker-password=p >/dev/null
}

# ablate NAMESPACE-OR-"" KIND NAME RULE-INDEX VERB: drop one verb from one rule.
ablate() {
  local ns="$1" kind="$2" name="$3" idx="$4" verb="$5"
  local -a nsarg=()
  [[ -n "$ns" ]] && nsarg=(-n "$ns")
  kubectl "${nsarg[@]}" get "$kind" "$name" -o json |
    jq --argjson i "$idx" --arg v "$verb" '.rules[$i].verbs -= [$v]
      | if (.rules[$i].verbs | length) == 0 then del(.rules[$i]) else . end
      | del(.metadata.resourceVersion)' |
    kubectl replace -f - >/dev/null
}

# create_hooks FILE: the release's hook objects as Helm would create them, but with every Job
# suspended: the world's Job controller (on with the node) would otherwise start their pods,
# and this script runs the hooks' scripts itself (their images are not in the world).
create_hooks() {
  kubectl create -f "$1" --dry-run=client -o json |
    jq 'if .kind == "List" then .items |= map(if .kind == "Job" then .spec.suspend = true else . end)
        elif .kind == "Job" then .spec.suspend = true else . end' |
    kubectl create -f - >/dev/null
}

step "cronjob mode, cluster-wide, static credentials from a Secret: --once as the chart's ServiceAccount"
REL=static
NS="rel-static"
kubectl create namespace "$NS" >/dev/null
for ns in st-a st-b st-other; do kubectl create namespace "$ns" >/dev/null; done
kubectl -n "$NS" create secret generic dockerhub-bot --from-literal=password=s3cr3t-pw >/dev/null
kubectl -n st-a create secret generic unrelated --from-literal=k=v >/dev/null
reset_targets regcred st-a st-b st-other
cat >"$WORK/static.yaml" <<'EOF'
config:
  namespaces: { include: ["st-*"], exclude: [st-other] }
  serviceAccounts: [default]
EOF
check "helm install --no-hooks (cronjob mode)" helm install "$REL" "$CHART" -n "$NS" --no-hooks \
  -f "$FIX/values-static.yaml" -f "$WORK/static.yaml" --set fullnameOverride="$REL-regcred-refresher"
SA="system:serviceaccount:$NS:$REL-regcred-refresher"
KC="$(sa_kubeconfig "$NS" "$REL-regcred-refresher")"
CFG="$(local_config "$REL" "$NS")"
check "--once under the chart's ServiceAccount token exits 0" once "$KC" "$CFG"
check "secret written in st-a with the password from the mounted Secret" bash -c \
  "kubectl -n st-a get secret regcred -o json | jq -e '.type == \"kubernetes.io/dockerconfigjson\" and (.data[\".dockerconfigjson\"] | @base64d | fromjson | .auths[\"https://index.docker.io/v1/\"].password == \"s3cr3t-pw\")'"
check "secret written in st-b" kubectl -n st-b get secret regcred
refuse "excluded st-other untouched" kubectl -n st-other get secret regcred
check "ServiceAccount default in st-a references regcred" bash -c \
  "kubectl -n st-a get sa default -o json | jq -e '.imagePullSecrets | any(.name == \"regcred\")'"
check "second --once (unchanged) exits 0" once "$KC" "$CFG"
can "$SA" list secrets/regcred -n st-a
can "$SA" patch secrets/regcred -n st-other
cannot "$SA" get secrets/unrelated -n st-a
cannot "$SA" patch secrets/unrelated -n st-a
cannot "$SA" create secrets -n st-a # a POST create carries no name: resourceNames never match it
cannot "$SA" list secrets -n st-a
cannot "$SA" watch secrets --all-namespaces
cannot "$SA" delete secrets/regcred -n st-a
cannot "$SA" get secrets/dockerhub-bot -n "$NS"
cannot "$SA" patch serviceaccounts/builder -n st-a
cannot "$SA" create serviceaccounts/token -n st-a
cannot "$SA" get configmaps -n "$NS"
cannot "$SA" watch namespaces
can "$SA" create events -n st-a
cannot "$SA" patch events -n st-a # only the daemon repeats an Event (and patches its series)
cannot "$SA" create leases.coordination.k8s.io -n "$NS"
# Each verb is necessary: drop it, reset, run: the cycle fails.
CR="$REL-regcred-refresher"
rules_json="$(kubectl get clusterrole "$CR" -o json)"
for i in $(seq 0 $(($(jq '.rules | length' <<<"$rules_json") - 1))); do
  for verb in $(jq -r --argjson i "$i" '.rules[$i].verbs[]' <<<"$rules_json"); do
    res="$(jq -r --argjson i "$i" '.rules[$i].resources[0]' <<<"$rules_json")"
    reset_targets regcred st-a st-b
    ablate "" clusterrole "$CR" "$i" "$verb"
    if [[ "$res" == events ]]; then
      # Not needed for the run's result: for telling a namespace why its secret was not written.
      conflict_in st-a
      check "without $verb on events, a conflict goes unreported in its namespace (rule needed)" bash -c \
        "KUBECONFIG='$KC' REGCRED_INSTANCE='$REL' '$BIN' --once --config '$CFG' --log-format text 2>&1 | grep -q 'cannot record event'"
      kubectl -n st-a delete secret regcred >/dev/null
    else
      refuse "without $verb on $res, --once fails (rule needed)" once "$KC" "$CFG"
    fi
    kubectl replace -f - >/dev/null <<<"$(jq 'del(.metadata.resourceVersion)' <<<"$rules_json")"
  done
done
reset_targets regcred st-a st-b
check "with every rule restored, --once exits 0 again" once "$KC" "$CFG"
conflict_in st-a
refuse "--once with a hand-made regcred in st-a exits 1 (conflict)" once "$KC" "$CFG"
check "and records a Conflict Event on st-a/regcred, under the chart's RBAC" bash -c \
  "kubectl -n st-a get events.events.k8s.io -o json | jq -e '.items | any(.reason == \"Conflict\" and .regarding.name == \"regcred\" and .reportingController == \"regcred-refresher\")'"
kubectl -n st-a delete secret regcred >/dev/null
check "with the hand-made secret gone, --once exits 0 again" once "$KC" "$CFG"

step "deployment mode (ECR via moto, prune, leader election, ServiceAccounts): --once under its RBAC"
REL=ecr
NS="rel-ecr"
kubectl create namespace "$NS" >/dev/null
for ns in ecr-a ecr-b; do kubectl create namespace "$ns" >/dev/null; done
reset_targets regcred-ecr ecr-a ecr-b
check "helm install --no-hooks (deployment mode)" helm install "$REL" "$CHART" -n "$NS" --no-hooks \
  -f "$FIX/values-ecr-daemon.yaml" --set fullnameOverride="$REL-regcred-refresher"
SA="system:serviceaccount:$NS:$REL-regcred-refresher"
KC="$(sa_kubeconfig "$NS" "$REL-regcred-refresher")"
CFG="$(local_config "$REL" "$NS")"
check "--once (ECR from moto) under the deployment's ServiceAccount exits 0" once "$KC" "$CFG"
check "ECR secret written in ecr-b" bash -c \
  "kubectl -n ecr-b get secret regcred-ecr -o json | jq -e '.data[\".dockerconfigjson\"] | @base64d | fromjson | .auths | keys[0] | test(\"dkr.ecr.us-east-1\")'"
can "$SA" list secrets/regcred-ecr --all-namespaces
can "$SA" watch secrets/regcred-ecr --all-namespaces
can "$SA" watch namespaces
can "$SA" delete secrets/regcred-ecr -n ecr-a
# prune must not read every secret of the cluster: no list or watch without a name.
cannot "$SA" list secrets --all-namespaces
cannot "$SA" list secrets -n ecr-a
cannot "$SA" watch secrets --all-namespaces
cannot "$SA" get secrets -n ecr-a
cannot "$SA" delete secrets/unrelated -n st-a
cannot "$SA" get secrets/unrelated -n st-a
can "$SA" create events.events.k8s.io -n ecr-a
can "$SA" patch events -n ecr-a
can "$SA" get leases.coordination.k8s.io/ecr-regcred-refresher -n "$NS"
can "$SA" update leases.coordination.k8s.io/ecr-regcred-refresher -n "$NS"
can "$SA" create leases.coordination.k8s.io -n "$NS"
cannot "$SA" update leases.coordination.k8s.io/other-lease -n "$NS"
cannot "$SA" create leases.coordination.k8s.io -n ecr-a
cannot "$SA" delete leases.coordination.k8s.io/ecr-regcred-refresher -n "$NS"
# The daemon itself (watches, Lease, events) under the same identity: ready, and holding the Lease.
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
KUBECONFIG="$KC" POD_NAME=ecr-0 POD_NAMESPACE="$NS" REGCRED_INSTANCE="$REL" "$BIN" --config "$CFG" --admin-addr "[::]:$PORT" \
  --leader-election --lease-name "$REL-regcred-refresher" --lease-namespace "$NS" --prune --log-format text \
  >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
# /readyz stays 503 here by design: moto's ECR tokens expired in 2015. So: /healthz, one clean
# cycle, the Lease, and no 403 on anything this release manages.
daemon_cycled() {
  local _
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 &&
      grep -q 'cycle finished.* failed=0' "$WORK/daemon.log"; then
      return 0
    fi
    sleep 0.2
  done
  tail -n 20 "$WORK/daemon.log"
  return 1
}
check "daemon under the deployment's RBAC is healthy and completes a cycle with failed=0" daemon_cycled
# The chart's default admin address, [::]: one dual-stack listener answers on IPv4 and IPv6.
check "admin listener on [::] answers on 127.0.0.1 (IPv4)" curl -fsS "http://127.0.0.1:$PORT/healthz"
check "admin listener on [::] answers on [::1] (IPv6)" curl -fsS -g "http://[::1]:$PORT/healthz"
check "daemon holds the Lease $REL-regcred-refresher" bash -c \
  "kubectl -n $NS get lease $REL-regcred-refresher -o jsonpath='{.spec.holderIdentity}' | grep -q ."
# No 403 at all: the other release's `regcred` secrets carry its own instance label, so this
# release's prune never even tries them (and RBAC would refuse: delete is limited to its names),
# and the start-up prune sweep reads by name only (its configured names from its watches).
refuse "daemon hit no 403" bash -c "grep -i forbidden '$WORK/daemon.log'"
check "the other release's secrets survive this release's prune" \
  kubectl -n st-a get secret regcred
kill -TERM "$DAEMON_PID" 2>/dev/null || true
wait "$DAEMON_PID" 2>/dev/null || true
# Without prune the daemon's RBAC holds no delete at all.
check "helm upgrade --set prune=false" helm upgrade "$REL" "$CHART" -n "$NS" --no-hooks --reuse-values --set prune=false
cannot "$SA" delete secrets/regcred-ecr -n ecr-a

step "namespaced mode (Roles per target namespace only): --once as the chart's ServiceAccount"
REL=nsd
NS="rel-nsd"
kubectl create namespace "$NS" >/dev/null
for ns in nsd-a nsd-b nsd-outside; do kubectl create namespace "$ns" >/dev/null; done
reset_targets regcred nsd-a nsd-b nsd-outside
kubectl -n "$NS" create secret generic dockerhub-bot --from-literal=password=pw2 >/dev/null
check "helm install --no-hooks (namespaced mode)" helm install "$REL" "$CHART" -n "$NS" --no-hooks \
  -f "$FIX/values-namespaced.yaml" --set 'config.namespaces.include={nsd-a,nsd-b,kube-system}' \
  --set fullnameOverride="$REL-regcred-refresher"
SA="system:serviceaccount:$NS:$REL-regcred-refresher"
KC="$(sa_kubeconfig "$NS" "$REL-regcred-refresher")"
CFG="$(local_config "$REL" "$NS")"
check "no ClusterRole for the namespaced release" bash -c "! kubectl get clusterrole $REL-regcred-refresher"
check "--once without cluster-wide rights exits 0" once "$KC" "$CFG"
check "secret written in nsd-a and nsd-b" kubectl -n nsd-b get secret regcred
check "ServiceAccount default in nsd-b references regcred" bash -c \
  "kubectl -n nsd-b get sa default -o json | jq -e '.imagePullSecrets | any(.name == \"regcred\")'"
cannot "$SA" list namespaces
cannot "$SA" get secrets/regcred -n nsd-outside
cannot "$SA" patch secrets/regcred -n nsd-outside
cannot "$SA" patch serviceaccounts/default -n nsd-outside
cannot "$SA" get secrets/unrelated -n nsd-a
cannot "$SA" delete secrets/regcred -n nsd-a
cannot "$SA" list secrets -n nsd-a
refuse "a target outside the Roles fails the cycle (exit 1)" bash -c \
  "sed 's/- nsd-b/- nsd-b\n  - nsd-outside/' '$CFG' >'$CFG.2' && grep -q nsd-outside '$CFG.2' && KUBECONFIG='$KC' '$BIN' --once --config '$CFG.2'"
refuse "and nsd-outside got nothing" kubectl -n nsd-outside get secret regcred
check "no Role in kube-system, which the default exclude leaves out" bash -c \
  "! kubectl -n kube-system get role $REL-regcred-refresher"
# The pre-delete cleanup in namespaced mode: Roles in the target namespaces, never cluster-wide.
check "helm upgrade --no-hooks with cleanup.onUninstall" helm upgrade "$REL" "$CHART" -n "$NS" --no-hooks \
  --reuse-values --set cleanup.onUninstall=true
helm get hooks "$REL" -n "$NS" >"$WORK/nsd-hooks.yaml"
check "the namespaced cleanup hook has no cluster-wide object" bash -c "! grep -q '^kind: Cluster' '$WORK/nsd-hooks.yaml'"
create_hooks "$WORK/nsd-hooks.yaml"
NCSA="system:serviceaccount:$NS:$REL-regcred-refresher-cleanup"
cannot "$NCSA" list secrets --all-namespaces
cannot "$NCSA" list secrets/regcred -n nsd-outside
can "$NCSA" list secrets/regcred -n nsd-a
CKC="$(sa_kubeconfig "$NS" "$REL-regcred-refresher-cleanup")"
kubectl -n "$NS" get job "$REL-regcred-refresher-cleanup" -o json >"$WORK/cleanup-job.json"
run_cleanup() {
  local -a envs
  mapfile -t envs < <(jq -r '.spec.template.spec.containers[0].env[] | "\(.name)=\(.value // "")"' "$WORK/cleanup-job.json")
  env KUBECONFIG="$CKC" "${envs[@]}" HOME="$WORK" sh -c "$(jq -r '.spec.template.spec.containers[0].command[2]' "$WORK/cleanup-job.json")"
}
check "the namespaced cleanup script succeeds under its own ServiceAccount" run_cleanup
check "this release's secrets are gone from nsd-a and nsd-b" bash -c \
  "! kubectl -n nsd-a get secret regcred && ! kubectl -n nsd-b get secret regcred"
check "and its reference left nsd-b's ServiceAccount" bash -c \
  "! kubectl -n nsd-b get sa default -o json | jq -e '.imagePullSecrets // [] | any(.name == \"regcred\")'"
check "helm uninstall --no-hooks (namespaced)" helm uninstall "$REL" -n "$NS" --no-hooks

step "lifecycle: install (cronjob), upgrade to deployment and back, uninstall with the cleanup hook"
REL=life
NS="rel-life"
FULL="$REL-regcred-refresher"
kubectl create namespace "$NS" >/dev/null
for ns in life-a life-b life-c; do kubectl create namespace "$ns" >/dev/null; done
reset_targets regcred life-a life-b life-c
kubectl -n "$NS" create secret generic dockerhub-bot --from-literal=password=pw3 >/dev/null
# A hand-made secret of the same name (a conflict, never ours) and an unrelated reference.
kubectl -n life-c create secret generic regcred --from-literal=k=v >/dev/null
kubectl -n life-a patch serviceaccount default --type=merge -p '{"imagePullSecrets":[{"name":"other"}]}' >/dev/null
# The initial run as an ordinary Job (hookJob.failInstall: false): --no-hooks leaves it in
# place, so its shape can be read. The default, a blocking hook, is covered by helm-unittest.
cat >"$WORK/life.yaml" <<'EOF2'
config:
  namespaces: { include: ["life-*"] }
  serviceAccounts: [default]
cleanup: { onUninstall: true }
hookJob: { failInstall: false }
EOF2
check "helm install --no-hooks (cronjob mode, cleanup on)" helm install "$REL" "$CHART" -n "$NS" --no-hooks \
  -f "$FIX/values-static.yaml" -f "$WORK/life.yaml" --set fullnameOverride="$FULL"
check "the initial run is an ordinary Job of revision 1 (helm does not wait for it)" bash -c \
  "kubectl -n $NS get job $FULL-initial-1 -o json | jq -e '.metadata.annotations[\"helm.sh/hook\"] == null and .spec.podFailurePolicy.rules[0].action == \"FailJob\"'"
KC="$(sa_kubeconfig "$NS" "$FULL")"
CFG="$(local_config "$REL" "$NS")"
refuse "--once exits 1 on the hand-made secret in life-c (a conflict)" once "$KC" "$CFG"
check "yet life-a and life-b got their secret" bash -c "kubectl -n life-a get secret regcred && kubectl -n life-b get secret regcred"
check "helm upgrade cronjob -> deployment" helm upgrade "$REL" "$CHART" -n "$NS" --no-hooks --reuse-values --set mode=deployment
check "the Deployment replaced the CronJob and the initial Job" bash -c \
  "kubectl -n $NS get deployment $FULL && ! kubectl -n $NS get cronjob $FULL && ! kubectl -n $NS get job $FULL-initial-1"
check "helm upgrade deployment -> cronjob" helm upgrade "$REL" "$CHART" -n "$NS" --no-hooks --reuse-values --set mode=cronjob
check "the CronJob and a new initial Job are back, the Deployment gone" bash -c \
  "kubectl -n $NS get cronjob $FULL && kubectl -n $NS get job $FULL-initial-3 && ! kubectl -n $NS get deployment $FULL"
kubectl -n "$NS" create lease "$FULL" 2>/dev/null || kubectl -n "$NS" apply -f - >/dev/null <<EOF2
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: { name: $FULL }
spec: { holderIdentity: life-0 }
EOF2
kubectl -n life-a patch serviceaccount default --type=json -p '[{"op":"add","path":"/imagePullSecrets/-","value":{"name":"other2"}}]' >/dev/null
# The initial Job of revision 3 (an ordinary Job) has a pod the world's Job controller started,
# whose image (ghcr.io) the world cannot pull: the cleanup would rightly wait for it. Suspended,
# the Job ends its pod, as a finished run would be.
kubectl -n "$NS" patch job "$FULL-initial-3" --type=merge -p '{"spec":{"suspend":true}}' >/dev/null
check "life-a's default ServiceAccount references other, regcred, other2" bash -c \
  "[[ \$(kubectl -n life-a get sa default -o jsonpath='{.imagePullSecrets[*].name}') == 'other regcred other2' ]]"
# The pre-delete hook's Job is run here: its objects as Helm would create them (its Job
# suspended), then its script with its own ServiceAccount's token.
helm get hooks "$REL" -n "$NS" >"$WORK/hooks.yaml"
check "the release's hooks include the pre-delete cleanup Job" grep -q "name: $FULL-cleanup" "$WORK/hooks.yaml"
create_hooks "$WORK/hooks.yaml"
CSA="system:serviceaccount:$NS:$FULL-cleanup"
cannot "$CSA" list secrets --all-namespaces
cannot "$CSA" delete secrets/unrelated -n st-a
can "$CSA" list secrets/regcred --all-namespaces
CKC="$(sa_kubeconfig "$NS" "$FULL-cleanup")"
kubectl -n "$NS" get job "$FULL-cleanup" -o json >"$WORK/cleanup-job.json"
check "the cleanup script succeeds under its own ServiceAccount" run_cleanup
check "this release's secrets are gone from life-a and life-b" bash -c \
  "! kubectl -n life-a get secret regcred && ! kubectl -n life-b get secret regcred"
check "the hand-made regcred in life-c survives" kubectl -n life-c get secret regcred
check "the other release's regcred (same name, instance static) survives" bash -c \
  "kubectl -n st-a get secret regcred && kubectl -n st-b get secret regcred"
check "only this release's reference left life-a's ServiceAccount" bash -c \
  "[[ \$(kubectl -n life-a get sa default -o jsonpath='{.imagePullSecrets[*].name}') == 'other other2' ]]"
check "the other release's reference in st-a stays" bash -c \
  "kubectl -n st-a get sa default -o json | jq -e '.imagePullSecrets | any(.name == \"regcred\")'"
check "the CronJob was suspended before anything was deleted" bash -c \
  "[[ \$(kubectl -n $NS get cronjob $FULL -o jsonpath='{.spec.suspend}') == true ]]"
check "the Lease is gone" bash -c "! kubectl -n $NS get lease $FULL"
check "a second run finds nothing and succeeds" run_cleanup
check "helm uninstall --no-hooks" helm uninstall "$REL" -n "$NS" --no-hooks
check "no chart object of the release is left" bash -c \
  "! kubectl get clusterrole $FULL && ! kubectl -n $NS get cronjob $FULL && ! kubectl -n $NS get configmap $FULL"

printf '\n%d passed, %d failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
