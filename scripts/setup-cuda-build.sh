#!/usr/bin/env bash
# Makes `cargo build --features cuda` (and Burn's `cpu` backend) build without downloading LLVM
# from GitHub: Burn 0.22.1's CUDA backend goes through cubecl-llvm, whose build script
# (tracel-llvm-bundler 23.1.0-4) fetches an LLVM 23.1 bundle from GitHub releases. Behind a firewall
# that only lets package registries through, this script installs the same LLVM 23.1 SDK from PyPI
# (`mlc-llvm-static`) into a venv and puts it where the bundler looks for it, with the sentinel
# file that tells it the bundle is installed. Idempotent: a second run changes nothing.
#
#   bash scripts/setup-cuda-build.sh            # then: cargo build --release --features cuda
#   VENV=/path/to/venv bash scripts/setup-cuda-build.sh
#
# The CUDA toolkit is not needed to build (cudarc loads libcuda at run time); a machine without
# a GPU can build a CUDA binary. After switching LLVMs: cargo clean -p cubecl-llvm -p tracel-llvm-bundler
set -euo pipefail

LLVM_VERSION="23.1.0-4"
PYPI_PACKAGE='mlc-llvm-static[all]==23.1.1.post0'
venv="${VENV:-$HOME/.cache/llmfs-llvm-venv}"
target="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-$LLVM_VERSION"
sentinel="$target/.tracel-llvm-installed"

if [ -e "$sentinel" ]; then
    echo "LLVM $LLVM_VERSION is already in place: $target" >&2
    exit 0
fi
command -v python3 >/dev/null || { echo "python3 is needed (apt-get install python3 python3-venv)" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv" >&2
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import mlc_llvm_static' 2>/dev/null; then
    echo "installing $PYPI_PACKAGE (a large download, once)" >&2
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "$PYPI_PACKAGE"
fi
prefix="$("$venv/bin/python" -m mlc_llvm_static.config --prefix)"
[ -d "$prefix" ] || { echo "mlc_llvm_static reported prefix $prefix, which does not exist" >&2; exit 1; }
mkdir -p "$(dirname "$target")"
if [ -e "$target" ] && [ ! -L "$target" ]; then
    echo "$target exists and is not a link made by this script: move it away first" >&2
    exit 1
fi
ln -sfn "$prefix" "$target"
touch "$sentinel"
echo "LLVM $LLVM_VERSION: $target -> $prefix" >&2
echo "now: cargo build --release --features cuda   (after a previous LLVM: cargo clean -p cubecl-llvm -p tracel-llvm-bundler)" >&2
