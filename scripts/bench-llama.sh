#!/usr/bin/env bash
# Llama-family decoding and prefill, llmfs vs PyTorch + transformers (random weights of a preset's
# shape, fp32, batch 1: 16-token prompt + 128 greedy new tokens; prefill of 512 tokens), run back to
# back at the same thread count so that the ratios mean something on a machine whose speed drifts.
#
#   bash scripts/bench-llama.sh [--preset smollm2-135m] [--threads 2] [--out DIR]
#
# The PyTorch venv is ../shared/bench/torch_baseline's (its setup.sh makes it once, ~5.6 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=smollm2-135m threads=2 out=target/bench-llama
while [ $# -gt 0 ]; do
    case "$1" in
        --preset) preset="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
venv="${VENV:-$HOME/.cache/llmfs-torch-venv}"
[ -x "$venv/bin/python" ] || { echo "no PyTorch venv at $venv: run ../shared/bench/torch_baseline/setup.sh" >&2; exit 1; }
mkdir -p "$out"
cargo build --release --locked --bin llmfs 2>/dev/null
llmfs="${CARGO_TARGET_DIR:-target}/release/llmfs"
lscpu | grep -E "Model name|^CPU\(s\)" >&2
echo "== $preset, $threads thread(s): PyTorch (eager attention)" >&2
/usr/bin/time -f "%M" -o "$out/torch.rss" "$venv/bin/python" scripts/reference/bench_hf_llama.py --preset "$preset" --threads "$threads" > "$out/torch.json"
echo "== $preset, $threads thread(s): llmfs" >&2
"$llmfs" bench generate --preset "$preset" --threads "$threads" --prefill-len 512 --out "$out/llmfs.json" > /dev/null
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
ours, torch = json.load(open(f"{out}/llmfs.json")), json.load(open(f"{out}/torch.json"))
decode, prefill = ours["kv_cache"]["tokens_per_s"], ours["prefill"]["tokens_per_s"]
print(f"{'':22} {'llmfs':>10} {'transformers':>13} {'ratio':>7}")
print(f"{'decode tok/s':22} {decode:10.1f} {torch['generate']['tokens_per_s']:13.1f} {decode / torch['generate']['tokens_per_s']:7.2f}")
print(f"{'prefill 512 tok/s':22} {prefill:10.1f} {torch['prefill']['tokens_per_s']:13.1f} {prefill / torch['prefill']['tokens_per_s']:7.2f}")
print(f"{'peak RSS MiB':22} {ours['peak_rss_mib']:10.0f} {torch['peak_rss_mib']:13.0f}")
print(f"calibration GFLOP/s: llmfs {ours['calib_gflops_before']:.0f}/{ours['calib_gflops_after']:.0f}, torch {torch['calib_gflops_before']:.0f}/{torch['calib_gflops_after']:.0f}")
PY
