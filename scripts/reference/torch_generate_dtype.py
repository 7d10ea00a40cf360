#!/usr/bin/env python3
"""PyTorch's side of `llmfs bench generate --dtype f32|bf16`: HF `generate` with the KV cache,
batch 1, the benchmark's 16-token prompt, 128 greedy new tokens, random weights of the GPT-2 124M
shape, the model in fp32 or cast to bf16 (`model.to(torch.bfloat16)`, what a PyTorch user runs to
halve the weights' bytes). Prints one JSON line. Run by scripts/bench-generate-bf16.sh.

    python torch_generate_dtype.py --dtype fp32|bf16 --threads N [--reps 3]
"""
import argparse, json, resource, statistics, time

ap = argparse.ArgumentParser()
ap.add_argument("--dtype", choices=["fp32", "bf16"], required=True)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--reps", type=int, default=3)
a = ap.parse_args()

import torch
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

torch.set_num_threads(a.threads)
torch.manual_seed(0)
# pipelines/src/bench/generate.rs PROMPT: the first 16 GPT-2 tokens of the baseline's paragraph.
PROMPT = [40, 367, 2885, 1464, 1807, 3619, 402, 271, 10899, 2138, 257, 7026, 15632, 438, 2016, 257]
N_NEW = 128
cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, activation_function="gelu_new")
model = GPT2LMHeadModel(cfg).eval()
if a.dtype == "bf16":
    model = model.to(torch.bfloat16)
x = torch.tensor([PROMPT])
gen_cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=N_NEW, min_new_tokens=N_NEW, use_cache=True,
                           eos_token_id=None, pad_token_id=50256)


def run(n):
    with torch.no_grad():
        start = time.perf_counter()
        out = model.generate(x, generation_config=GenerationConfig(**{**gen_cfg.to_dict(), "max_new_tokens": n, "min_new_tokens": n}))
        return time.perf_counter() - start, out[0, len(PROMPT):].tolist()


run(8)  # warm-up
runs = [run(N_NEW) for _ in range(a.reps)]
median = statistics.median(r[0] for r in runs)
print(json.dumps({
    "dtype": a.dtype, "threads": a.threads, "new_tokens": N_NEW, "median_s": round(median, 3),
    "tokens_per_s": round(N_NEW / median, 2), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "first_new_tokens": runs[0][1][:8], "torch": torch.__version__,
}))
