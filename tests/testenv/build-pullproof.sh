#!/usr/bin/env bash
# Builds (once) the tools of the pull proof (tests/integration/pull_proof.rs, see
# tests/testenv/PULLPROOF.md) and prints the directory that holds them as the LAST line
# of stdout:
#
#   keyring   our test tool around the kubelet's own keyring code
#             (tests/testenv/gomod/keyring, k8s.io/kubernetes v$K8S_VERSION)
#   crane     github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION (go install)
#   registry  /usr/bin/docker-registry of Debian's docker-registry package (distribution
#             2.8), unpacked with apt-get download + dpkg-deb -x (never installed)
#
#   bash tests/testenv/build-pullproof.sh             build what is missing, print the bin dir
#   bash tests/testenv/build-pullproof.sh --no-build  print the bin dir if everything is
#                                                      there, else fail (what tests call:
#                                                      the world has no network)
#   bash tests/testenv/build-pullproof.sh --regen     rewrite gomod/keyring/go.mod from
#                                                      versions.env (after a K8S_VERSION bump)
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/pullproof-$K8S_VERSION/bin,
# build log beside it. keyring is rebuilt when its sources change (a hash of
# gomod/keyring is stamped), crane when CRANE_VERSION changes. The Go build cache is the
# default one, shared with build-k8s.sh (which compiled most of k8s.io/* already): warm,
# keyring links in seconds.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

CRANE_VERSION=v0.22.1
REGISTRY_DEB=docker-registry

