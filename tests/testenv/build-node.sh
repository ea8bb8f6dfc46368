#!/usr/bin/env bash
# Builds (once) what the test world's node runs besides the Kubernetes binaries
# (tests/testenv/node.sh; kubelet, kube-scheduler and kube-proxy come from build-k8s.sh)
# and prints the directory that holds them as the LAST line of stdout:
#
#   containerd, containerd-shim-runc-v2, ctr
#             github.com/containerd/containerd/v2 v$CONTAINERD_VERSION, go install with
#             CGO_ENABLED=0 and tags no_btrfs no_devmapper no_zfs (kubelet 1.38 refuses 1.x,
#             so not Debian's 1.6)
#   coredns   tests/testenv/gomod/coredns (CoreDNS v$COREDNS_VERSION, a minimal plugin set)
#   cni/      bridge, host-local, loopback from Debian's containernetworking-plugins
#             (apt-get download + dpkg-deb -x, never installed)
#   busybox   Debian's busybox-static (the same way): the test images' one program
#   pause     tests/testenv/node/pause.c, gcc -static: the sandbox image (imported, not pulled)
#   runc and iptables are apt-get installed when missing (containerd's runtime; kube-proxy).
#
#   bash tests/testenv/build-node.sh             build what is missing, print the bin dir
#   bash tests/testenv/build-node.sh --no-build  print the bin dir if everything is there,
#                                                 else fail (the world has no network)
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/node-v$CONTAINERD_VERSION/bin, build
# log beside it. coredns and pause are rebuilt when their sources change (a hash is stamped),
# containerd when CONTAINERD_VERSION changes.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

