#!/usr/bin/env bash
# Decoding with bf16 weights: `llmfs bench generate --dtype f32|bf16` against PyTorch + transformers
# `generate` with the model in fp32 and cast to bf16 (scripts/reference/torch_generate_dtype.py),
# GPT-2 124M shape, batch 1, 16-token prompt, 128 greedy new tokens, back to back per thread count.
#
#   bash scripts/bench-generate-bf16.sh [--baseline DIR] [--threads "1 2"] [--out DIR]
out="target/bench-generate-bf16"
source "$(dirname "$0")/bench-common.sh" "$@"
cargo build --release --bin llmfs
llmfs=target/release/llmfs

for t in $threads; do
    for dtype in f32 bf16; do
        echo "== $t thread(s), $dtype: llmfs" >&2
        "$llmfs" bench generate --threads "$t" --dtype "$dtype" --out "$out/llmfs_${dtype}_${t}thread.json" >/dev/null
        echo "== $t thread(s), $dtype: PyTorch" >&2
        torch_dtype=$([ "$dtype" = f32 ] && echo fp32 || echo bf16)
        "$venv/bin/python" scripts/reference/torch_generate_dtype.py --dtype "$torch_dtype" --threads "$t" > "$out/torch_${dtype}_${t}thread.json"
    done
done

python3 - "$out" $threads <<'PY'
import json, sys
out, threads = sys.argv[1], sys.argv[2:]
print(f"{'threads':>7} {'dtype':>5} {'llmfs tok/s':>12} {'torch tok/s':>12} {'ratio':>7} {'llmfs RSS MiB':>14} {'torch RSS MiB':>14}")
for t in threads:
    for dtype in ["f32", "bf16"]:
        ours = json.load(open(f"{out}/llmfs_{dtype}_{t}thread.json"))
        torch = json.load(open(f"{out}/torch_{dtype}_{t}thread.json"))
        o, p = ours["kv_cache"]["tokens_per_s"], torch["tokens_per_s"]
        print(f"{t:>7} {dtype:>5} {o:>12.1f} {p:>12.1f} {o / p:>6.2f}x {ours.get('peak_rss_mib') or 0:>14.0f} {torch['peak_rss_mib']:>14.0f}")
PY
