#!/usr/bin/env bash
# make image: the release image without a Docker engine. The runtime stage of the Dockerfile
# (FROM gcr.io/distroless/cc-debian12:nonroot) is rebuilt from Debian 12 packages, the
# release this machine runs and distroless builds from: glibc (libc6), libgcc-s1, the CA
# bundle (ca-certificates), /etc/services (netbase), /etc/os-release, the nonroot user 65532,
# no shell. The image's config (user, entrypoint, exposed port, OCI labels) is read from the
# Dockerfile's runtime stage, so the two cannot drift (tests/image/test_image.py checks the
# result against the Dockerfile once more, and runs the binary inside the root filesystem).
#
#   bash scripts/build-image.sh [--push REF]
#
# Output in $IMAGE_OUT (default target/image): oci/ (an OCI image layout), image.tar (a
# docker-archive tarball for `ctr images import`), rootfs/ (what the layer holds), ref (the
# image reference). With --push REF it is also pushed to a registry (the world's).
# Assembled with crane (tests/testenv/build-pullproof.sh builds it) and a registry that crane
# serves on 127.0.0.1 for the duration of the build and that is stopped by PID after it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${IMAGE_OUT:-$REPO/target/image}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/image-debs"
PUSH=""
[[ "${1:-}" == "--push" ]] && PUSH="${2:?--push needs an image reference}"

log() { printf '[image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The runtime stage's packages (distroless cc-debian12 without libssl3, libgomp1 and
# libstdc++6, which the binary does not link: no OpenSSL, no C++).
PACKAGES=(libc6 libgcc-s1 ca-certificates netbase base-files)

# shellcheck source=/dev/null
[[ "$(. /etc/os-release && echo "$ID $VERSION_ID")" == "debian 12" ]] \
  || die "the packages come from this machine's Debian release, which must be 12 (bookworm) like cc-debian12"

log "cargo build --release --locked"
(cd "$REPO" && cargo build --release --locked --bin regcred-refresher)
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/regcred-refresher"
CRANE="$(bash "$REPO/tests/testenv/build-pullproof.sh" | tail -n 1)/crane"
[[ -x "$CRANE" ]] || die "crane missing at $CRANE"

# Debian packages, downloaded once per version into the cache.
mkdir -p "$CACHE"
debs=()
for p in "${PACKAGES[@]}"; do
  v="$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^  Candidate: //p')"
  if [[ -z "$v" || "$v" == "(none)" ]]; then
    log "apt-get update (no candidate for $p yet)"
    apt-get update -qq >/dev/null
    v="$(apt-cache policy "$p" | sed -n 's/^  Candidate: //p')"
  fi
  deb() { find "$CACHE" -maxdepth 1 -name "${p}_${v//:/%3a}_*.deb" | head -n 1; }
  f="$(deb)"
  if [[ -z "$f" ]]; then
    (cd "$CACHE" && apt-get download -qq "$p=$v" >/dev/null)
    f="$(deb)"
  fi
  [[ -n "$f" ]] || die "apt-get download $p=$v left no .deb in $CACHE"
  debs+=("$f")
done

rm -rf "$OUT"
mkdir -p "$OUT"
ROOT="$OUT/rootfs"
mkdir -p "$ROOT"
for f in "${debs[@]}"; do
  case "$(basename "$f")" in
    base-files_*)
      # Only the release's identity: base-files also ships a shell profile, motd and the like.
      dpkg-deb -x "$f" "$OUT/base-files"
      mkdir -p "$ROOT/etc" "$ROOT/usr/lib"
      cp "$OUT/base-files/usr/lib/os-release" "$ROOT/usr/lib/os-release"
      ln -s ../usr/lib/os-release "$ROOT/etc/os-release"
      rm -rf "$OUT/base-files"
      ;;
    *) dpkg-deb -x "$f" "$ROOT" ;;
  esac
done
# No programs but ours (libc6 ships ldd, iconv, getconf, ...), no documentation.
rm -rf "${ROOT:?}/usr/share/doc" "${ROOT:?}/usr/share/man" "${ROOT:?}/usr/share/info" \
  "${ROOT:?}/usr/share/lintian" "${ROOT:?}/usr/share/locale" "${ROOT:?}/usr/sbin" "${ROOT:?}/usr/bin" \
  "${ROOT:?}/sbin" "${ROOT:?}/bin"
# What update-ca-certificates writes from the package's certificates (its postinst does not run
# here): the one bundle rustls-native-certs and the AWS/Google SDKs read.
mkdir -p "$ROOT/etc/ssl/certs"
find "$ROOT/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | xargs cat >"$ROOT/etc/ssl/certs/ca-certificates.crt"
# distroless's users and groups: root, nobody, nonroot (65532), no login shell anywhere.
cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' \
  >"$ROOT/etc/nsswitch.conf"
mkdir -p "$ROOT/root" "$ROOT/home/nonroot" "$ROOT/tmp" "$ROOT/usr/local/bin"
chmod 0700 "$ROOT/root" "$ROOT/home/nonroot"
chmod 1777 "$ROOT/tmp"
install -m 0755 "$BIN" "$ROOT/usr/local/bin/regcred-refresher"
chown -R 0:0 "$ROOT"
chown 65532:65532 "$ROOT/home/nonroot"

# One reproducible layer: sorted, numeric owners, the commit's time.
EPOCH="$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)"
tar -C "$ROOT" --sort=name --numeric-owner --mtime="@$EPOCH" --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf "$OUT/layer.tar" .

# The config the Dockerfile's runtime stage declares.
python3 "$REPO/scripts/dockerfile_runtime.py" "$REPO/Dockerfile" \
  --arg "REVISION=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)" \
  --arg "CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)" >"$OUT/dockerfile.json"
mapfile -t mutate < <(python3 - "$OUT/dockerfile.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print("--user=" + d["user"])
print("--entrypoint=" + ",".join(d["entrypoint"]))
for p in d["exposed_ports"]:
    print("--exposed-ports=" + p)
for k, v in sorted(d["labels"].items()):
    print("--label=%s=%s" % (k, v))
EOF
)

# crane's own registry, on a free port of 127.0.0.1, for the duration of the build.
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$CRANE" registry serve --address "127.0.0.1:$PORT" >"$OUT/registry.log" 2>&1 &
REG_PID=$!
trap 'kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break
  sleep 0.1
done
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n 1)"
REF="127.0.0.1:$PORT/regcred-refresher:$VERSION"
"$CRANE" append --insecure --oci-empty-base --platform linux/amd64 -f "$OUT/layer.tar" -t "$REF" >/dev/null
"$CRANE" mutate --insecure "$REF" "${mutate[@]}" --set-platform linux/amd64 \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --workdir=/home/nonroot -t "$REF" >/dev/null
"$CRANE" pull --insecure --format=oci "$REF" "$OUT/oci"
"$CRANE" pull --insecure "$REF" "$OUT/image.tar"
if [[ -n "$PUSH" ]]; then
  "$CRANE" copy --insecure "$REF" "$PUSH"
  printf '%s\n' "$PUSH" >"$OUT/ref"
else
  printf 'regcred-refresher:%s\n' "$VERSION" >"$OUT/ref"
fi
rm -f "$OUT/layer.tar"
size="$(du -b "$OUT/image.tar" | cut -f1)"
log "image in $OUT: oci/, image.tar ($((size / 1024 / 1024)) MiB uncompressed), digest $("$CRANE" digest --insecure "$REF")"
