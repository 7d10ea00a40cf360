#!/usr/bin/env bash
# Generation speed, llmfs vs PyTorch + transformers, GPT-2 124M shape (random weights, fp32, batch 1,
# 16-token prompt, 128 greedy new tokens), at 1 and 2 threads, measured back to back so that the
# ratios mean something on a machine whose speed drifts.
#
#   bash scripts/bench-generate.sh [--baseline DIR] [--threads "1 2"] [--out DIR]
#
# DIR defaults to ../shared/bench/torch_baseline (its setup.sh makes a ~5.6 GB PyTorch venv once).
out="target/bench-generate"
source "$(dirname "$0")/bench-common.sh" "$@"
cargo bench --bench generate --no-run

# A private copy of the baseline, completed with the prompt module its `infer` case imports when the
# copy we were given lacks it (the first 16 GPT-2 tokens of this paragraph are the prompt).
copy="$out/torch_baseline"
rm -rf "$copy" && cp -r "$baseline" "$copy" && chmod -R u+w "$copy"
if [ ! -f "$copy/reference_outputs.py" ]; then
    cat > "$copy/reference_outputs.py" <<'PY'
PARAGRAPH = ("I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough--so it was no "
             "great surprise to me to hear that, in the height of his glory, he had dropped his painting, married a "
             "rich widow, and established himself in a villa on the Riviera.")
PY
fi
baseline="$copy"

for t in $threads; do
    echo "== $t thread(s): PyTorch" >&2
    "$venv/bin/python" "$baseline/bench_torch_cpu.py" --threads "$t" --cases infer --out "$out/torch_${t}thread.json" >/dev/null
    echo "== $t thread(s): llmfs" >&2
    cargo bench --bench generate -- --threads "$t" --no-cache --out "$out/llmfs_${t}thread.json" >/dev/null
done

python3 - "$out" $threads <<'PY'
import json, sys
out, threads = sys.argv[1], sys.argv[2:]
print(f"{'threads':>7} {'llmfs tok/s':>12} {'torch HF generate':>18} {'torch manual loop':>18} {'ratio vs HF':>12} {'ratio vs loop':>14} {'no-cache ratio':>15}")
for t in threads:
    ours = json.load(open(f"{out}/llmfs_{t}thread.json"))
    torch = json.load(open(f"{out}/torch_{t}thread.json"))["infer"]
    o = ours["kv_cache"]["tokens_per_s"]
    hf = torch["hf_generate_kv_cache"]["tokens_per_s"]
    loop = torch["manual_loop_kv_cache"]["tokens_per_s"]
    nc = (ours["no_cache"]["tokens_per_s"] / torch["hf_generate_no_cache"]["tokens_per_s"]) if ours.get("no_cache") else float("nan")
    print(f"{t:>7} {o:>12.1f} {hf:>18.1f} {loop:>18.1f} {o/hf:>11.2f}x {o/loop:>13.2f}x {nc:>14.2f}x")
    print(f"        calib GFLOP/s llmfs {ours['calib_gflops_before']:.0f}/{ours['calib_gflops_after']:.0f}, torch {torch['calib_gflops_before']:.0f}/{torch['calib_gflops_after']:.0f}")
PY
