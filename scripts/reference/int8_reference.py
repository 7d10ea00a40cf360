#!/usr/bin/env python3
"""Reference values for `gpt::quant::int8` (`--quantize int8`): bitsandbytes'
`int8_vectorwise_quant(W)` (LLM.int8's weight format: one absmax per output row, `threshold=0`, so
no outlier columns) and `int8_vectorwise_dequant`, on CPU, for a few weight matrices. Optional:
nothing at build or run time needs Python. The fixture `tests/fixtures/int8_reference.safetensors`
is this script's output:

    ~/.cache/llmfs-torch-venv/bin/pip install bitsandbytes
    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/int8_reference.py tests/fixtures/int8_reference.safetensors

bitsandbytes 0.50.2's CPU path is plain torch (backends/default/ops.py): `row_stats =
max(|W|, dim=1)`, `CB = round(W · (127.0 / row_stats)).to(int8)`, where torch computes `127.0 / t` as
`reciprocal(t) · 127` (two f32 roundings), rounds halves to even, and converts the NaN of a zero row
(0·inf) to 0; dequantized `CB · SCB · 7.874015718698502e-3` (two f32 products).
For each matrix NAME `[rows, cols]` (Hugging Face's Linear layout `[out, in]`):

- `NAME.weight`: the values (bf16-representable, like a checkpoint's, with a few outliers; f32,
  or bf16 for `wide`).
- `NAME.CB` (i8 `[rows, cols]`), `NAME.SCB` (f32 `[rows]`): `int8_vectorwise_quant(W)`.
- `NAME.dequantized` (f32): `int8_vectorwise_dequant(CB, SCB)`.

`Linear8bitLt` quantizes the weight after rounding it to fp16; for fp16-representable values
(asserted here for `aligned`) that gives the same bytes, as the product is computed in f32 anyway.
"""

import platform
import sys
from importlib.metadata import version

import torch
from bitsandbytes import functional as F
from safetensors.torch import save_file


def weight(shape: list[int], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=generator) * 0.02
    outliers = torch.rand(shape, generator=generator) < 0.01
    w = torch.where(outliers, w * 10, w)
    return w.to(torch.bfloat16).float()


def matrices() -> list[tuple[str, torch.Tensor]]:
    aligned = weight([24, 64], 0)
    aligned[0] = 0.0  # a zero row: absmax 0, values 0
    ragged = weight([23, 37], 1)
    # Values exactly halfway between two integers once scaled (absmax 127: the scale is 1):
    # round half to even; a row of subnormals, whose 127/absmax overflows to inf.
    ties = torch.tensor(
        [
            [127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -3.5],
            [1e-39, -1e-39, 0.0, 5e-40, 0.0, 0.0, 0.0, 0.0],
            [-1.0, 0.25, -0.5 / 127, 1.5 / 127, 0.0, -0.0, 1.0, 0.75],
        ]
    )
    wide = weight([32, 256], 2)
    return [("aligned", aligned), ("ragged", ragged), ("ties", ties), ("wide", wide)]


def main() -> None:
    out_path = sys.argv[1]
    tensors = {}
    for name, w in matrices():
        cb, scb, outlier_cols = F.int8_vectorwise_quant(w.clone())
        assert outlier_cols is None, "threshold 0: no outlier columns"
        # bf16 for the large one (its values are bf16-representable): the fixture stays small.
        tensors[f"{name}.weight"] = w.to(torch.bfloat16) if name == "wide" else w
        tensors[f"{name}.CB"] = cb
        tensors[f"{name}.SCB"] = scb
        tensors[f"{name}.dequantized"] = F.int8_vectorwise_dequant(cb, scb)
        if name == "aligned":
            assert torch.equal(w.half().float(), w)
            cb_half, scb_half, _ = F.int8_vectorwise_quant(w.half())
            assert torch.equal(cb_half, cb) and torch.equal(scb_half, scb), "fp16 weights quantize alike"
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
