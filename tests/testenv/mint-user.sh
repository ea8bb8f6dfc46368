#!/usr/bin/env bash
# Mints a client-certificate identity for a running (or starting) test world.
#
#   bash tests/testenv/mint-user.sh WORLD_DIR USER_NAME [GROUP...]
#
# Signs a client certificate (CN=USER_NAME, one O= per GROUP) with the world's
# CA (WORLD_DIR/pki/ca.{crt,key}) and writes a self-contained kubeconfig
# (certificates embedded) for the API server in WORLD_DIR/server-url.
# Prints the kubeconfig path as the last line of stdout:
#   WORLD_DIR/users/<USER_NAME, sanitized>/kubeconfig   (+ client.crt, client.key)
#
# The new user has no RBAC bindings: every request gets 403 until a test binds
# a Role/ClusterRole to it (User USER_NAME or Group GROUP). Group
# "system:masters" bypasses RBAC entirely.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 WORLD_DIR USER_NAME [GROUP...]" >&2
  exit 2
fi
DIR="$(cd "$1" && pwd)"
NAME="$2"
shift 2

CA_CRT="$DIR/pki/ca.crt"
CA_KEY="$DIR/pki/ca.key"
[[ -f "$CA_CRT" && -f "$CA_KEY" ]] || { echo "mint-user: no CA in $DIR/pki" >&2; exit 1; }
SERVER="$(cat "$DIR/server-url")"

safe="$(printf '%s' "$NAME" | tr -c 'A-Za-z0-9._-' '_')"
OUT="$DIR/users/$safe"
mkdir -p "$OUT"
chmod 700 "$OUT"

subj="/CN=$NAME"
for g in "$@"; do subj="$subj/O=$g"; done

openssl genrsa -out "$OUT/client.key" 2048 2>/dev/null
chmod 600 "$OUT/client.key"
openssl req -new -key "$OUT/client.key" -subj "$subj" -out "$OUT/client.csr" 2>/dev/null
cat >"$OUT/ext.cnf" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
EOF
openssl x509 -req -in "$OUT/client.csr" -CA "$CA_CRT" -CAkey "$CA_KEY" \
  -set_serial "0x$(openssl rand -hex 16)" -days 30 -sha256 \
  -extfile "$OUT/ext.cnf" -out "$OUT/client.crt" 2>/dev/null
rm -f "$OUT/client.csr" "$OUT/ext.cnf"

b64() { base64 -w0 <"$1"; }
cat >"$OUT/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: regcred-test
  cluster:
    server: $SERVER
    certificate-authority-data: $(b64 "$CA_CRT")
users:
- name: $safe
  user:
    client-certificate-data: $(b64 "$OUT/client.crt")
    client-key-data: $(b64 "$OUT/client.key")
contexts:
- name: $safe@regcred-test
  context:
    cluster: regcred-test
    user: $safe
    namespace: default
current-context: $safe@regcred-test
preferences: {}
EOF
chmod 600 "$OUT/kubeconfig"
printf '%s\n' "$OUT/kubeconfig"
