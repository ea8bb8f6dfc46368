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

step "the default ServiceAccounts (a real cluster's controller-manager creates them)"
for ns in team-a team-b; do kubectl -n "$ns" create serviceaccount default >/dev/null; done

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

step "a second run changes nothing"
"$bin" --once --config "$work/config.yaml" --log-level warn && echo "exit 0, no writes"
