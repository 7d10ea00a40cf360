#!/usr/bin/env bash
# Llama-family decoding and prefill, llmfs vs PyTorch + transformers (random weights of a preset's
# shape, fp32, batch 1: 16-token prompt + 128 greedy new tokens; prefill of 512 tokens), run back to
# back at the same thread count so that the ratios mean something on a machine whose speed drifts.
# With --lora R: a LoRA fine-tuning step instead (rank R on every projection, B4×T256), llmfs vs
# PEFT + transformers.
#
#   bash scripts/bench-llama.sh [--preset smollm2-135m] [--threads 2] [--lora 8] [--out DIR]
#
# The PyTorch venv is ../shared/bench/torch_baseline's (its setup.sh makes it once, ~5.6 GB); PEFT is
# installed into it the first time --lora needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=smollm2-135m threads=2 out=target/bench-llama lora=
while [ $# -gt 0 ]; do
    case "$1" in
        --preset) preset="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --lora) lora="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
venv="${VENV:-$HOME/.cache/llmfs-torch-venv}"
[ -x "$venv/bin/python" ] || { echo "no PyTorch venv at $venv: run ../shared/bench/torch_baseline/setup.sh" >&2; exit 1; }
mkdir -p "$out"
cargo build --release --locked --bin llmfs 2>/dev/null
llmfs="${CARGO_TARGET_DIR:-target}/release/llmfs"
lscpu | grep -E "Model name|^CPU\(s\)" >&2
if [ -n "$lora" ]; then
    "$venv/bin/python" -c "import peft" 2>/dev/null || "$venv/bin/pip" install -q peft
    echo "== $preset LoRA r=$lora step, $threads thread(s): PEFT + transformers (eager attention)" >&2
    "$venv/bin/python" scripts/reference/bench_peft_lora.py --preset "$preset" --threads "$threads" --rank "$lora" > "$out/peft.json"
    echo "== $preset LoRA r=$lora step, $threads thread(s): llmfs" >&2
    "$llmfs" bench train-step --preset "$preset" --threads "$threads" --trains "lora:$lora" --out "$out/llmfs_lora.json" > /dev/null
    python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
ours, peft = json.load(open(f"{out}/llmfs_lora.json")), json.load(open(f"{out}/peft.json"))
print(f"{'':22} {'llmfs':>10} {'PEFT':>10} {'ratio':>7}")
print(f"{'LoRA step tok/s':22} {ours['tokens_per_s']:10.1f} {peft['tokens_per_s']:10.1f} {ours['tokens_per_s'] / peft['tokens_per_s']:7.2f}")
print(f"{'trainable params':22} {ours['trainable_params']:10d} {peft['trainable_params']:10d}")
print(f"{'peak RSS MiB':22} {ours['peak_rss_mib']:10.0f} {peft['peak_rss_mib']:10.0f}")
print(f"{'first loss':22} {ours['losses'][0]:10.3f} {peft['losses'][0]:10.3f}")
PY
    exit 0
fi
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
