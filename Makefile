# regcred-refresher — build, lint and test entry points.
#
#   make test         build/install the test world's binaries (first run: several
#                     minutes, cached in ~/.cache/regcred-refresher), compile the
#                     tests, then run them inside a fresh world (kube-apiserver +
#                     kube-controller-manager + etcd + moto behind the cloud fixture +
#                     Google token fixture + a node (kubelet, containerd, registries;
#                     REGCRED_TEST_NODE=0 leaves it out), in a network namespace of its
#                     own; needs root) that is torn down after.
#   make world        start a world in $(WORLD_DIR) for interactive use (enter it
#                     with: bash tests/testenv/world.sh exec $(WORLD_DIR))
#   make world-down   stop it
#   make lint         rustfmt + clippy (warnings are errors)
#
# Override the test command, e.g.:
#   make test CARGO_TEST='cargo test --all-targets -- --nocapture some_test'

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

CARGO_TEST ?= cargo test --all-targets
# Compiles the tests before the world starts (so the world does not idle, and
# the API server does not compete with rustc for the 2 cores while tests run).
CARGO_TEST_BUILD ?= cargo test --all-targets --no-run
WORLD_DIR ?= target/world
WORLD := bash tests/testenv/world.sh
VENV_PY = "$$(bash tests/testenv/setup-venv.sh | tail -n 1)/bin/python"

.PHONY: test test-deps test-fixtures world world-down lint demo

test-deps:
	bash tests/testenv/build-k8s.sh >/dev/null
	bash tests/testenv/setup-venv.sh >/dev/null
	bash tests/testenv/build-pullproof.sh >/dev/null
	if [[ "$${REGCRED_TEST_NODE:-1}" != 0 ]]; then bash tests/testenv/build-node.sh >/dev/null; fi

test-fixtures: test-deps
	$(VENV_PY) -m pytest -q -p no:cacheprovider tests/fixtures

test: test-deps test-fixtures
	bash tests/chart/tools.sh >/dev/null  # helm, for integration/chart_node.rs
	$(CARGO_TEST_BUILD)
	$(WORLD) run -- $(CARGO_TEST)

world: test-deps
	$(WORLD) down $(WORLD_DIR)
	$(WORLD) up $(WORLD_DIR) >/dev/null
	@echo
	@echo "World is up, inside network namespace $$(cat $(WORLD_DIR)/netns). Use it with:"
	@echo "  $(WORLD) exec $(WORLD_DIR)                 # a shell inside, env applied"
	@echo "  $(WORLD) exec $(WORLD_DIR) -- kubectl get ns"
	@echo "Stop it with:               make world-down"

world-down:
	$(WORLD) down $(WORLD_DIR)

# The main job against the embedded local default (test world: API server + moto).
demo: test-deps
	cargo build
	$(WORLD) run -- bash scripts/demo.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	bash scripts/check-msrv.sh
	python3 scripts/module-arrows.py

# The release image without a Docker engine (scripts/build-image.sh): distroless cc-debian12's
# runtime layout from Debian 12 packages plus the release binary, configured as the Dockerfile's
# runtime stage declares, in target/image (oci/, image.tar); tests/image checks it against the
# Dockerfile and runs the binary in its root as uid 65532.
.PHONY: image
image:
	bash scripts/build-image.sh
	$(VENV_PY) -m pytest -q -p no:cacheprovider tests/image

# Chart tests (tests/chart/run.sh): helm lint, helm-unittest, kubeconform, server dry-run,
# and the binary run --once under the chart's own RBAC, all in a fresh world. Tools are
# go-installed once into ~/.cache/regcred-refresher/tools. `make docker-check` runs the
# Dockerfile's build-stage cargo command(s) in a temp copy (a release build: minutes).
.PHONY: chart-test docker-check
test: chart-test
chart-test: test-deps
	bash tests/chart/tools.sh >/dev/null
	cargo build
	$(WORLD) run -- bash tests/chart/run.sh
docker-check:
	bash tests/chart/dockerfile-build-check.sh

# The GitHub Actions workflows (.github/workflows), with actionlint go-installed by tools.sh.
.PHONY: actionlint
test: actionlint
actionlint:
	tools="$$(bash tests/chart/tools.sh | tail -n 1)"; "$$tools/actionlint" -no-color -shellcheck "$$tools/shellcheck"

