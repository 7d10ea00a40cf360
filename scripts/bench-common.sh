# Sourced by the scripts/bench-*.sh that compare llmfs with the PyTorch baseline. Before sourcing, set
# `out` (the default output directory), and `extra_flags` to take flags of its own. Reads the common
# flags --baseline DIR, --threads "1 2", --out DIR; checks the baseline, makes its venv (its setup.sh: a ~5.6 GB PyTorch venv, once) and sets
# `baseline`, `threads`, `out` and `venv`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
baseline="../shared/bench/torch_baseline"
threads="1 2"
while [ $# -gt 0 ]; do
    case "$1" in
        --baseline) baseline="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --*)
            # A script's own flags: `extra_flags="repeat data"` before sourcing lets --repeat N set $repeat.
            name="${1#--}"
            name="${name//-/_}"
            if [[ " ${extra_flags:-} " == *" $name "* ]] && [ $# -ge 2 ]; then
                printf -v "$name" '%s' "$2"
                shift 2
            else
                echo "unknown argument $1" >&2
                exit 2
            fi ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -f "$baseline/bench_torch_cpu.py" ] || { echo "no PyTorch baseline in $baseline (use --baseline DIR)" >&2; exit 1; }
venv="${VENV:-$HOME/.cache/llmfs-torch-venv}"
VENV="$venv" bash "$baseline/setup.sh"
mkdir -p "$out"
