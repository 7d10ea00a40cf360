#!/usr/bin/env python3
"""Makes a LoRA adapter with PEFT, as a PEFT user would (`get_peft_model` without a task type,
lora_alpha ≠ r, lora_dropout), with random `B` factors so that it changes the model, saves it with
`save_pretrained`, and writes PEFT's logits for IDS: the other direction of lora_peft_check.py
(llmfs must load what PEFT writes). Optional: nothing at build or run time needs Python.

    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/peft_make_adapter.py BASE_DIR OUT_DIR 1,2,3 LOGITS.safetensors
"""

import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM


def main() -> None:
    base_dir, out_dir, ids, logits_file = sys.argv[1:5]
    base = AutoModelForCausalLM.from_pretrained(os.path.abspath(base_dir), dtype=torch.float32, attn_implementation="eager")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.05))
    torch.manual_seed(3)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    model.save_pretrained(out_dir)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([[int(i) for i in ids.split(",")]])).logits
    save_file({"logits": logits.contiguous()}, logits_file)


if __name__ == "__main__":
    main()
