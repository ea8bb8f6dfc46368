#!/usr/bin/env bash
# Ensures the Python venv the test world uses (moto server, the Google token
# fixture, pytest for the fixture's own tests) and prints its directory as the
# LAST line of stdout.
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/venv
#
# Installs `moto[server]==$MOTO_VERSION` (versions.env), `cryptography`, `boto3`,
# `pytest` and `bcrypt` (htpasswd of the pull-proof registry) from PyPI when the
# venv is missing, lacks one of them or holds another moto version.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

log() { printf '[setup-venv] %s\n' "$*" >&2; }

VENV="${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/venv"
PY="$VENV/bin/python"

check() {
  [[ -x "$PY" ]] && "$PY" - "$MOTO_VERSION" <<'EOF' >/dev/null 2>&1
import sys
import importlib.metadata as md
assert md.version("moto") == sys.argv[1], md.version("moto")
import moto.server, cryptography, boto3, pytest, flask, bcrypt  # noqa: F401
EOF
}

if check; then
  log "ok: $VENV (moto $MOTO_VERSION)"
  printf '%s\n' "$VENV"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if check; then
  printf '%s\n' "$VENV"
  exit 0
fi

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || { log "ERROR: $PYTHON not found"; exit 1; }
if [[ ! -x "$PY" ]]; then
  log "creating venv $VENV with $("$PYTHON" --version 2>&1)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
log "pip install moto[server]==$MOTO_VERSION cryptography boto3 pytest bcrypt"
"$PY" -m pip install --disable-pip-version-check --no-input -q \
  "moto[server]==$MOTO_VERSION" cryptography boto3 pytest bcrypt >&2
check || { log "ERROR: venv check failed after install"; exit 1; }
log "ok: $VENV"
printf '%s\n' "$VENV"
