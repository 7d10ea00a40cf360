#!/usr/bin/env bash
# Mixed-precision training speed, llmfs vs what a PyTorch user on this CPU runs: the GPT-2 124M train
# step (B4×T256, AdamW, dropout 0.1) with `llmfs bench train-step --precision f32|bf16-mixed` against
# ../shared/bench/torch_baseline/bench_torch_bf16_cpu.py --mode fp32|bf16 (torch.autocast on oneDNN:
# AMX or AVX512-BF16 where the CPU has them), and the classifier step (B8×T120, last block + head)
# with `llmfs bench finetune-cls --precision …` against the baseline's `cls` step under the same
# autocast; back to back per thread count. Prints tokens/s (examples/s), the ratios and peak RSS, and
# which product path llmfs took (`matmul`: amx-bf16, avx512-bf16, or f32 where the CPU has no bf16
# arithmetic). On a CPU with AMX, llmfs's bf16 steps run a second time with `LLMFS_AMX=0` (row
# `bf16-avx512`, against the same PyTorch bf16 figures): what the AMX kernel adds.
#
#   bash scripts/bench-train-bf16.sh [--baseline DIR] [--threads "1 2"] [--out DIR]
out="target/bench-train-bf16"
source "$(dirname "$0")/bench-common.sh" "$@"
[ -f "$baseline/bench_torch_bf16_cpu.py" ] || { echo "no bench_torch_bf16_cpu.py in $baseline" >&2; exit 1; }
cargo build --release --bin llmfs
llmfs=target/release/llmfs
grep -m1 "model name" /proc/cpuinfo >&2 || true
echo "bf16 flags: $(grep -o 'avx512_bf16\|amx_bf16\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')" >&2
amx=$(grep -q amx_bf16 /proc/cpuinfo && echo 1 || echo 0)
rm -f "$out"/llmfs_*_bf16-avx512_*thread.json # an earlier run's, maybe another machine's

for t in $threads; do
    for mode in fp32 bf16; do
        precision=$([ "$mode" = fp32 ] && echo f32 || echo bf16-mixed)
        echo "== $t thread(s), $precision: llmfs train step, classifier step" >&2
        "$llmfs" bench train-step --threads "$t" --precision "$precision" --out "$out/llmfs_train_${mode}_${t}thread.json" >/dev/null
        "$llmfs" bench finetune-cls --threads "$t" --precision "$precision" --out "$out/llmfs_cls_${mode}_${t}thread.json" >/dev/null
        echo "== $t thread(s), $mode: PyTorch train step, classifier step" >&2
        "$venv/bin/python" "$baseline/bench_torch_bf16_cpu.py" --threads "$t" --mode "$mode" > "$out/torch_train_${mode}_${t}thread.json"
        # The baseline's `cls` step (bench_torch_cpu.py case_cls) under the same autocast.
        "$venv/bin/python" - "$t" "$mode" > "$out/torch_cls_${mode}_${t}thread.json" <<'PY'
import json, resource, statistics, sys, time, torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2Model
threads, mode = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(threads)
torch.manual_seed(0)
body = GPT2Model(GPT2Config(n_embd=768, n_layer=12, n_head=12, activation_function="gelu_new",
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
head = torch.nn.Linear(768, 2)
for p in body.parameters():
    p.requires_grad = False
for p in list(body.h[-1].parameters()) + list(body.ln_f.parameters()):
    p.requires_grad = True
body.train(); head.train()
opt = torch.optim.AdamW([p for p in list(body.parameters()) + list(head.parameters()) if p.requires_grad], lr=5e-5, weight_decay=0.1)
g = torch.Generator().manual_seed(0)
x, y = torch.randint(0, 50257, (8, 120), generator=g), torch.randint(0, 2, (8,), generator=g)
ts = []
for i in range(7):
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
        logits = head(body(input_ids=x).last_hidden_state[:, -1, :])
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    opt.step()
    if i >= 2:
        ts.append(time.perf_counter() - start)
print(json.dumps({"mode": mode, "threads": threads, "step_s": statistics.median(ts),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
PY
    done
    if [ "$amx" = 1 ]; then
        echo "== $t thread(s), bf16-mixed on AVX512-BF16 (LLMFS_AMX=0): llmfs train step, classifier step" >&2
        LLMFS_AMX=0 "$llmfs" bench train-step --threads "$t" --precision bf16-mixed --out "$out/llmfs_train_bf16-avx512_${t}thread.json" >/dev/null
        LLMFS_AMX=0 "$llmfs" bench finetune-cls --threads "$t" --precision bf16-mixed --out "$out/llmfs_cls_bf16-avx512_${t}thread.json" >/dev/null
    fi
done

python3 - "$out" $threads <<'PY'
import json, os, sys
out, threads = sys.argv[1], sys.argv[2:]
load = lambda name: json.load(open(f"{out}/{name}.json"))
print(f"{'threads':>7} {'mode':>11} {'matmul':>12} {'train tok/s':>12} {'torch':>8} {'ratio':>6} {'RSS MiB':>8} {'torch':>6} "
      f"{'cls s/step':>11} {'torch':>6} {'ratio':>6}")
for t in threads:
    modes = ["fp32", "bf16"] + (["bf16-avx512"] if os.path.exists(f"{out}/llmfs_train_bf16-avx512_{t}thread.json") else [])
    for mode in modes:
        theirs = "fp32" if mode == "fp32" else "bf16"
        ours, torch = load(f"llmfs_train_{mode}_{t}thread"), load(f"torch_train_{theirs}_{t}thread")
        cls, torch_cls = load(f"llmfs_cls_{mode}_{t}thread"), load(f"torch_cls_{theirs}_{t}thread")
        o, p = ours["tokens_per_s"], torch["tokens_per_s"]
        # The classifier step as the baseline runs it: autodiff over the model, last block trainable.
        c, q = cls["plain_step"]["median_s"], torch_cls["step_s"]
        print(f"{t:>7} {mode:>11} {ours['matmul']:>12} {o:>12.1f} {p:>8.1f} {o / p:>5.2f}x {ours.get('peak_rss_mib') or 0:>8.0f} "
              f"{torch['peak_rss_mib']:>6.0f} {c:>11.3f} {q:>6.3f} {q / c:>5.2f}x")
PY