# Benchmark (not part of `make test`): a refresh cycle over BENCH_SIZES namespaces against the
# local world, beside the kubectl pipeline (baseline A) and raw server-side apply (baseline B).
BENCH_SIZES ?= 100,1000
# e.g. BENCH_ARGS="--ours /path/to/other/regcred-refresher --out other": another build, side by side.
BENCH_ARGS ?=
BENCH_VENV = $${XDG_CACHE_HOME:-$$HOME/.cache}/regcred-refresher/bench-venv
.PHONY: bench
bench: test-deps
	cargo build --release --locked --bin regcred-refresher --example bench_ssa
	test -x $(BENCH_VENV)/bin/aws || { python3 -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install -q awscli==1.46.3; }
	REGCRED_WORLD_AUDIT=1 $(WORLD) run -- python3 bench/run.py --sizes $(BENCH_SIZES) --aws $(BENCH_VENV)/bin/aws $(BENCH_ARGS)

# Soak (not part of `make test`): the daemon refreshing every second against a fresh world for
# SOAK_SECS (default 600), asserting flat RSS, threads, fds, sockets and tokio tasks.
SOAK_SECS ?= 600
.PHONY: soak
soak: test-deps
	$(CARGO_TEST_BUILD)
	REGCRED_SOAK_SECS=$(SOAK_SECS) $(WORLD) run -- cargo test --test tests soak -- --ignored --nocapture

# Dependency policy (deny.toml): licences, sources (crates.io only) and duplicate versions.
# The advisories check is left out here: its database is fetched from GitHub, which these
# machines cannot reach; with a network, run `cargo deny check advisories`. cargo-deny is
# installed into the cargo bin on first use (a build of a few minutes, once).
.PHONY: deny
test: deny
deny:
	command -v cargo-deny >/dev/null || cargo install cargo-deny --locked --version 0.20.2
	cargo deny check licenses sources bans

# Fuzzing (not part of `make test`): each cargo-fuzz target in fuzz/ runs FUZZ_SECONDS from
# its seeds (fuzz/seeds/<target>) plus what earlier runs kept (fuzz/corpus, git-ignored).
# A crash fails the target and leaves its input in fuzz/artifacts/<target>/ (cargo-fuzz): make it a
# unit test. cargo-fuzz needs nightly; without a nightly toolchain the stable one runs with
# RUSTC_BOOTSTRAP=1. No sanitizer (the targets are safe Rust): panics, failed assertions and
# overflows (debug assertions on) are what it catches.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= config dockerconfig ecr_token
.PHONY: fuzz
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
	if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then tc=+nightly; else tc=; export RUSTC_BOOTSTRAP=1; fi; \
	cargo $$tc fuzz build -s none -a; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  cargo $$tc fuzz run -s none -a $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1; \
	done

# A time-compressed day (not part of `make test`): writes and token calls per namespace per day
# for the daemon and an hourly CronJob, tokens shortened 1,800× (README → Performance).
.PHONY: day
day: test-deps
	$(CARGO_TEST_BUILD)
	$(WORLD) run -- cargo test --test tests compressed_day -- --ignored --nocapture

# Chaos day (issue 22; not part of `make test`): the chart on the world's node, two replicas,
# 20 targets with ECR + Google + static, one day compressed 60x (about 25 min of faults, then
# the refresher stopped as the control); every probe pod's pulls counted. Writes
# bench/results/chaos-day.json, its timeline and chaos-day.png (bench/chaos/plot.py).
# REGCRED_CHAOS_SPEED / _SECS / _NAMESPACES / _PERIOD override the plan.
PLOT_VENV = $${XDG_CACHE_HOME:-$$HOME/.cache}/regcred-refresher/plot-venv
.PHONY: chaos-day
chaos-day: test-deps
	bash tests/chart/tools.sh >/dev/null
	$(CARGO_TEST_BUILD)
	test -x $(PLOT_VENV)/bin/python || { python3 -m venv $(PLOT_VENV) && $(PLOT_VENV)/bin/pip install -q matplotlib==3.10.7; }
	# The picture is drawn from a run whose targets were missed too (it shows where), then
	# make fails with the test's status.
	REGCRED_CHAOS_OUT=$(CURDIR)/bench/results $(WORLD) run -- cargo test --test tests chaos_day -- --ignored --nocapture; \
	  status=$$?; \
	  $(PLOT_VENV)/bin/python bench/chaos/plot.py bench/results/chaos-day-timeline.json bench/results/chaos-day.png && exit $$status

# Connections one `--once` run opens to the API server (strace of its connect() calls), at
# BENCH_SIZES namespaces, for a create and an unchanged cycle (README → Performance).
.PHONY: bench-connections
bench-connections: test-deps
	cargo build --release --locked --bin regcred-refresher
	$(WORLD) run -- bash bench/connections.sh $(BENCH_SIZES)
