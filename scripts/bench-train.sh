#!/usr/bin/env bash
# Full training-step speed, llmfs vs PyTorch + transformers: GPT-2 124M shape (random fp32 weights,
# dropout 0.1), B4×T256, forward + cross-entropy + backward + AdamW on every parameter (the `train`
# case of the PyTorch baseline; the step of `llmfs pretrain` and `llmfs finetune instruct`), at 1 and
# 2 threads, measured back to back so that the ratios mean something on a machine whose speed drifts.
# Also compares peak memory (resident set).
#
#   bash scripts/bench-train.sh [--baseline DIR] [--threads "1 2"] [--out DIR] [--shape "B T"]
#
# DIR defaults to ../shared/bench/torch_baseline (its setup.sh makes a ~5.6 GB PyTorch venv once).
# `--shape "8 100"` times another batch shape (an instruction fine-tuning batch: 8 padded examples
# of ~100 tokens) with the same PyTorch step, written out here because the baseline's `train` case
# is B4×T256 only.
out="target/bench-train"
shape="4 256"
extra_flags="shape"
source "$(dirname "$0")/bench-common.sh" "$@"
read -r batch seq_len <<<"$shape"
cargo bench --bench train_step --no-run

for t in $threads; do
    echo "== $t thread(s): PyTorch, B${batch}xT${seq_len}" >&2
    if [ "$shape" = "4 256" ]; then
        "$venv/bin/python" "$baseline/bench_torch_cpu.py" --threads "$t" --cases train --out "$out/torch_${t}thread.json" >/dev/null
    else
        # The baseline's case_train with another B, T.
        "$venv/bin/python" - "$t" "$batch" "$seq_len" > "$out/torch_${t}thread.json" <<'PY'
import json, statistics, sys, time, torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel
threads, B, T = (int(a) for a in sys.argv[1:4])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_embd=768, n_layer=12, n_head=12, activation_function="gelu_new",
                                   resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)).train()
opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
data = torch.randint(0, 50257, (B, T + 1), generator=torch.Generator().manual_seed(0))
x, y = data[:, :-1], data[:, 1:]
ts, losses = [], []
for i in range(7):
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten())
    loss.backward()
    opt.step()
    losses.append(round(loss.item(), 4))
    if i >= 2:
        ts.append(time.perf_counter() - start)
import resource
print(json.dumps({"train": {"tokens_per_s": B * T / statistics.median(ts), "losses": losses,
                            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
PY
    fi
    echo "== $t thread(s): llmfs" >&2
    cargo bench --bench train_step -- --threads "$t" --batch "$batch" --seq-len "$seq_len" --out "$out/llmfs_${t}thread.json" >/dev/null
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
