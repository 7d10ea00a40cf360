#!/usr/bin/env python3
"""Reference logits of a Llama-family sequence classifier, as transformers computes them: the
model directory loaded as `AutoModelForSequenceClassification` (f32, eager attention) with
`num_labels` classes, a seeded `score` head, `pad_token_id` set, and a batch of texts encoded with
the directory's tokenizer and padded on the right. transformers reads each row at its last token
that is not padding. Writes the head and the logits as JSON (the fixture
`tests/fixtures/classifier_reference.json` is this script's output for llama-tiny and qwen3-tiny).

    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/classifier_reference.py tests/fixtures/llama-tiny tests/fixtures/qwen3-tiny > tests/fixtures/classifier_reference.json
"""

import json
import sys

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TEXTS = ["Hello, world!", "Every effort moves you forward, my friend.", "WINNER! Claim your free prize now"]
NUM_LABELS = 3


def reference(model_dir: str) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = [tokenizer(text)["input_ids"] for text in TEXTS]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    length = max(len(row) for row in ids)
    padded = [row + [pad] * (length - len(row)) for row in ids]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=NUM_LABELS, pad_token_id=pad, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        logits = model(torch.tensor(padded)).logits
    return {
        "architecture": type(model).__name__,
        "texts": TEXTS,
        "pad_token_id": pad,
        "input_ids": padded,
        "score_weight": model.score.weight.tolist(),
        "logits": logits.tolist(),
    }


def main() -> None:
    out = {
        "about": "sequence-classifier logits of transformers for right-padded texts (read at each row's last non-pad token)",
        "generated_by": "scripts/reference/classifier_reference.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tolerance_abs": 1e-4,
        "models": {},
    }
    for model_dir in sys.argv[1:]:
        out["models"][model_dir.rstrip("/").split("/")[-1]] = reference(model_dir)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
