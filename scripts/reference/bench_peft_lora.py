#!/usr/bin/env python3
"""PEFT + transformers baseline for a LoRA fine-tuning step on a Llama-family shape, as llmfs's
`bench train-step --preset P --trains lora:R` runs it: random fp32 weights (eager attention),
adapters of rank R and alpha R on q/k/v/o/gate/up/down_proj, lora_dropout 0, AdamW(lr 5e-5,
weight decay 0.1) on the adapters, next-token cross-entropy on random tokens, B×T. Optional:
nothing at build or run time needs Python.

    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/bench_peft_lora.py --preset smollm2-135m --threads 2 [--rank 8] [--batch 4] [--seq-len 256]

Prints one JSON line: the median step time of --steps timed steps (after 2 warm-up ones), tok/s,
the losses, peak RSS.
"""

import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from bench_hf_llama import PRESETS

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="smollm2-135m", choices=sorted(PRESETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = dict(PRESETS[args.preset])
    model_type = settings.pop("model_type")
    config = AutoConfig.for_model(model_type, **settings)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=args.rank, lora_alpha=args.rank, lora_dropout=0.0, target_modules=TARGETS))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-5, weight_decay=0.1)
    tokens = torch.randint(0, config.vocab_size - 1, (args.batch, args.seq_len + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    times, losses = [], []
    for i in range(args.steps + 2):
        t = time.perf_counter()
        logits = model(input_ids=inputs).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if i >= 2:
            times.append(time.perf_counter() - t)
    step = sorted(times)[len(times) // 2]
    print(json.dumps({
        "preset": args.preset, "threads": torch.get_num_threads(), "torch": torch.__version__, "rank": args.rank,
        "batch": args.batch, "seq_len": args.seq_len, "trainable_params": sum(p.numel() for p in trainable),
        "step": {"median_s": step, "all_s": times}, "tokens_per_s": args.batch * args.seq_len / step,
        "losses": losses, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
