#!/usr/bin/env bash
# Everything the tests need, from a fresh machine with a Rust toolchain: builds and runs the whole
# test suite (no network: downloads are tested against local servers on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# Two test binaries at a time: each runs Burn on rayon's pool, and more would only fight over cores.
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"
