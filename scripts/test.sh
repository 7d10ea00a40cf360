#!/usr/bin/env bash
# Everything the tests need, from a fresh machine with a Rust toolchain: builds and runs the whole
# test suite (no network: downloads are tested against local servers on 127.0.0.1), then the
# backend checks that need no GPU: the CUDA backend type-checks, and the parity tests run on Burn's
# wgpu backend over Mesa's lavapipe (a CPU Vulkan driver), installed here when apt is available.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# Two test binaries at a time: each runs Burn on rayon's pool, and more would only fight over cores.
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"

# CUDA: type-check only. Linking needs LLVM (scripts/setup-cuda-build.sh) and running needs a GPU
# (scripts/gpu-check.sh); under DOCS_RS the LLVM build scripts skip their download.
DOCS_RS=1 cargo check --locked --features cuda -p llmfs-gpt -p llmfs-pipelines -p llmfs-apps

# wgpu on lavapipe: the same parity tests as on the CPU (LLMFS_TEST_DEVICE picks the backend).
if [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y --no-install-recommends mesa-vulkan-drivers >/dev/null 2>&1 ||
        echo "could not install mesa-vulkan-drivers" >&2
fi
if [ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ]; then
    LLMFS_TEST_DEVICE=wgpu cargo test --locked --features wgpu -p llmfs-gpt --test parity --test generation -- --test-threads=1
else
    echo "SKIPPED: wgpu parity tests (no Vulkan driver: apt-get install mesa-vulkan-drivers)" >&2
fi
