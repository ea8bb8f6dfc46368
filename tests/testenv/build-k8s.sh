#!/usr/bin/env bash
# Builds (once) the Kubernetes binaries the test world runs (kube-apiserver,
# kube-controller-manager, etcd; for its node: kubelet, kube-scheduler, kube-proxy), and
# prints the directory that holds them as the LAST line of stdout.
#
#   bash tests/testenv/build-k8s.sh          # build if missing, print bin dir
#   bash tests/testenv/build-k8s.sh --regen  # rewrite gomod/*/go.mod from versions.env
#
# - If $KUBEBUILDER_ASSETS is set and holds all six executables, that directory is
#   used as is (nothing is built; envtest's assets lack kube-controller-manager and the
#   node's binaries, so they are not enough).
# - Otherwise the binaries go to
#   ${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/k8s-$K8S_VERSION/bin and are
#   reused on later runs. Build logs: .../k8s-$K8S_VERSION/build.log.
# - Sources: tests/testenv/gomod/kube-apiserver (requires k8s.io/kubernetes
#   v$K8S_VERSION, every k8s.io staging module replaced by v0.<minor>.<patch>;
#   tools cmd/kube-apiserver, cmd/kube-controller-manager, cmd/kubelet,
#   cmd/kube-scheduler and cmd/kube-proxy, one module build) and
#   tests/testenv/gomod/etcd (go.etcd.io/etcd/server/v3 v$ETCD_VERSION). Their
#   go.mod/go.sum are committed, so a build is reproducible; modules come from
#   the Go module proxy into the default GOMODCACHE.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

