#!/usr/bin/env bash
# Everything the tests need, from a fresh machine with a Rust toolchain: builds and runs the whole
# test suite (no network: downloads are tested against local servers on 127.0.0.1), then checks
# that the CUDA backend type-checks (it needs no GPU or CUDA toolkit for that).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# Optional checks against real Python packages get them from PyPI into cached venvs of their own:
# the official `openai` client (apps/tests/it/serve.rs) and an MLflow server (~0.9 GB once,
# apps/tests/it/tracking.rs). Without Python or PyPI those tests say they skipped.
# setup_venv DIR MODULE SPEC: the venv in DIR, made and filled when MODULE does not import.
setup_venv() {
    command -v python3 >/dev/null || return 1
    [ -x "$1/bin/python" ] || python3 -m venv "$1" || return 1
    "$1/bin/python" -c "import $2" 2>/dev/null ||
        "$1/bin/pip" install --quiet --disable-pip-version-check "$3" || return 1
}
openai_venv="${LLMFS_OPENAI_VENV:-$HOME/.cache/llmfs/openai-venv}"
if setup_venv "$openai_venv" openai "openai>=1.40,<3"; then
    export LLMFS_OPENAI_PYTHON="$openai_venv/bin/python"
else
    echo "note: no Python venv with the openai client; the server's openai-client test will skip" >&2
fi
mlflow_venv="${LLMFS_MLFLOW_VENV:-$HOME/.cache/llmfs/mlflow-venv}"
if setup_venv "$mlflow_venv" mlflow.server "mlflow>=2.14,<4"; then
    export LLMFS_MLFLOW_PYTHON="$mlflow_venv/bin/python"
else
    echo "note: no Python venv with mlflow; the MLflow tracking test will skip" >&2
fi

started=$(date +%s)
# Two test binaries at a time: each runs Burn on rayon's pool, and more would only fight over cores.
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"

# CUDA: type-check only. Linking needs LLVM (scripts/setup-cuda-build.sh) and running needs a GPU
# (scripts/gpu-check.sh); under DOCS_RS the LLVM build scripts skip their download.
DOCS_RS=1 cargo check --locked --features cuda -p llmfs-gpt -p llmfs-pipelines -p llmfs-apps
# A GPU-only build, without the CPU backend (its kernels are behind the `flex` feature), type-checks too.
cargo check --locked --no-default-features --features wgpu -p llmfs-gpt -p llmfs-pipelines -p llmfs-apps
# The benchmarks are built only by `cargo bench` (release): type-check them so that they keep compiling.
cargo check --locked --benches

# MPI (data-parallel training, feature `mpi`): the collectives with two real ranks under mpirun,
# and `mpirun -np 2 llmfs pretrain` against one process, once scripts/setup-mpi.sh has installed
# Open MPI (the tests skip with a note without it).
if bash scripts/setup-mpi.sh && command -v mpirun >/dev/null; then
    cargo test --locked --features mpi -p llmfs-pipelines -p llmfs-apps --test it -- distributed:: --test-threads=1
else
    echo "note: no Open MPI; the MPI tests skip (bash scripts/setup-mpi.sh as root installs it)" >&2
fi

# wgpu (Burn's WGSL shaders through Vulkan) on Mesa's lavapipe, a CPU Vulkan driver: the CPU
# backend's parity tests (logits, hidden states, cached steps, greedy tokens, the masked loss,
# AdamW; the Llama family's logits and greedy tokens) on another backend. Burn's wgpu stack takes ~40 minutes to build the first time on 2
# cores, so a run whose tests above took longer than LLMFS_WGPU_AFTER seconds (a cold build cache)
# leaves it for the next run rather than risk the time limit; LLMFS_WGPU=0 skips it, =1 forces it.
wgpu_parity() {
    if [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] && [ ! -e /usr/share/vulkan/icd.d/lvp_icd.aarch64.json ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get install -y -qq mesa-vulkan-drivers >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq mesa-vulkan-drivers >/dev/null 2>&1; } || true
        fi
    fi
    if ! ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then
        echo "note: no lavapipe (apt-get install mesa-vulkan-drivers); the wgpu parity tests skip" >&2
        return 0
    fi
    # Mesa wants a runtime directory (it only warns without one).
    XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}" LLMFS_TEST_DEVICE=wgpu \
        cargo test --locked --features wgpu -p llmfs-gpt --test it -- parity:: llama:: --test-threads=1
}
elapsed=$(( $(date +%s) - started ))
case "${LLMFS_WGPU:-auto}" in
    0) echo "note: LLMFS_WGPU=0, the wgpu parity tests skip" >&2 ;;
    1) wgpu_parity ;;
    *) if [ "$elapsed" -le "${LLMFS_WGPU_AFTER:-1200}" ]; then
           wgpu_parity
       else
           echo "note: the tests took ${elapsed}s (a cold build cache): the wgpu parity tests wait for the next run (LLMFS_WGPU=1 runs them now)" >&2
       fi ;;
esac

# LibTorch (feature `tch`: burn-tch on PyTorch 2.9.0) on the CPU: every backend-parity test (the
# GPT-2 and Llama fixtures' logits, greedy ids with and without padding and the cache, the
# classifiers, the masked loss and 3 AdamW steps, the attention mask) in the one `backends` binary,
# on tch-cpu. It needs the venv of scripts/setup-tch.sh (torch==2.9.0 from PyPI, a 6.7 GB download
# once) and builds Burn again with burn-tch (~30 minutes cold on 2 cores; in the release profile
# and for the packages of `cargo build --release --features tch -p llmfs-pipelines -p llmfs-apps`,
# whose CLI runs `llmfs bench --device tch-cpu` on the same build), so it runs by itself only when
# the venv is already there and the run so far took at most LLMFS_TCH_AFTER seconds (a warm build
# cache); LLMFS_TCH=1 makes the venv if needed and runs it, LLMFS_TCH=0 skips it.
tch_parity() {
    (
        eval "$(bash scripts/setup-tch.sh --print-env)" &&
            LLMFS_TEST_DEVICE=tch-cpu cargo test --locked --release --features tch -p llmfs-pipelines -p llmfs-apps --test backends -- --test-threads=1
    )
}
elapsed=$(( $(date +%s) - started ))
case "${LLMFS_TCH:-auto}" in
    0) echo "note: LLMFS_TCH=0, the LibTorch (tch-cpu) parity tests skip" >&2 ;;
    1) tch_parity ;;
    *) if ! bash scripts/setup-tch.sh --check; then
           echo "note: no PyTorch 2.9.0 venv (bash scripts/setup-tch.sh makes it, 6.7 GB): the LibTorch (tch-cpu) parity tests skip (LLMFS_TCH=1 sets it up and runs them)" >&2
       elif [ "$elapsed" -le "${LLMFS_TCH_AFTER:-1200}" ]; then
           tch_parity
       else
           echo "note: the tests took ${elapsed}s (a cold build cache): the LibTorch (tch-cpu) parity tests wait for the next run (LLMFS_TCH=1 runs them now)" >&2
       fi ;;
esac
