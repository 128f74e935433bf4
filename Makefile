# Osprey's entry points. The target directory lives outside the clone so that
# CI and later runs rebuild only what changed.
SHELL := bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/osprey/target
export OSPREY_PYTHON ?= $(HOME)/.cache/osprey/venv/bin/python
export OSPREY_S3FS_BIN ?= $(HOME)/.cache/osprey/tools/bin/s3s-fs
OSPREY := $(CARGO_TARGET_DIR)/release/osprey

.PHONY: setup build test demo bench schemas fmt

setup:
	infra/scripts/setup.sh

# One profile (release) for the binary, the tests and the benchmarks: the
# dependency graph (DataFusion, FAISS) is compiled once.
build:
	infra/scripts/setup.sh --no-python --no-s3
	cargo build --release --workspace --all-targets

test: setup
	cargo build --release --workspace --all-targets
	cargo test --release --workspace --no-fail-fast

demo:
	infra/scripts/setup.sh --no-python --no-s3
	cargo build --release -p osprey-cli
	OSPREY=$(OSPREY) infra/scripts/demo.sh

bench: setup
	cargo build --release -p osprey-cli
	OSPREY=$(OSPREY) infra/scripts/bench-search.sh

schemas:
	cargo run --release -q -p osprey-cli -- schema --write schemas

fmt:
	cargo fmt --all
