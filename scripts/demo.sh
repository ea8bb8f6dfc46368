#!/usr/bin/env bash
# The main job on the embedded local default: the test world's kube-apiserver and moto (ECR),
# no cloud account, no cluster. Run through `make demo`, which starts the world around it.
set -euo pipefail
bin="${REGCRED_BIN:-target/debug/regcred-refresher}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "namespaces: two teams, one that opted out, and kube-system (excluded by default)"
for ns in team-a team-b team-c; do kubectl create namespace "$ns" >/dev/null; done
kubectl annotate namespace team-c regcred-refresher.io/skip=true >/dev/null
kubectl get namespaces -o custom-columns=NAME:.metadata.name,SKIP:'.metadata.annotations.regcred-refresher\.io/skip'

step "the default ServiceAccounts (the world's controller-manager creates them, as in a cluster)"
for ns in team-a team-b; do
  for _ in $(seq 50); do kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2; done
  kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1 || kubectl -n "$ns" create serviceaccount default >/dev/null
done
kubectl get serviceaccount -A --field-selector metadata.name=default | grep team-

printf 'demo-robot-password' >"$work/quay-password"
cat >"$work/config.yaml" <<YAML
registries:
  - name: ecr-main
    ecr: { region: us-east-1 }          # moto stands in for AWS (AWS_ENDPOINT_URL)
  - name: quay
    static: { server: quay.io, username: demo+robot, passwordFile: $work/quay-password }
secrets:
  - name: regcred
    registries: [ecr-main, quay]
namespaces: { include: ["team-*", kube-system] }
serviceAccounts: [default]
YAML
step "configuration"
cat "$work/config.yaml"

step "what would change (--diff), then the run (--once)"
"$bin" --once --diff --config "$work/config.yaml" --log-level warn
"$bin" --once --config "$work/config.yaml"

step "the secrets it wrote"
kubectl get secret -A -l app.kubernetes.io/managed-by=regcred-refresher

step "registries in team-a/regcred (values are never printed)"
kubectl -n team-a get secret regcred -o jsonpath='{.data.\.dockerconfigjson}' | base64 -d | jq -r '.auths | keys[]'
kubectl -n team-a get secret regcred -o jsonpath='{.metadata.annotations}' | jq .

step "team-a's default ServiceAccount now references it"
kubectl -n team-a get serviceaccount default -o jsonpath='{.imagePullSecrets}'; echo

step "a second run (a CronJob's next one): every secret is fresh, so no token call and no write"
"$bin" --once --config "$work/config.yaml" 2>&1 | grep -E "not fetched|cycle finished"
kubectl -n team-a get secret regcred -o jsonpath='{.metadata.annotations.regcred-refresher\.io/refresh-after}'
echo "  <- the next run that finds this time passed renews the token (ECR's 12 h, with a quarter left)"

step "--force refreshes anyway: one ECR token call for every namespace"
"$bin" --once --force --config "$work/config.yaml" 2>&1 | grep -E "source ok|cycle finished"
