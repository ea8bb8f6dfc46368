#!/usr/bin/env bash
# Proves the Dockerfile's build stage without a Docker engine: replays its COPY and RUN
# instructions in order (COPY from the committed tree, `git archive HEAD`; RUN with bash in a
# temp dir standing in for WORKDIR), then checks the binary the runtime stage copies.
# A clean release build: several minutes on 2 cores. Not part of `make test`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="$PATH:$HOME/.cargo/bin"
SRC="$(mktemp -d)"
CTX="$(mktemp -d)"
trap 'rm -rf "$SRC" "$CTX"' EXIT
git -C "$REPO" archive HEAD | tar -x -C "$CTX"

# The build stage's instructions, continuation lines joined.
sed -n '/^FROM .* AS build/,/^FROM /p' "$REPO/Dockerfile" | sed '$d' |
  sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | grep -E '^(COPY|RUN) ' >"$SRC.steps"
grep -q 'cargo build --release --locked' "$SRC.steps" || { echo "no locked release build in Dockerfile" >&2; exit 1; }
start=$SECONDS
while IFS= read -r line; do
  case "$line" in
    COPY\ *)
      read -r -a parts <<<"${line#COPY }"
      dest="${parts[-1]}"
      unset 'parts[-1]'
      mkdir -p "$SRC/$dest"
      # Docker semantics: a file lands in dest/, a directory's contents do.
      for p in "${parts[@]}"; do
        if [[ -d "$CTX/$p" ]]; then cp -r "$CTX/$p/." "$SRC/$dest/"; else cp "$CTX/$p" "$SRC/$dest/"; fi
      done
      echo "[docker-check] COPY ${parts[*]} -> $dest" ;;
    RUN\ *)
      echo "[docker-check] RUN ${line#RUN }"
      (cd "$SRC" && bash -euo pipefail -c "${line#RUN }") ;;
  esac
done <"$SRC.steps"
rm -f "$SRC.steps"
# The path the runtime stage copies from (/src is the WORKDIR).
from="$(sed -n 's#^COPY --from=build /src/\([^ ]*\) .*#\1#p' "$REPO/Dockerfile")"
bin="$SRC/$from"
"$bin" --help >/dev/null
echo "[docker-check] OK: $("$bin" --version), $(du -h "$bin" | cut -f1) ($(stat -c %s "$bin") bytes), $(file -b "$bin" | cut -d, -f1-2), built in $((SECONDS - start))s"
