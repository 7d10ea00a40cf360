#!/usr/bin/env bash
# Full training-step speed, llmfs vs PyTorch + transformers: GPT-2 124M shape (random fp32 weights,
# dropout 0.1), B4×T256, forward + cross-entropy + backward + AdamW on every parameter (the `train`
# case of the PyTorch baseline; the step of `llmfs pretrain` and `llmfs finetune instruct`), at 1 and
# 2 threads, measured back to back so that the ratios mean something on a machine whose speed drifts.
# Also compares peak memory (resident set).
#
#   bash scripts/bench-train.sh [--baseline DIR] [--threads "1 2"] [--out DIR]
#
# DIR defaults to ../shared/bench/torch_baseline (its setup.sh makes a ~5.6 GB PyTorch venv once).
out="target/bench-train"
source "$(dirname "$0")/bench-common.sh" "$@"
cargo bench --bench train_step --no-run

for t in $threads; do
    echo "== $t thread(s): PyTorch" >&2
    "$venv/bin/python" "$baseline/bench_torch_cpu.py" --threads "$t" --cases train --out "$out/torch_${t}thread.json" >/dev/null
    echo "== $t thread(s): llmfs" >&2
    cargo bench --bench train_step -- --threads "$t" --out "$out/llmfs_${t}thread.json" >/dev/null
done

python3 - "$out" $threads <<'PY'
import json, sys
out, threads = sys.argv[1], sys.argv[2:]
print(f"{'threads':>7} {'torch tok/s':>11} {'llmfs tok/s':>11} {'ratio':>6} {'torch peak MiB':>14} {'llmfs peak MiB':>14}")
for t in threads:
    ours = json.load(open(f"{out}/llmfs_{t}thread.json"))
    torch = json.load(open(f"{out}/torch_{t}thread.json"))["train"]
    print(f"{t:>7} {torch['tokens_per_s']:>11.1f} {ours['tokens_per_s']:>11.1f} {ours['tokens_per_s']/torch['tokens_per_s']:>5.2f}x "
          f"{torch['peak_rss_mib']:>14.0f} {ours['peak_rss_mib'] or 0:>14.0f}")
    print(f"        losses torch {torch['losses'][:3]} llmfs {[round(x, 4) for x in ours['losses'][:3]]}")
PY
