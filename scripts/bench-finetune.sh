#!/usr/bin/env bash
# Classification fine-tuning speed, llmfs vs PyTorch + transformers: GPT-2 124M shape (random fp32 weights),
# batch 8 x 120 tokens, last block + final norm + 2-class head trainable, AdamW (the `cls` case of the
# PyTorch baseline), at 1 and 2 threads, measured back to back so that the ratios mean something on a
# machine whose speed drifts. Also estimates a 5-epoch run on the book's split sizes (1045 / 149 / 300).
#
#   bash scripts/bench-finetune.sh [--baseline DIR] [--threads "1 2"] [--out DIR]
#
# DIR defaults to ../shared/bench/torch_baseline (its setup.sh makes a ~5.6 GB PyTorch venv once).
out="target/bench-finetune"
source "$(dirname "$0")/bench-common.sh" "$@"
cargo bench --bench finetune_cls --no-run

for t in $threads; do
    echo "== $t thread(s): PyTorch" >&2
    "$venv/bin/python" "$baseline/bench_torch_cpu.py" --threads "$t" --cases cls --out "$out/torch_${t}thread.json" >/dev/null
    echo "== $t thread(s): llmfs" >&2
    cargo bench --bench finetune_cls -- --threads "$t" --out "$out/llmfs_${t}thread.json" >/dev/null
done

python3 - "$out" $threads <<'PY'
import json, sys
out, threads = sys.argv[1], sys.argv[2:]
# The book's split (747 spam + 747 ham): 1045 train (130 full batches of 8, drop_last), 149 val, 300 test.
TRAIN, VAL, TEST, EPOCHS, STEPS = 1045, 149, 300, 5, 1045 // 8
print(f"{'threads':>7} {'torch s/step':>12} {'llmfs plain':>12} {'ratio':>6} {'llmfs cached':>13} {'ratio':>6} "
      f"{'5 epochs torch':>15} {'5 epochs llmfs':>15} {'ratio':>6}")
for t in threads:
    ours = json.load(open(f"{out}/llmfs_{t}thread.json"))
    torch = json.load(open(f"{out}/torch_{t}thread.json"))["cls"]
    ts = torch["step"]["median_s"]
    plain, cached = ours["plain_step"]["median_s"], ours["cached_step"]["median_s"]
    # Training steps only for PyTorch (its evaluation passes are left out, in its favour); llmfs pays
    # for caching every train, val and test example once, then runs cached steps.
    torch_run = EPOCHS * STEPS * ts
    ours_run = (TRAIN + VAL + TEST) * ours["cache_s_per_example"] + EPOCHS * STEPS * cached
    print(f"{t:>7} {ts:>12.2f} {plain:>12.2f} {ts/plain:>5.2f}x {cached:>13.2f} {ts/cached:>5.2f}x "
          f"{torch_run/60:>13.1f}min {ours_run/60:>13.1f}min {torch_run/ours_run:>5.2f}x")
    print(f"        autodiff-everywhere step {ours['autodiff_everywhere_step']['median_s']:.2f}s, "
          f"cache {ours['cache_s_per_example']:.3f}s/example, plain vs cached loss max rel diff {ours['losses_max_rel_diff']:.1e}")
PY