log() { printf '[build-k8s] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

K8S_MINOR="${K8S_VERSION#*.}"          # 37.2
STAGING_VERSION="v0.${K8S_MINOR}"       # v0.37.2
KAS_MOD="$HERE/gomod/kube-apiserver"
# The tools of that module, in build order (the node's last: they reuse the build cache).
K8S_TOOLS=(kube-apiserver kube-controller-manager kube-proxy kube-scheduler kubelet)
ALL_BINS=(etcd "${K8S_TOOLS[@]}")
ETCD_MOD="$HERE/gomod/etcd"

regen() {
  command -v go >/dev/null || die "go not found in PATH"
  log "downloading k8s.io/kubernetes v$K8S_VERSION go.mod"
  local kmod
  kmod="$(cd "$KAS_MOD" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  local want_etcd
  want_etcd="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2}' "$kmod")"
  want_etcd="${want_etcd#v}"
  if [[ "$want_etcd" != "$ETCD_VERSION" ]]; then
    die "k8s.io/kubernetes v$K8S_VERSION requires go.etcd.io/etcd/server/v3 v$want_etcd; set ETCD_VERSION=$want_etcd in versions.env"
  fi
  local gover
  gover="$(awk '$1=="go"{print $2; exit}' "$kmod")"
  {
    echo "module regcred-refresher/testenv/kube-apiserver"
    echo
    echo "go $gover"
    echo
    if grep -q '^godebug' "$kmod"; then
      grep '^godebug' "$kmod"
      echo
    fi
    printf 'tool (\n'
    printf '\tk8s.io/kubernetes/cmd/%s\n' "${K8S_TOOLS[@]}"
    printf ')\n'
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    sed -n '/^replace[[:space:]]*(/,/^)/p' "$kmod" | grep -oE '^[[:space:]]*k8s\.io/[A-Za-z0-9._-]+' \
      | awk -v v="$STAGING_VERSION" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$KAS_MOD/go.mod"
  rm -f "$KAS_MOD/go.sum"
  printf 'module regcred-refresher/testenv/etcd\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' \
    "$gover" "$ETCD_VERSION" >"$ETCD_MOD/go.mod"
  rm -f "$ETCD_MOD/go.sum"
  log "go mod tidy (kube-apiserver)"; (cd "$KAS_MOD" && GOFLAGS=-mod=mod go mod tidy)
  log "go mod tidy (etcd)"; (cd "$ETCD_MOD" && GOFLAGS=-mod=mod go mod tidy)
  log "regenerated $KAS_MOD/go.mod and $ETCD_MOD/go.mod; commit them"
}

if [[ "${1:-}" == "--regen" ]]; then
  regen
  exit 0
fi

all_in() { # DIR: holds every binary
  local b
  for b in "${ALL_BINS[@]}"; do [[ -x "$1/$b" ]] || return 1; done
}

# 1. Prebuilt assets supplied by the caller.
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if all_in "$KUBEBUILDER_ASSETS"; then
    log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    printf '%s\n' "$KUBEBUILDER_ASSETS"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks one of ${ALL_BINS[*]}; building instead"
fi

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/k8s-$K8S_VERSION"
BIN="$CACHE_ROOT/bin"
LOGFILE="$CACHE_ROOT/build.log"
mkdir -p "$BIN"

have_all() { all_in "$BIN"; }

if have_all; then
  log "cached: $BIN"
  printf '%s\n' "$BIN"
  exit 0
fi

# Sanity: the committed modules must match versions.env.
grep -qE "^(require)?[[:space:]]*k8s\.io/kubernetes v${K8S_VERSION//./\\.}( //.*)?\$" "$KAS_MOD/go.mod" \
  || die "$KAS_MOD/go.mod does not require k8s.io/kubernetes v$K8S_VERSION; run: bash $0 --regen"
grep -qE "k8s\.io/api => k8s\.io/api ${STAGING_VERSION//./\\.}\$" "$KAS_MOD/go.mod" \
  || die "$KAS_MOD/go.mod does not pin staging modules at $STAGING_VERSION; run: bash $0 --regen"
for t in "${K8S_TOOLS[@]}"; do
  grep -qE "^[[:space:]]*(tool[[:space:]]+)?k8s\.io/kubernetes/cmd/$t\$" "$KAS_MOD/go.mod" \
    || die "$KAS_MOD/go.mod does not list the tool cmd/$t; run: bash $0 --regen"
done
grep -qE "^(require)?[[:space:]]*go\.etcd\.io/etcd/server/v3 v${ETCD_VERSION//./\\.}( //.*)?\$" "$ETCD_MOD/go.mod" \
  || die "$ETCD_MOD/go.mod does not require etcd server v$ETCD_VERSION; run: bash $0 --regen"

if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null || die "go not found in PATH (needed to build kube-apiserver and etcd)"

# One build at a time per cache dir (concurrent `make test` runs wait here).
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
  log "another build holds $CACHE_ROOT/.lock; waiting"
  flock 9
fi
if have_all; then
  log "cached (built by a concurrent run): $BIN"
  printf '%s\n' "$BIN"
  exit 0
fi

export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
: >>"$LOGFILE"
log "building into $BIN (log: $LOGFILE); the first build takes several minutes"

build_one() { # name moddir pkg extra-ldflags
  local name="$1" moddir="$2" pkg="$3" ldx="$4"
  if [[ -x "$BIN/$name" ]]; then
    log "$name: cached"
    return 0
  fi
  local tmp="$BIN/.$name.tmp.$$"
  local start=$SECONDS
  log "$name: go build $pkg ..."
  printf '\n===== %s: building %s (%s)\n' "$(date -u +%FT%TZ)" "$name" "$pkg" >>"$LOGFILE"
  # Progress dots to stderr while the build runs.
  (while sleep 30; do printf '[build-k8s] %s: still building (%ss)\n' "$name" "$((SECONDS - start))" >&2; done) &
  local ticker=$!
  local rc=0
  (cd "$moddir" && go build -trimpath -ldflags="-s -w $ldx" -o "$tmp" "$pkg") >>"$LOGFILE" 2>&1 || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [[ $rc -ne 0 ]]; then
    rm -f "$tmp"
    tail -n 40 "$LOGFILE" >&2
    die "$name build failed (exit $rc); full log: $LOGFILE"
  fi
  mv -f "$tmp" "$BIN/$name"
  log "$name: built in $((SECONDS - start))s"
}

trap 'rm -f "$BIN"/.*.tmp.$$' EXIT

K8S_MAJOR="${K8S_VERSION%%.*}"
K8S_MINOR_ONLY="${K8S_MINOR%%.*}"
VPKG=k8s.io/component-base/version
build_one etcd "$ETCD_MOD" . ""
VFLAGS="-X $VPKG.gitVersion=v$K8S_VERSION -X $VPKG.gitMajor=$K8S_MAJOR -X $VPKG.gitMinor=$K8S_MINOR_ONLY -X $VPKG.gitTreeState=clean"
# One module, one build cache: after kube-apiserver most packages are shared.
for t in "${K8S_TOOLS[@]}"; do
  build_one "$t" "$KAS_MOD" "k8s.io/kubernetes/cmd/$t" "$VFLAGS"
done

have_all || die "binaries missing after build in $BIN"
log "done: $BIN"
printf '%s\n' "$BIN"
