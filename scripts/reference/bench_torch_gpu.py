"""PyTorch + transformers on a CUDA GPU: the baseline for llmfs's benches run with `--device cuda`.

The same workloads as benches/train_step.rs, benches/finetune_cls.rs and benches/generate.rs, on
the GPT-2 124M shape with random weights (fp32 parameters):

  train  forward + cross-entropy + backward + AdamW(lr 5e-5, wd 0.1) on every parameter, dropout 0.1 (--dropout)
  cls    last block + ln_f + a 2-class head trainable, B8 x T120, last-token logits
  infer  greedy decoding with the KV cache, 16-token prompt, 128 new tokens, batch 1 and batch N

Each case runs with TF32 matmuls off (PyTorch's default for fp32) and on (what Burn's CUDA matmul
uses for fp32 on tensor cores), so the comparison can be made at equal arithmetic.

    python3 scripts/reference/bench_torch_gpu.py --batch 16 --seq-len 1024 --out torch_gpu.json
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, GPT2Model

PROMPT = [40, 367, 2885, 1464, 1807, 3619, 402, 271, 10899, 2138, 257, 7026, 15632, 438, 2016, 257]
NEW_TOKENS = 128
DEVICE = "cuda"  # --device cpu: a smoke run of this script on a machine without a GPU


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def config(dropout: float) -> GPT2Config:
    return GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                      activation_function="gelu_new", layer_norm_epsilon=1e-5,
                      resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)


def timed_steps(step, warm: int, steps: int):
    times, losses = [], []
    for i in range(warm + steps):
        sync()
        t = time.perf_counter()
        loss = step()
        losses.append(loss.item())  # synchronises
        if i >= warm:
            times.append(time.perf_counter() - t)
    return statistics.median(times), times, losses


def case_train(batch: int, seq_len: int, steps: int, dropout: float, autocast: bool = False) -> dict:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config(dropout)).to(DEVICE).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
    data = torch.randint(0, 50257, (batch, seq_len + 1), device=DEVICE)
    x, y = data[:, :-1], data[:, 1:]

    def step():
        opt.zero_grad(set_to_none=True)
        # bf16 autocast: what `--precision bf16-mixed` is compared with (no loss scaler for bf16).
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=x).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        opt.step()
        return loss

    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    median, times, losses = timed_steps(step, 3, steps)
    return {"batch": batch, "seq_len": seq_len, "dropout": dropout, "step_median_s": median, "all_s": times,
            "tokens_per_s": batch * seq_len / median, "losses": losses[:3],
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if DEVICE == "cuda" else None,
            "attn_implementation": model.config._attn_implementation}


def case_cls(steps: int) -> dict:
    batch, seq_len = 8, 120
    torch.manual_seed(0)
    body = GPT2Model(config(0.0)).to(DEVICE)
    head = torch.nn.Linear(768, 2).to(DEVICE)
    for p in body.parameters():
        p.requires_grad = False
    for p in list(body.h[-1].parameters()) + list(body.ln_f.parameters()):
        p.requires_grad = True
    params = [p for p in list(body.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.1)
    x = torch.randint(0, 50257, (batch, seq_len), device=DEVICE)
    y = torch.randint(0, 2, (batch,), device=DEVICE)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(body(input_ids=x).last_hidden_state[:, -1, :]), y)
        loss.backward()
        opt.step()
        return loss

    median, times, losses = timed_steps(step, 3, steps)
    return {"batch": batch, "seq_len": seq_len, "step_median_s": median, "examples_per_s": batch / median}


@torch.no_grad()
def greedy(model, prompts: torch.Tensor, n: int) -> list:
    cache = DynamicCache(config=model.config)
    out = model(input_ids=prompts, past_key_values=cache, use_cache=True)
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    tokens = [nxt]
    for _ in range(n - 1):
        out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(nxt)
    return torch.cat(tokens, dim=1).tolist()


def case_infer(batch: int, reps: int) -> dict:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config(0.1)).to(DEVICE).eval()
    rows = []
    for row in range(batch):
        prompt = list(PROMPT)
        prompt[-1] = 257 + 13 * row
        rows.append(prompt)
    result = {"new_tokens": NEW_TOKENS, "prompt_len": len(PROMPT)}
    for name, prompts in (("batch_1", torch.tensor([PROMPT], device=DEVICE)),
                          (f"batch_{batch}", torch.tensor(rows, device=DEVICE))):
        greedy(model, prompts, 8)  # warm-up
        times = []
        for _ in range(reps):
            sync()
            t = time.perf_counter()
            greedy(model, prompts, NEW_TOKENS)
            times.append(time.perf_counter() - t)
        median = statistics.median(times)
        result[name] = {"median_s": median, "tokens_per_s": prompts.shape[0] * NEW_TOKENS / median}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    global DEVICE, NEW_TOKENS
    DEVICE, NEW_TOKENS = args.device, args.new_tokens
    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__}
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        key = "tf32" if tf32 else "fp32"
        result[key] = {
            "train": case_train(args.batch, args.seq_len, args.steps, args.dropout),
            "cls": case_cls(args.steps),
            "infer": case_infer(args.gen_batch, args.reps),
        }
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    # The training step under bf16 autocast (TF32 left on for what autocast keeps in f32).
    result["bf16"] = {"train": case_train(args.batch, args.seq_len, args.steps, args.dropout, autocast=True)}
    text = json.dumps(result)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
