#!/usr/bin/env bash
# Everything the tests need, from a fresh machine with a Rust toolchain: builds and runs the whole
# test suite (no network: downloads are tested against local servers on 127.0.0.1), then checks
# that the CUDA backend type-checks (it needs no GPU or CUDA toolkit for that).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# Two test binaries at a time: each runs Burn on rayon's pool, and more would only fight over cores.
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"

# CUDA: type-check only. Linking needs LLVM (scripts/setup-cuda-build.sh) and running needs a GPU
# (scripts/gpu-check.sh); under DOCS_RS the LLVM build scripts skip their download.
DOCS_RS=1 cargo check --locked --features cuda -p llmfs-gpt -p llmfs-pipelines -p llmfs-apps
