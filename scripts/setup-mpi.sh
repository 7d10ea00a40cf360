#!/usr/bin/env bash
# Open MPI for data-parallel training (`cargo build --features mpi`, `mpirun -np N llmfs …`):
# the runtime and headers from Debian's packages, and libclang, which the `mpi` crate's bindings
# are generated with. Cached by the system: a machine that has them installs nothing.
# Exits 0 with a note when they cannot be installed (not root, no apt-get), 1 on a failed install.
set -euo pipefail

have() { command -v mpicc >/dev/null && command -v mpirun >/dev/null && ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; }
if have; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: Open MPI is not installed and this script can only install it as root with apt-get:" \
         "apt-get install openmpi-bin libopenmpi-dev libclang-dev" >&2
    exit 0
fi
packages=(openmpi-bin libopenmpi-dev libclang-dev)
apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1; } ||
    { echo "apt-get install ${packages[*]} failed" >&2; exit 1; }
have
