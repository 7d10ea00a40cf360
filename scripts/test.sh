#!/usr/bin/env bash
# Everything the tests need, from a fresh machine with a Rust toolchain: builds and runs the whole
# test suite (no network: downloads are tested against local servers on 127.0.0.1), then checks
# that the CUDA backend type-checks (it needs no GPU or CUDA toolkit for that).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# The server's optional check with the official `openai` client (apps/tests/serve.rs) gets the
# package from PyPI into a venv of its own; without Python or PyPI that test says it skipped.
openai_venv="${LLMFS_OPENAI_VENV:-$HOME/.cache/llmfs/openai-venv}"
setup_openai_client() {
    command -v python3 >/dev/null || return 1
    [ -x "$openai_venv/bin/python" ] || python3 -m venv "$openai_venv" || return 1
    "$openai_venv/bin/python" -c "import openai" 2>/dev/null ||
        "$openai_venv/bin/pip" install --quiet --disable-pip-version-check "openai>=1.40,<3" || return 1
}
if setup_openai_client; then
    export LLMFS_OPENAI_PYTHON="$openai_venv/bin/python"
else
    echo "note: no Python venv with the openai client; the server's openai-client test will skip" >&2
fi

# Two test binaries at a time: each runs Burn on rayon's pool, and more would only fight over cores.
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"

# CUDA: type-check only. Linking needs LLVM (scripts/setup-cuda-build.sh) and running needs a GPU
# (scripts/gpu-check.sh); under DOCS_RS the LLVM build scripts skip their download.
DOCS_RS=1 cargo check --locked --features cuda -p llmfs-gpt -p llmfs-pipelines -p llmfs-apps
