#!/usr/bin/env python3
"""Perplexity reference values with PyTorch + transformers: Hugging Face's strided sliding window.

The loop of https://huggingface.co/docs/transformers/perplexity ("Example: Calculating perplexity
with GPT-2"): windows of `seq_len` tokens moved by `stride`, each window's labels the tokens no
earlier window had as labels (the rest -100), the loss transformers' own `model(input_ids,
labels=...)`. One change: the doc weights a window's mean loss by `num_valid_tokens - 1`, which is
the number of scored labels only when the window's first label is its first token (the first
window, or stride = seq_len); an overlapping window scores all its labels. Here each window's loss
is weighted by the labels it really averaged (`labels[:, 1:] != -100`), so the total is the exact
sum of the scored tokens' negative log-likelihoods.

Writes `tests/fixtures/perplexity_reference.json` (the defaults below), which the Rust tests read:
for the tiny GPT-2 and Llama fixtures, on `tests/fixtures/data/perplexity_text.txt` (the documents
of `perplexity_docs.jsonl` joined with "\\n\\n", as the doc's wikitext example joins its rows),
several (seq_len, stride) pairs. Optional: nothing at build or run time needs Python.

    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/perplexity_reference.py [--out FILE] [--bpe-dir DIR]

Needs torch, transformers and tiktoken (GPT-2's fixture has no tokenizer files; tiktoken's `gpt2`
encoding is GPT-2's BPE; `--bpe-dir`: see hellaswag_reference.py).
"""

import argparse
import json
import math
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hellaswag_reference import default_bpe_dir, seed_tiktoken_cache  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

# (model directory under tests/fixtures, [(seq_len, stride), ...]); seq_len None = the model's context.
CASES = [
    ("gpt2-tiny", [(None, None), (None, 48), (40, 40), (40, 16)]),
    ("llama-tiny", [(None, None), (None, 100), (64, 64), (64, 24)]),
]


def strided_nll(model, ids, max_length, stride, torch):
    """The doc's loop; returns (summed nll, scored tokens, windows)."""
    seq_len = ids.size(1)
    nll_sum = 0.0
    n_tokens = 0
    windows = 0
    prev_end_loc = 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        scored = int((target_ids[:, 1:] != -100).sum().item())  # the labels the loss averaged
        nll_sum += float(loss.double()) * scored
        n_tokens += scored
        windows += 1
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return nll_sum, n_tokens, windows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(FIXTURES, "perplexity_reference.json"))
    parser.add_argument("--bpe-dir", default=None, help="directory with the GPT-2 vocab.bpe and encoder.json")
    args = parser.parse_args()

    bpe_dir = args.bpe_dir or default_bpe_dir()
    if bpe_dir and "TIKTOKEN_CACHE_DIR" not in os.environ:
        seed_tiktoken_cache(bpe_dir)
    import tiktoken
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    with open(os.path.join(FIXTURES, "data", "perplexity_docs.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    with open(os.path.join(FIXTURES, "data", "perplexity_text.txt"), encoding="utf-8") as f:
        text = f.read()
    assert text == "\n\n".join(d["text"] for d in docs), "perplexity_text.txt must be the documents joined with \\n\\n"
    num_bytes = len(text.encode("utf-8"))

    results = []
    for name, pairs in CASES:
        path = os.path.join(FIXTURES, name)
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            ids = AutoTokenizer.from_pretrained(path)(text)["input_ids"]  # Llama 3: <|begin_of_text|> first
        else:
            ids = tiktoken.get_encoding("gpt2").encode(text, allowed_special="all")  # = GPT2TokenizerFast(text)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
        context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
        input_ids = torch.tensor([ids], dtype=torch.long)
        for seq_len, stride in pairs:
            seq_len = seq_len or context
            stride = stride or seq_len
            nll, tokens, windows = strided_nll(model, input_ids, seq_len, stride, torch)
            results.append({
                "model": name,
                "seq_len": seq_len,
                "stride": stride,
                "text_tokens": len(ids),
                "windows": windows,
                "tokens": tokens,
                "nll": nll,
                "perplexity": math.exp(nll / tokens),
                "bits_per_byte": nll / math.log(2) / num_bytes,
            })
            print(json.dumps(results[-1]), file=sys.stderr)

    out = {
        "about": "scripts/reference/perplexity_reference.py: HF's strided perplexity, f32 on the CPU",
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
        "text": "data/perplexity_text.txt",
        "bytes": num_bytes,
        "tolerance_rel": 1e-4,
        "cases": results,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
