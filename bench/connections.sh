#!/usr/bin/env bash
# Connections a `--once` run opens to the API server, at N namespaces: counted from the
# process's own connect() calls (strace), for a create cycle and an unchanged cycle.
# Runs inside a test world: `make bench-connections` (BENCH_SIZES=100,1000).
set -euo pipefail
bin="${REGCRED_BIN:-target/release/regcred-refresher}"
sizes="${1:-100,1000}"
port="${REGCRED_TEST_API_SERVER##*:}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
command -v strace >/dev/null || { apt-get install -y strace >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y strace >/dev/null; }; }
printf 'bench-pass' >"$work/pw"
connects() { # label args...: prints the number of connect() calls to the API server port
  local label="$1"; shift
  strace -f -qq -e trace=connect -o "$work/$label.trace" "$bin" "$@" >/dev/null 2>"$work/$label.log"
  grep -c "sin_port=htons($port)" "$work/$label.trace" || true
}
echo "{"
first=1
IFS=, read -ra list <<<"$sizes"
for n in "${list[@]}"; do
  p="conn$n"
  seq 1 "$n" | sed "s/.*/apiVersion: v1\nkind: Namespace\nmetadata: {name: $p-&}\n---/" | kubectl apply -f - >/dev/null
  cat >"$work/c.yaml" <<YAML
registries:
  - name: quay
    static: { server: quay.io, username: bot, passwordFile: $work/pw }
secrets:
  - name: regcred
    registries: [quay]
namespaces: { include: ["$p-*"] }
YAML
  create=$(connects "create$n" --once --config "$work/c.yaml")
  unchanged=$(connects "unchanged$n" --once --config "$work/c.yaml")
  grep -q "created=$n " "$work/create$n.log" || { cat "$work/create$n.log" >&2; exit 1; }
  ((first)) || echo ","
  first=0
  printf '  "%s": {"namespaces": %s, "concurrency": 16, "connections_create_cycle": %s, "connections_unchanged_cycle": %s}' \
    "$n" "$n" "$create" "$unchanged"
done
printf '\n}\n'
