#!/usr/bin/env python3
"""Loads an adapter directory written by `llmfs finetune ... --lora-rank R` with PEFT on top of its
base model (GPT-2 or a Llama-family model), as a user would, and prints the largest difference between PEFT's logits for IDS and
llmfs's (a safetensors file with tensor `logits` [1, T, V], from `llmfs logits --model ADAPTER`).
Optional: nothing at build or run time needs Python.

    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/lora_peft_check.py ADAPTER_DIR 1,2,3 LLMFS_LOGITS.safetensors

Prints one JSON line: {"max_abs_diff": x, "merged_max_abs_diff": y, "lora_parameters": n}.
"""

import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main() -> None:
    adapter_dir, ids, logits_file = sys.argv[1:4]
    config = json.load(open(f"{adapter_dir}/adapter_config.json"))
    # f32, as llmfs computes (a bf16 checkpoint is widened).
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"], attn_implementation="eager", dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    input_ids = torch.tensor([[int(i) for i in ids.split(",")]])
    ours = load_file(logits_file)["logits"]
    lora_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    with torch.no_grad():
        logits = model(input_ids).logits
        merged = model.merge_and_unload()(input_ids).logits
    diff = lambda x: (x - ours).abs().max().item() if x.shape == ours.shape else float("inf")
    print(json.dumps({"max_abs_diff": diff(logits), "merged_max_abs_diff": diff(merged), "lora_parameters": lora_params}))


if __name__ == "__main__":
    main()
