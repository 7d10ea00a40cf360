#!/usr/bin/env python3
"""Loads a directory written by `llmfs export` with transformers, as a user would, and prints what
the Rust test compares: the token ids of TEXT from the exported tokenizer, and the largest
difference between transformers' logits for those ids and llmfs's (a safetensors file with tensor
`logits` [1, T, V], from `llmfs logits`). Optional: nothing at build or run time needs Python.

    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/export_check.py DIR TEXT LLMFS_LOGITS.safetensors

Prints one JSON line: {"ids": [...], "max_abs_diff": x, "architecture": "...", "tokenizer": "..."}.
"""

import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    directory, text, logits_file = sys.argv[1:4]
    tokenizer = AutoTokenizer.from_pretrained(directory)
    # The class config.json names (GPT2LMHeadModel, LlamaForCausalLM, Qwen3ForCausalLM ...), in f32.
    model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32).eval()
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    ours = load_file(logits_file)["logits"]
    diff = (logits - ours).abs().max().item() if ours.shape == logits.shape else float("inf")
    print(json.dumps({"ids": ids, "max_abs_diff": diff, "architecture": model.config.architectures[0],
                      "tokenizer": type(tokenizer).__name__, "decoded": tokenizer.decode(ids)}))


if __name__ == "__main__":
    main()