log() { printf '[build-node] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="$PATH:/usr/local/go/bin"
fi

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/node-v$CONTAINERD_VERSION"
BIN="$CACHE_ROOT/bin"
LOGFILE="$CACHE_ROOT/build.log"
COREDNS_MOD="$HERE/gomod/coredns"
PAUSE_C="$HERE/node/pause.c"

COREDNS_STAMP="$( (cd "$COREDNS_MOD" && cat go.mod go.sum ./*.go) | sha256sum | cut -c1-16)"
PAUSE_STAMP="$(sha256sum <"$PAUSE_C" | cut -c1-16)"
stamped() { [[ -x "$BIN/$1" && "$(cat "$BIN/.$1.stamp" 2>/dev/null)" == "$2" ]]; }
ok_containerd() { stamped containerd "v$CONTAINERD_VERSION" && [[ -x "$BIN/containerd-shim-runc-v2" && -x "$BIN/ctr" ]]; }
ok_coredns() { stamped coredns "$COREDNS_STAMP"; }
ok_pause() { stamped pause "$PAUSE_STAMP"; }
ok_cni() { [[ -x "$BIN/cni/bridge" && -x "$BIN/cni/host-local" && -x "$BIN/cni/loopback" ]]; }
ok_busybox() { [[ -x "$BIN/busybox" ]]; }
ok_host() { command -v runc >/dev/null && command -v iptables >/dev/null; }
have_all() { ok_containerd && ok_coredns && ok_pause && ok_cni && ok_busybox && ok_host; }

if have_all; then
  printf '%s\n' "$BIN"
  exit 0
fi
if [[ "${1:-}" == "--no-build" ]]; then
  missing=()
  ok_containerd || missing+=(containerd)
  ok_coredns || missing+=(coredns)
  ok_pause || missing+=(pause)
  ok_cni || missing+=(cni)
  ok_busybox || missing+=(busybox)
  ok_host || missing+=("runc/iptables (host)")
  die "${missing[*]} missing or stale in $BIN: run 'bash tests/testenv/build-node.sh' (or make test-deps) outside the world"
fi

mkdir -p "$BIN"
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
  log "another build holds $CACHE_ROOT/.lock; waiting"
  flock 9
fi
trap 'rm -rf "$BIN"/.*.tmp.$$ "$CACHE_ROOT"/.deb.$$' EXIT
: >>"$LOGFILE"
step() { log "$1"; printf '\n===== %s: %s\n' "$(date -u +%FT%TZ)" "$1" >>"$LOGFILE"; }
apt_updated=0
apt_retry() { # CMD...: once more after apt-get update (a fresh machine's lists are empty)
  "$@" >>"$LOGFILE" 2>&1 && return 0
  ((apt_updated)) && return 1
  [[ "$(id -u)" == 0 ]] || die "$* failed and only root can run apt-get update; see $LOGFILE"
  apt-get update >>"$LOGFILE" 2>&1 || die "apt-get update failed; see $LOGFILE"
  apt_updated=1
  "$@" >>"$LOGFILE" 2>&1
}
deb_extract() { # PACKAGE DIR: the package's files under DIR (downloaded, never installed)
  local work="$CACHE_ROOT/.deb.$$"
  mkdir -p "$work"
  command -v dpkg-deb >/dev/null || die "dpkg-deb is needed to unpack $1"
  (cd "$work" && apt_retry apt-get download "$1") || die "apt-get download $1 failed; see $LOGFILE"
  local deb=("$work/$1"_*.deb)
  [[ -f "${deb[0]}" ]] || die "no $1 .deb downloaded into $work"
  dpkg-deb -x "${deb[0]}" "$2"
  rm -f "${deb[0]}"
}

if ! ok_host; then
  step "runc, iptables: apt-get install"
  [[ "$(id -u)" == 0 ]] || die "runc and iptables are missing; install them (apt-get install runc iptables)"
  DEBIAN_FRONTEND=noninteractive apt_retry apt-get install -y --no-install-recommends runc iptables \
    || die "apt-get install runc iptables failed; see $LOGFILE"
fi

if ! ok_containerd; then
  command -v go >/dev/null || die "go not found in PATH (needed to build containerd)"
  start=$SECONDS
  step "containerd v$CONTAINERD_VERSION: go install (CGO_ENABLED=0, tags no_btrfs no_devmapper no_zfs)"
  tmp="$BIN/.containerd.tmp.$$"
  mkdir -p "$tmp"
  m=github.com/containerd/containerd/v2
  (cd / && CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="$tmp" go install -trimpath \
    -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags="-s -w -X $m/version.Version=v$CONTAINERD_VERSION" \
    "$m/cmd/containerd@v$CONTAINERD_VERSION" "$m/cmd/containerd-shim-runc-v2@v$CONTAINERD_VERSION" \
    "$m/cmd/ctr@v$CONTAINERD_VERSION") >>"$LOGFILE" 2>&1 \
    || { tail -n 30 "$LOGFILE" >&2; die "containerd build failed; full log: $LOGFILE"; }
  mv -f "$tmp"/containerd "$tmp"/containerd-shim-runc-v2 "$tmp"/ctr "$BIN/"
  printf 'v%s\n' "$CONTAINERD_VERSION" >"$BIN/.containerd.stamp"
  log "containerd: built in $((SECONDS - start))s"
fi

if ! ok_coredns; then
  command -v go >/dev/null || die "go not found in PATH (needed to build coredns)"
  grep -qE "github\.com/coredns/coredns v${COREDNS_VERSION//./\\.}\$" "$COREDNS_MOD/go.mod" \
    || die "$COREDNS_MOD/go.mod does not require coredns v$COREDNS_VERSION (edit it, then go mod tidy there)"
  start=$SECONDS
  step "coredns: go build gomod/coredns"
  (cd "$COREDNS_MOD" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" go build -trimpath \
    -ldflags="-s -w" -o "$BIN/.coredns.tmp.$$" .) >>"$LOGFILE" 2>&1 \
    || { tail -n 30 "$LOGFILE" >&2; die "coredns build failed; full log: $LOGFILE"; }
  mv -f "$BIN/.coredns.tmp.$$" "$BIN/coredns"
  printf '%s\n' "$COREDNS_STAMP" >"$BIN/.coredns.stamp"
  log "coredns: built in $((SECONDS - start))s"
fi

if ! ok_cni; then
  step "cni plugins: apt-get download containernetworking-plugins"
  root="$CACHE_ROOT/.deb.$$/cni"
  deb_extract containernetworking-plugins "$root"
  mkdir -p "$BIN/cni"
  for p in bridge host-local loopback; do
    [[ -x "$root/usr/lib/cni/$p" ]] || die "containernetworking-plugins holds no usr/lib/cni/$p"
    mv -f "$root/usr/lib/cni/$p" "$BIN/cni/$p"
  done
fi

if ! ok_busybox; then
  step "busybox: apt-get download busybox-static"
  root="$CACHE_ROOT/.deb.$$/busybox"
  deb_extract busybox-static "$root"
  [[ -x "$root/bin/busybox" ]] || die "busybox-static holds no bin/busybox"
  mv -f "$root/bin/busybox" "$BIN/busybox"
fi

if ! ok_pause; then
  step "pause: gcc -static"
  command -v gcc >/dev/null || die "gcc is needed to build the pause binary"
  gcc -static -Os -s -o "$BIN/.pause.tmp.$$" "$PAUSE_C" >>"$LOGFILE" 2>&1 \
    || { tail -n 30 "$LOGFILE" >&2; die "pause build failed (a static libc is needed: libc6-dev); see $LOGFILE"; }
  mv -f "$BIN/.pause.tmp.$$" "$BIN/pause"
  printf '%s\n' "$PAUSE_STAMP" >"$BIN/.pause.stamp"
fi

have_all || die "node binaries missing after build in $BIN"
log "done: $BIN"
printf '%s\n' "$BIN"
