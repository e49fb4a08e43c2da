# Two entry points (README.md): `make demo` runs the main job end to end on the embedded
# defaults; `make test` runs the tests. Both provision libtorch and the default model first.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eo pipefail -c

.PHONY: demo test setup build

setup:
	source scripts/env.sh
	scripts/fetch-model.sh

# target/release/embtune is the torch-free front end (gen, list in-process) and
# target/release/embtune-torch the libtorch binary it hands the other commands to. Two cargo
# invocations: cargo unifies features within one, which would give the front end libtorch.
build: setup
	source scripts/env.sh
	cargo build --release -p embtune-torch
	cargo build --release -p embtune

demo: build
	scripts/demo.sh

test: setup
	source scripts/env.sh
	mkdir -p target
	cargo test --workspace --no-fail-fast 2>&1 | tee target/test.log
	scripts/test-summary.sh target/test.log
