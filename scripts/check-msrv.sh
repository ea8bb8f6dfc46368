#!/usr/bin/env bash
# `rust-version` in Cargo.toml must be at least the highest one a locked dependency declares:
# a lower one promises builds that cargo then refuses ("package X cannot be built because it
# requires rustc ..."). Run by `make lint`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo metadata --locked --format-version 1 | python3 -c '
import json, sys

meta = json.load(sys.stdin)
ours = set(meta["workspace_members"])


def version(p):
    parts = [int(x) for x in (p.get("rust_version") or "0").split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


root = next(p for p in meta["packages"] if p["id"] in ours)
need = max((p for p in meta["packages"] if p["id"] not in ours), key=version)
have, want = root.get("rust_version"), need["rust_version"]
if version(root) < version(need):
    sys.exit("Cargo.toml: rust-version = %r, but %s %s requires rustc %s; fix: set rust-version = \"%s\""
             % (have, need["name"], need["version"], want, want))
print("rust-version %s covers every locked dependency (highest: %s %s)" % (have, need["name"], want))
'
