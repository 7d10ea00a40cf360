#!/usr/bin/env bash
# HellaSwag scoring speed, `llmfs eval hellaswag` vs build-nanogpt's `evaluate` loop with PyTorch +
# transformers (one example = 4 whole rows per forward pass, full logits, cross-entropy, argmin), on
# the GPT-2 124M shape with random fp32 weights, the same examples, at 1 and 2 threads, back to back.
# Examples: the 40 shipped validation rows (`--data FILE` for others, `--limit N`).
#
#   bash scripts/bench-hellaswag.sh [--baseline DIR] [--threads "1 2"] [--out DIR] [--data FILE] [--limit N]
#
# The Python side is scripts/reference/hellaswag_reference.py (build-nanogpt's code) in the PyTorch
# baseline's venv (made once by its setup.sh).
out="target/bench-hellaswag"
data="tests/fixtures/data/hellaswag_val_40.jsonl"
limit=100000
extra_flags="data limit"
source "$(dirname "$0")/bench-common.sh" "$@"
cargo build --release --locked -p llmfs-apps
llmfs="${CARGO_TARGET_DIR:-target}/release/llmfs"

for t in $threads; do
    echo "== $t thread(s): PyTorch" >&2
    "$venv/bin/python" scripts/reference/hellaswag_reference.py --random-gpt2 --time --threads "$t" --data "$data" \
        --limit "$limit" > "$out/torch_${t}thread.json"
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
