#!/usr/bin/env bash
# HellaSwag scoring speed, `llmfs eval hellaswag` vs build-nanogpt's `evaluate` loop with PyTorch +
# transformers (one example = 4 whole rows per forward pass, full logits, cross-entropy, argmin), on
# the GPT-2 124M shape with random fp32 weights, the same examples, at 1 and 2 threads, back to back.
# Examples: the 40 shipped validation rows (`--data FILE` for others, `--limit N`).
#
#   bash scripts/bench-hellaswag.sh [--baseline DIR] [--threads "1 2"] [--out DIR] [--data FILE] [--limit N]
#
# The Python side runs in the PyTorch baseline's venv (made once by its setup.sh); offline, tiktoken
# gets the GPT-2 vocabulary (`r50k_base.tiktoken`, the `gpt2` encoding's other name) from
# tiktoken-rs's crate sources.
out="target/bench-hellaswag"
data="tests/fixtures/data/hellaswag_val_40.jsonl"
limit=100000
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --data) data="$2"; shift 2 ;;
        --limit) limit="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
source "$(dirname "$0")/bench-common.sh" "${args[@]}"
cargo build --release --locked -p llmfs-apps
llmfs="${CARGO_TARGET_DIR:-target}/release/llmfs"
bpe_file=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tiktoken-rs-*/assets/r50k_base.tiktoken | tail -1)

for t in $threads; do
    echo "== $t thread(s): PyTorch" >&2
    "$venv/bin/python" - "$data" "$limit" "$t" "$bpe_file" > "$out/torch_${t}thread.json" <<'PY'
import hashlib, json, os, sys, tempfile, time
data, limit, threads, bpe_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cache = tempfile.mkdtemp(prefix="tiktoken-cache-")
url = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
with open(bpe_file, "rb") as src, open(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()), "wb") as dst:
    dst.write(src.read())
os.environ["TIKTOKEN_CACHE_DIR"] = cache
import tiktoken, torch
from torch.nn import functional as F
from transformers import GPT2Config, GPT2LMHeadModel

torch.set_num_threads(threads)
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config()).eval()
enc = tiktoken.get_encoding("r50k_base")
examples = [json.loads(line) for line in open(data) if line.strip()][:limit]

def render_example(example):  # build-nanogpt hellaswag.py
    ctx_tokens = enc.encode(example["ctx"])
    tok_rows, mask_rows = [], []
    for end in example["endings"]:
        end_tokens = enc.encode(" " + end)
        tok_rows.append(ctx_tokens + end_tokens)
        mask_rows.append([0] * len(ctx_tokens) + [1] * len(end_tokens))
    max_len = max(len(row) for row in tok_rows)
    tokens = torch.zeros((4, max_len), dtype=torch.long)
    mask = torch.zeros((4, max_len), dtype=torch.long)
    for i, (tok_row, mask_row) in enumerate(zip(tok_rows, mask_rows)):
        tokens[i, :len(tok_row)] = torch.tensor(tok_row)
        mask[i, :len(mask_row)] = torch.tensor(mask_row)
    return tokens, mask, example["label"]

def evaluate(example):  # build-nanogpt hellaswag.py's evaluate, for one example
    tokens, mask, label = render_example(example)
    logits = model(tokens).logits
    shift_logits = (logits[..., :-1, :]).contiguous()
    shift_tokens = (tokens[..., 1:]).contiguous()
    shift_losses = F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)), shift_tokens.view(-1), reduction="none")
    shift_losses = shift_losses.view(tokens.size(0), -1)
    shift_mask = (mask[..., 1:]).contiguous()
    sum_loss = (shift_losses * shift_mask).sum(dim=1)
    avg_loss = sum_loss / shift_mask.sum(dim=1)
    return int(sum_loss.argmin().item()) == label, int(avg_loss.argmin().item()) == label

with torch.no_grad():
    for example in examples[:2]:
        evaluate(example)  # warm-up
    start = time.perf_counter()
    results = [evaluate(example) for example in examples]
    seconds = time.perf_counter() - start
print(json.dumps({"examples": len(examples), "threads": threads, "s": seconds, "examples_per_s": len(examples) / seconds,
                  "torch": torch.__version__}))
PY
    echo "== $t thread(s): llmfs" >&2
    "$llmfs" bench hellaswag --threads "$t" --data "$data" --limit "$limit" --out "$out/llmfs_${t}thread.json" >/dev/null
done

python3 - "$out" $threads <<'PY'
import json, sys
out, threads = sys.argv[1], sys.argv[2:]
print(f"{'threads':>7} {'examples':>8} {'torch ex/s':>10} {'llmfs ex/s':>10} {'ratio':>6} {'llmfs whole rows ex/s':>21}")
for t in threads:
    ours = json.load(open(f"{out}/llmfs_{t}thread.json"))
    torch = json.load(open(f"{out}/torch_{t}thread.json"))
    rate = ours["shared_context"]["examples_per_s"]
    print(f"{t:>7} {ours['examples']:>8} {torch['examples_per_s']:>10.2f} {rate:>10.2f} {rate / torch['examples_per_s']:>5.2f}x "
          f"{ours['whole_rows']['examples_per_s']:>21.2f}")
PY
