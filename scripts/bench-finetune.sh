#!/usr/bin/env bash
# Classification fine-tuning speed, llmfs vs PyTorch + transformers: GPT-2 124M shape (random fp32 weights),
# batch 8 x 120 tokens, last block + final norm + 2-class head trainable, AdamW (the `cls` case of the
# PyTorch baseline), at 1 and 2 threads, measured back to back so that the ratios mean something on a
# machine whose speed drifts. Also estimates a 5-epoch run of the book's loop (its evaluation passes
# included) on the book's split sizes (1045 / 149 / 300).
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
    # The book's loop also evaluates (no_grad forward passes of B8xT120): time one of those too.
    "$venv/bin/python" - "$t" > "$out/torch_eval_${t}thread.json" <<'PY'
import json, sys, time, torch
from transformers import GPT2Config, GPT2Model
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
body, head = GPT2Model(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval(), torch.nn.Linear(768, 2)
x = torch.randint(0, 50257, (8, 120))
times = []
with torch.no_grad():
    for i in range(5):
        start = time.perf_counter()
        head(body(input_ids=x).last_hidden_state[:, -1, :]).argmax(-1)
        times.append(time.perf_counter() - start)
print(json.dumps({"eval_batch_median_s": sorted(times[1:])[len(times[1:]) // 2]}))
PY
    echo "== $t thread(s): llmfs" >&2
    cargo bench --bench finetune_cls -- --threads "$t" --out "$out/llmfs_${t}thread.json" >/dev/null
done

python3 - "$out" $threads <<'PY'
import json, sys
out, threads = sys.argv[1], sys.argv[2:]
# The book's split (747 spam + 747 ham): 1045 train (130 full batches of 8, drop_last), 149 val, 300 test.
TRAIN, VAL, TEST, EPOCHS, STEPS = 1045, 149, 300, 5, 1045 // 8
# The evaluation of the book's loop (train_classifier_simple, eval_freq 50, eval_iter 5): 5 train + 5
# val batches every 50 steps, train and val accuracy on 5 batches each after every epoch, then full
# train / val / test accuracy (drop_last only on train): batches of 8 that only run forward.
EVAL_BATCHES = (EPOCHS * STEPS // 50) * 10 + EPOCHS * 10 + STEPS + -(-VAL // 8) + -(-TEST // 8)
print(f"{'threads':>7} {'torch s/step':>12} {'llmfs plain':>12} {'ratio':>6} {'llmfs cached':>13} {'ratio':>6} "
      f"{'5 epochs torch':>15} {'5 epochs llmfs':>15} {'ratio':>6}")
for t in threads:
    ours = json.load(open(f"{out}/llmfs_{t}thread.json"))
    torch = json.load(open(f"{out}/torch_{t}thread.json"))["cls"]
    torch_eval = json.load(open(f"{out}/torch_eval_{t}thread.json"))["eval_batch_median_s"]
    ts = torch["step"]["median_s"]
    plain, cached = ours["plain_step"]["median_s"], ours["cached_step"]["median_s"]
    # PyTorch: its training steps and its evaluation forward passes. llmfs: caching every train, val
    # and test example's prefix once, cached training steps, and its evaluation batches counted as
    # whole cached steps (forward, backward and AdamW: more than they cost).
    torch_run = EPOCHS * STEPS * ts + EVAL_BATCHES * torch_eval
    ours_run = (TRAIN + VAL + TEST) * ours["cache_s_per_example"] + (EPOCHS * STEPS + EVAL_BATCHES) * cached
    print(f"{t:>7} {ts:>12.2f} {plain:>12.2f} {ts/plain:>5.2f}x {cached:>13.2f} {ts/cached:>5.2f}x "
          f"{torch_run/60:>13.1f}min {ours_run/60:>13.1f}min {torch_run/ours_run:>5.2f}x")
    print(f"        autodiff-everywhere step {ours['autodiff_everywhere_step']['median_s']:.2f}s, "
          f"cache {ours['cache_s_per_example']:.3f}s/example, PyTorch eval batch {torch_eval:.2f}s x {EVAL_BATCHES}, "
          f"plain vs cached loss max rel diff {ours['losses_max_rel_diff']:.1e}")
PY
