#!/usr/bin/env python3
"""Reference values for `gpt::quant` (QLoRA's NF4): bitsandbytes' `quantize_4bit(W, blocksize=64,
quant_type="nf4")` with and without `compress_statistics` (double quantization), and
`dequantize_4bit`, on CPU, for a few seeded weight matrices. Optional: nothing at build or run time
needs Python. The fixture `tests/fixtures/nf4_reference.safetensors` is this script's output:

    ~/.cache/llmfs-torch-venv/bin/pip install bitsandbytes
    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/nf4_reference.py tests/fixtures/nf4_reference.safetensors

Every weight holds bf16-representable values (normal, std 0.02, a few outliers, like a checkpoint's),
so a bf16 model and its f32 widening quantize alike. For each matrix NAME `[rows, cols]` (Hugging
Face's Linear layout `[out, in]`, quantized in that flattened order):

- `NAME.weight`: the values (f32, or bf16 for the large one: the fixture stays small).
- `NAME.packed` (u8 `[rows·cols/2]` rounded up), `NAME.absmax` (f32): `quantize_4bit`.
- `NAME.dequantized` (f32, the two small matrices only): `dequantize_4bit`.
- `NAME.double.absmax_q` (u8), `NAME.double.absmax2` (f32), `NAME.double.offset` (f32 `[1]`):
  `quantize_4bit(compress_statistics=True)` (its packed bytes equal `NAME.packed`: asserted here).
- `NAME.double.absmax_dequantized` (f32): the absmax `dequantize_4bit` rebuilds from them.
- `nf4_code` (f32 `[16]`), `dynamic_map` (f32 `[256]`): the two code books.

The metadata records the versions and torch's CPU capability: `create_dynamic_map` runs torch's
vectorised `linspace`, whose last bits depend on the vector width.
"""

import platform
import sys
from importlib.metadata import version

import torch
from bitsandbytes import functional as F
from safetensors.torch import save_file

# (name, [rows, cols], stored as): a whole number of blocks with a zero block; a last partial
# block and an odd count (the last byte's low nibble is padding); more than 256 blocks (two
# blocks of double quantization, the second partial).
MATRICES = [("aligned", [48, 64], torch.float32), ("ragged", [23, 37], torch.float32), ("nested", [64, 272], torch.bfloat16)]


def weight(shape: list[int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=generator) * 0.02
    outliers = torch.rand(shape, generator=generator) < 0.01
    w = torch.where(outliers, w * 10, w)
    return w.to(torch.bfloat16).float()


def main() -> None:
    out_path = sys.argv[1]
    tensors = {}
    for seed, (name, shape, stored) in enumerate(MATRICES):
        w = weight(shape, seed)
        if name == "aligned":
            w[0] = 0.0  # a block of zeros (absmax 0)
        packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4")
        packed_2, state_2 = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
        assert torch.equal(packed, packed_2), "double quantization changes only the absmax"
        # What dequantize_4bit uses as the absmax of a doubly quantized weight.
        absmax_dequantized = F.dequantize_blockwise(state_2.absmax, state_2.state2) + state_2.offset
        tensors[f"{name}.weight"] = w.to(stored)
        tensors[f"{name}.packed"] = packed.reshape(-1)
        tensors[f"{name}.absmax"] = state.absmax
        tensors[f"{name}.double.absmax_q"] = state_2.absmax
        tensors[f"{name}.double.absmax2"] = state_2.state2.absmax
        tensors[f"{name}.double.offset"] = state_2.offset.reshape(1)
        tensors[f"{name}.double.absmax_dequantized"] = absmax_dequantized
        if stored == torch.float32:
            tensors[f"{name}.dequantized"] = F.dequantize_4bit(packed, state)
    tensors["nf4_code"] = F.get_4bit_type("nf4", device="cpu")
    tensors["dynamic_map"] = F.create_dynamic_map()
    metadata = {
        "bitsandbytes": version("bitsandbytes"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, out_path, metadata=metadata)


if __name__ == "__main__":
    main()