log() { printf '[build-pullproof] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

K8S_MINOR="${K8S_VERSION#*.}"
STAGING_VERSION="v0.${K8S_MINOR}"
MOD="$HERE/gomod/keyring"

if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="$PATH:/usr/local/go/bin"
fi

if [[ "${1:-}" == "--regen" ]]; then
  command -v go >/dev/null || die "go not found in PATH"
  kas="$HERE/gomod/kube-apiserver/go.mod"
  grep -q "k8s.io/kubernetes v$K8S_VERSION" "$kas" \
    || die "$kas is not at v$K8S_VERSION yet: run build-k8s.sh --regen first"
  {
    echo "module regcred-refresher/testenv/keyring"
    echo
    awk '$1=="go"{print; exit}' "$kas"
    echo
    if grep -q '^godebug' "$kas"; then grep '^godebug' "$kas"; echo; fi
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    sed -n '/^replace[[:space:]]*(/,/^)/p' "$kas"
  } >"$MOD/go.mod"
  rm -f "$MOD/go.sum"
  (cd "$MOD" && GOFLAGS=-mod=mod go mod tidy)
  log "regenerated $MOD/go.mod; commit it with go.sum"
  exit 0
fi

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/pullproof-$K8S_VERSION"
BIN="$CACHE_ROOT/bin"
LOGFILE="$CACHE_ROOT/build.log"

keyring_hash() {
  (cd "$MOD" && cat go.mod go.sum ./*.go) | sha256sum | cut -c1-16
}
KEYRING_STAMP="$(keyring_hash)"

ok_keyring() { [[ -x "$BIN/keyring" && "$(cat "$BIN/.keyring.stamp" 2>/dev/null)" == "$KEYRING_STAMP" ]]; }
ok_crane() { [[ -x "$BIN/crane" && "$(cat "$BIN/.crane.stamp" 2>/dev/null)" == "$CRANE_VERSION" ]]; }
ok_registry() { [[ -x "$BIN/registry" ]]; }
have_all() { ok_keyring && ok_crane && ok_registry; }

if have_all; then
  printf '%s\n' "$BIN"
  exit 0
fi
if [[ "${1:-}" == "--no-build" ]]; then
  missing=()
  ok_keyring || missing+=(keyring)
  ok_crane || missing+=(crane)
  ok_registry || missing+=(registry)
  die "${missing[*]} missing or stale in $BIN: run 'bash tests/testenv/build-pullproof.sh' (or make test-deps) outside the world"
fi

mkdir -p "$BIN"
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
  log "another build holds $CACHE_ROOT/.lock; waiting"
  flock 9
fi
trap 'rm -rf "$BIN"/.*.tmp.$$ "$CACHE_ROOT"/.deb.$$' EXIT
: >>"$LOGFILE"

command -v go >/dev/null || die "go not found in PATH (needed to build keyring and crane)"

if ! ok_keyring; then
  grep -qE "^(require)?[[:space:]]*k8s\.io/kubernetes v${K8S_VERSION//./\\.}( //.*)?\$" "$MOD/go.mod" \
    || die "$MOD/go.mod does not require k8s.io/kubernetes v$K8S_VERSION; run: bash $0 --regen"
  grep -qE "k8s\.io/api => k8s\.io/api ${STAGING_VERSION//./\\.}\$" "$MOD/go.mod" \
    || die "$MOD/go.mod does not pin staging modules at $STAGING_VERSION; run: bash $0 --regen"
  start=$SECONDS
  log "keyring: go build (log: $LOGFILE)"
  printf '\n===== %s: building keyring\n' "$(date -u +%FT%TZ)" >>"$LOGFILE"
  (cd "$MOD" && GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" go build -trimpath -ldflags="-s -w" -o "$BIN/.keyring.tmp.$$" .) >>"$LOGFILE" 2>&1 \
    || { tail -n 30 "$LOGFILE" >&2; die "keyring build failed; full log: $LOGFILE"; }
  mv -f "$BIN/.keyring.tmp.$$" "$BIN/keyring"
  printf '%s\n' "$KEYRING_STAMP" >"$BIN/.keyring.stamp"
  log "keyring: built in $((SECONDS - start))s"
fi

if ! ok_crane; then
  start=$SECONDS
  log "crane: go install github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
  printf '\n===== %s: go install crane@%s\n' "$(date -u +%FT%TZ)" "$CRANE_VERSION" >>"$LOGFILE"
  tmp="$BIN/.crane.tmp.$$"
  mkdir -p "$tmp"
  # Outside any module: `go install pkg@version` refuses -mod flags.
  (cd / && GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath -ldflags="-s -w" \
    "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION") >>"$LOGFILE" 2>&1 \
    || { tail -n 30 "$LOGFILE" >&2; die "crane install failed; full log: $LOGFILE"; }
  mv -f "$tmp/crane" "$BIN/crane"
  printf '%s\n' "$CRANE_VERSION" >"$BIN/.crane.stamp"
  log "crane: built in $((SECONDS - start))s"
fi

if ! ok_registry; then
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    die "the registry comes from Debian's $REGISTRY_DEB package (apt-get download + dpkg-deb -x); apt-get or dpkg-deb is missing here"
  fi
  start=$SECONDS
  work="$CACHE_ROOT/.deb.$$"
  mkdir -p "$work"
  log "registry: apt-get download $REGISTRY_DEB"
  if ! (cd "$work" && apt-get download "$REGISTRY_DEB") >>"$LOGFILE" 2>&1; then
    [[ "$(id -u)" == 0 ]] || die "apt-get download $REGISTRY_DEB failed and only root can run apt-get update; see $LOGFILE"
    log "registry: apt-get update, then again"
    apt-get update >>"$LOGFILE" 2>&1 || die "apt-get update failed; see $LOGFILE"
    (cd "$work" && apt-get download "$REGISTRY_DEB") >>"$LOGFILE" 2>&1 \
      || die "apt-get download $REGISTRY_DEB failed; see $LOGFILE"
  fi
  deb=("$work"/"$REGISTRY_DEB"_*.deb)
  [[ -f "${deb[0]}" ]] || die "no .deb downloaded into $work"
  dpkg-deb -x "${deb[0]}" "$work/root"
  [[ -x "$work/root/usr/bin/docker-registry" ]] || die "${deb[0]} holds no usr/bin/docker-registry"
  mv -f "$work/root/usr/bin/docker-registry" "$BIN/registry"
  rm -rf "$work"
  log "registry: $("$BIN/registry" --version) in $((SECONDS - start))s"
fi

have_all || die "tools missing after build in $BIN"
log "done: $BIN"
printf '%s\n' "$BIN"
