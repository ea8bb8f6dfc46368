#!/usr/bin/env bash
# Regenerates charts/regcred-refresher/README.md from values.yaml comments (`# --`) and
# README.md.gotmpl with helm-docs (go-installed by tools.sh). Optional argument: a chart dir.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHART="${1:-$HERE/../../charts/regcred-refresher}"
PATH="$(bash "$HERE/tools.sh" | tail -n 1):$PATH"
cd "$CHART"
helm-docs --chart-search-root . --template-files README.md.gotmpl --output-file README.md --sort-values-order file
