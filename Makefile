# hearth: build, run, test, lint and benchmark. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
CONFIG ?= examples/hearth.toml
SECS ?= 600

.PHONY: help build run test test-deps lint bench bench-posts bench-micro profile callgrind levers fuzz-smoke soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## release build of hearth and the demo upstream
	$(CARGO) build --release --bins

run: build ## start the demo upstream and hearth in front of it (examples/hearth.toml); Ctrl-C stops both
	@set -euo pipefail; \
	target/release/hearth-demo-upstream --listen 127.0.0.1:9001 --listen 127.0.0.1:9002 & up=$$!; \
	trap 'kill $$up $$hp 2>/dev/null; wait 2>/dev/null; exit 0' INT TERM; \
	RUST_LOG=$${RUST_LOG:-info} target/release/hearth -c $(CONFIG) & hp=$$!; \
	sleep 0.5; \
	echo; echo "hearth is proxying http://127.0.0.1:8080/ to the demo upstream on :9001 and :9002."; \
	echo "Try:  curl -s http://127.0.0.1:8080/api/hello   (Ctrl-C stops both)"; echo; \
	wait $$hp; kill $$up 2>/dev/null; wait 2>/dev/null

test: test-deps ## every unit, integration and doc test, after test-deps; the etcd, chromium and promtool tests fail rather than skip
	HEARTH_REQUIRE_ETCD=1 $(CARGO) test --all-targets --no-fail-fast

test-deps: ## Debian's chromium, etcd and promtool (prometheus) for the status page, config-center and metrics-lint tests, when missing (root)
	bash .ci/chromium.sh
	bash .ci/etcd.sh
	bash .ci/promtool.sh

lint: ## rustfmt and clippy, warnings are errors; the fuzz targets must still compile
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) check --manifest-path fuzz/Cargo.toml

bench: ## end-to-end load vs nginx and HAProxy (installs them): small/c500/body/https, idle RSS, strace, then issue 21's stale/spike/cap/large/rate (bench/shapes.sh) -> bench/results.md (SHAPES=... for a subset); chunked uploads -> bench/chunks.md; then criterion
	bash bench/run.sh
	BUILD=0 bash bench/chunks.sh
	$(MAKE) bench-micro

bench-posts: ## upstream connections for bursts of GETs vs POSTs, hearth vs nginx and HAProxy (installs them) -> bench/posts.md
	bash bench/posts.sh

profile: ## perf record -e cpu-clock -g on a loaded 1-worker hearth -> bench/profile.txt
	bash bench/profile.sh

callgrind: ## instructions per request under valgrind callgrind, repeatable A/B of builds (BINS="a b")
	bash bench/callgrind.sh

levers: ## each performance lever's commit built before and after, instructions per request -> bench/levers.md
	bash bench/levers.sh

bench-micro: ## criterion benches: LRU, timer wheel, head parsing
	$(CARGO) bench --bench lru --bench timer --bench head

fuzz-smoke: ## every fuzz target for SECS seconds (default 30); installs cargo-fuzz; fails on a crash
	bash fuzz/smoke.sh

soak: ## every fault at once against a release build for SECS seconds (default 600); prints RSS and descriptors
	SOAK_SECS=$(SECS) $(CARGO) test --release --test soak -- --nocapture

clean: ## remove build output
	$(CARGO) clean
	rm -rf fuzz/target
