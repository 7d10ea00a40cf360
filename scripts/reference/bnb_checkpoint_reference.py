#!/usr/bin/env python3
"""Reference for loading bitsandbytes 4-bit checkpoints (`gpt::quant::bnb_checkpoint`): the
`llama-tiny` fixture loaded by transformers with `BitsAndBytesConfig(load_in_4bit=True,
bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=…)` and saved with `save_pretrained`, as the
`…-bnb-4bit` repos on the hub are. Optional: nothing at build or run time needs Python.

    ~/.cache/llmfs-torch-venv/bin/pip install bitsandbytes accelerate
    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/bnb_checkpoint_reference.py \
        ../shared/fixtures/llama-tiny tests/fixtures/bnb4

For VARIANT in `single`, `double` (double quantization off / on) it writes `OUT/VARIANT/`:

- `config.json`: the saved config (with its `quantization_config`).
- `quantized.safetensors`: the saved tensors that are not the fixture's own (the packed weights
  and their quantization state). The other saved tensors (embeddings, norms, head) are the
  fixture's bytes unchanged (asserted here), so a test rebuilds the whole checkpoint from the two
  files and the fixture stays small.
- `expected.safetensors`: `ids` (i64 `[2, 7]`), `logits` (f32 `[2, 7, 4096]`: the first 4096 of
  the vocabulary, to keep the file small) and `argmax` (i64 `[2, 7]`, over the whole vocabulary) of the
  model (in f32) whose 4-bit weights are replaced by their dequantization, and `q_proj_dequantized`
  (f32 `[32, 32]`): layer 0's `q_proj` dequantized.

The dequantization is NF4's definition, `quant_map[nibble] · absmax[block]` (the absmax read back
with `dequantize_blockwise(absmax, state2) + offset` under double quantization), computed here
rather than by `dequantize_4bit`: on the CPU bitsandbytes 0.50.2 reshapes the absmax per row of
blocks, which goes wrong for rows narrower than a block (the tiny model's 32 columns; measured: its
result is 0.024 off this formula on a [32, 32] matrix, equal to it on [32, 128]), and its 4-bit
matmul fails on such rows outright.
"""
import json, os, shutil, sys, tempfile

import torch
import bitsandbytes as bnb
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

src, out = sys.argv[1], sys.argv[2]
fixture = safe_open(os.path.join(src, "model.safetensors"), "pt")
ids = torch.tensor([[128000, 791, 6875, 374, 1825, 11, 323], [128000, 9906, 1917, 0, 578, 4062, 13]])

for variant, double in [("single", False), ("double", True)]:
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double,
                                bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=config, device_map="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        saved = safe_open(os.path.join(tmp, "model.safetensors"), "pt")
        quantized = {}
        for name in saved.keys():
            tensor = saved.get_tensor(name)
            if name in fixture.keys() and fixture.get_tensor(name).dtype == tensor.dtype:
                assert torch.equal(fixture.get_tensor(name), tensor), name
            else:
                quantized[name] = tensor
        dest = os.path.join(out, variant)
        os.makedirs(dest, exist_ok=True)
        shutil.copy(os.path.join(tmp, "config.json"), os.path.join(dest, "config.json"))
        save_file(quantized, os.path.join(dest, "quantized.safetensors"), metadata={"format": "pt"})

    # The same model with each 4-bit weight dequantized in f32.
    dequantized = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, bnb.nn.Linear4bit):
            state = module.weight.quant_state
            absmax = state.absmax.float()
            if state.nested:
                absmax = bnb.functional.dequantize_blockwise(state.absmax, state.state2).float() + state.offset
            packed = module.weight.data.flatten()
            codes = torch.stack([(packed >> 4).long(), (packed & 15).long()], 1).flatten()[: state.shape.numel()]
            weight = (state.code.float()[codes] * absmax.repeat_interleave(64)[: codes.numel()]).reshape(state.shape)
            dequantized[name] = weight
            linear = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            linear.weight.data = weight.clone()
            if module.bias is not None:
                linear.bias.data = module.bias.data.float()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, linear)
    torch.nn.Module.float(model)  # transformers refuses .float() on a model it loaded quantized
    with torch.no_grad():
        logits = model(ids).logits.float()
    save_file({"ids": ids, "logits": logits[..., :4096].contiguous(), "argmax": logits.argmax(-1), "q_proj_dequantized": dequantized["model.layers.0.self_attn.q_proj"].contiguous()},
              os.path.join(out, variant, "expected.safetensors"), metadata={"format": "pt"})
    print(variant, json.load(open(os.path.join(out, variant, "config.json")))["quantization_config"]["bnb_4bit_use_double_quant"],
          "tensors:", len(quantized), "logits", tuple(logits.shape), "last", logits[0, -1, :3].tolist())
