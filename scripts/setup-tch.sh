#!/usr/bin/env bash
# Makes `cargo build --features tch` (the LibTorch backend, burn-tch 0.22.1 -> tch 0.22 -> torch-sys
# 0.22) build without downloading libtorch from download.pytorch.org: torch-sys 0.22 expects PyTorch
# 2.9.0, and with LIBTORCH_USE_PYTORCH=1 its build script asks `python` (found through VIRTUAL_ENV /
# PATH) where an installed `torch` keeps its headers and libraries. This script installs
# torch==2.9.0 from PyPI into a cached venv. On Linux x86_64 that wheel is the CUDA 12.8 build
# (about 6.7 GB with its nvidia-* wheels, once); it runs on CPU-only machines too (tch-cpu).
# Idempotent: a second run checks and changes nothing.
#
#   bash scripts/setup-tch.sh                 # make (or check) the venv
#   eval "$(bash scripts/setup-tch.sh --print-env)"
#   cargo build --release --features tch      # then: llmfs ... --device tch-cpu
#
#   --print-env   print the `export ...` lines a build needs (makes the venv first if missing)
#   --check       exit 0 if the venv is complete, 1 if not (installs nothing)
#   TCH_VENV=/path/to/venv overrides the venv (default ~/.cache/llmfs/tch-venv)
#
# The binaries find torch/lib at run time by themselves: with feature tch, each package's build.rs
# (build.rs, gpt/, pipelines/, apps/) adds an rpath to the directory torch-sys linked against, so
# no LD_LIBRARY_PATH is needed. After moving or remaking the venv: cargo clean -p torch-sys.
set -euo pipefail

TORCH_VERSION="2.9.0"
venv="${TCH_VENV:-$HOME/.cache/llmfs/tch-venv}"
mode="${1:-setup}"

venv_ok() {
    [ -x "$venv/bin/python" ] &&
        [ "$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)" = "$TORCH_VERSION" ]
}

case "$mode" in
--check)
    venv_ok
    exit $?
    ;;
setup | --print-env) ;;
-h | --help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "unknown argument $mode (want --print-env, --check or nothing)" >&2
    exit 2
    ;;
esac

if ! venv_ok; then
    command -v python3 >/dev/null || { echo "python3 is needed (apt-get install python3 python3-venv)" >&2; exit 1; }
    if [ ! -x "$venv/bin/python" ]; then
        echo "creating $venv" >&2
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv"
    fi
    echo "installing torch==$TORCH_VERSION into $venv (a large download, once)" >&2
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    "$venv/bin/pip" install --quiet --no-cache-dir "torch==$TORCH_VERSION" >&2
    venv_ok || { echo "torch $TORCH_VERSION did not import from $venv" >&2; exit 1; }
fi

torch_lib="$("$venv/bin/python" -W ignore -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
[ -e "$torch_lib/libtorch_cpu.so" ] || [ -e "$torch_lib/libtorch_cpu.dylib" ] ||
    { echo "no libtorch_cpu in $torch_lib" >&2; exit 1; }

if [ "$mode" = "--print-env" ]; then
    # torch-sys: use the venv's torch instead of downloading libtorch; its build script runs
    # `python` from VIRTUAL_ENV/bin or PATH (not LIBTORCH, which would win otherwise).
    echo "export LIBTORCH_USE_PYTORCH=1"
    echo "export VIRTUAL_ENV=$venv"
    echo "export PATH=$venv/bin:\$PATH"
    echo "unset LIBTORCH LIBTORCH_INCLUDE LIBTORCH_LIB"
    exit 0
fi
echo "torch $TORCH_VERSION is in place: $venv ($torch_lib)" >&2
echo "now: eval \"\$(bash scripts/setup-tch.sh --print-env)\" && cargo build --release --features tch" >&2
