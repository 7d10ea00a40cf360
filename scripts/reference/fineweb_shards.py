#!/usr/bin/env python3
"""Reference for `llmfs prepare fineweb`: build-nanogpt's `fineweb.py` on local parquet files.

The shard loop below is Karpathy's (github.com/karpathy/build-nanogpt, fineweb.py) unchanged except
that the documents come from local parquet files (column `text`, files sorted by name, rows in file
order) instead of `datasets.load_dataset`, the tqdm bar is gone, and the output directory, shard size
and number of processes are arguments. Same tokenizer (tiktoken `gpt2`), same `multiprocessing`
pool with `imap(chunksize=16)`, same `np.save`, so the shards are the bytes fineweb.py writes.

Optional: the Rust tests read the stored result (`tests/fixtures/fineweb_edu_shards.json`) and
never run Python. Regenerate it with

    python scripts/reference/fineweb_shards.py --fixture tests/fixtures/fineweb_edu_shards.json

Needs numpy, pyarrow and tiktoken. tiktoken downloads the GPT-2 vocabulary on first use; offline,
`--bpe-dir DIR` takes OpenAI's `vocab.bpe` and `encoder.json` from DIR (tiktoken checks their
sha256, so only the genuine files are accepted), or with `--encoding r50k_base` the file
`r50k_base.tiktoken` (tiktoken-rs ships it in its crate sources): the same encoding as `gpt2`
(same ranks, pattern and special token in tiktoken_ext/openai_public.py) under its other name.

Also a benchmark of the Python pipeline: `--input FILE_OR_DIR --out DIR` prints tokens/s.
"""

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import tiktoken

# tiktoken's own download URLs for the `gpt2` encoding (tiktoken_ext/openai_public.py).
BPE_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "r50k_base.tiktoken": "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
}

FIXTURE_PARQUET = "tests/fixtures/data/fineweb_edu_sample.parquet"


def seed_tiktoken_cache(bpe_dir):
    """Puts local copies of the GPT-2 vocabulary where tiktoken looks for its downloads."""
    cache = tempfile.mkdtemp(prefix="tiktoken-cache-")
    for name, url in BPE_URLS.items():
        if not os.path.exists(os.path.join(bpe_dir, name)):
            continue
        with open(os.path.join(bpe_dir, name), "rb") as f:
            data = f.read()
        with open(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()), "wb") as f:
            f.write(data)
    os.environ["TIKTOKEN_CACHE_DIR"] = cache


def parquet_files(path):
    if os.path.isdir(path):
        return [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".parquet")]
    return [path]


def documents(files, max_docs=None):
    """Yields {"text": ...} rows in order, like iterating over a `datasets` split."""
    n = 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=1024):
            for text in batch.column(0).to_pylist():
                if max_docs is not None and n >= max_docs:
                    return
                n += 1
                yield {"text": text}


# ---- fineweb.py ---------------------------------------------------------------------------------
enc = None
eot = None
ENCODING = "gpt2"


def init_worker():
    global enc, eot
    enc = tiktoken.get_encoding(ENCODING)
    eot = enc._special_tokens['<|endoftext|>']  # end of text token


def tokenize(doc):
    # tokenizes a single document and returns a numpy array of uint16 tokens
    tokens = [eot]  # the special <|endoftext|> token delimits all documents
    tokens.extend(enc.encode_ordinary(doc["text"]))
    tokens_np = np.array(tokens)
    assert (0 <= tokens_np).all() and (tokens_np < 2**16).all(), "token dictionary too large for uint16"
    tokens_np_uint16 = tokens_np.astype(np.uint16)
    return tokens_np_uint16


def write_datafile(filename, tokens_np):
    np.save(filename, tokens_np)


def make_shards(docs, out_dir, shard_size, nprocs):
    """fineweb.py's main loop; returns (documents, tokens)."""
    os.makedirs(out_dir, exist_ok=True)
    n_docs = n_tokens = 0
    with mp.Pool(nprocs, initializer=init_worker) as pool:
        shard_index = 0
        # preallocate buffer to hold current shard
        all_tokens_np = np.empty((shard_size,), dtype=np.uint16)
        token_count = 0
        for tokens in pool.imap(tokenize, docs, chunksize=16):
            n_docs += 1
            n_tokens += len(tokens)
            # is there enough space in the current shard for the new tokens?
            if token_count + len(tokens) < shard_size:
                # simply append tokens to current shard
                all_tokens_np[token_count:token_count+len(tokens)] = tokens
                token_count += len(tokens)
            else:
                # write the current shard and start a new one
                split = "val" if shard_index == 0 else "train"
                filename = os.path.join(out_dir, f"edufineweb_{split}_{shard_index:06d}")
                # split the document into whatever fits in this shard; the remainder goes to next one
                remainder = shard_size - token_count
                all_tokens_np[token_count:token_count+remainder] = tokens[:remainder]
                write_datafile(filename, all_tokens_np)
                shard_index += 1
                # populate the next shard with the leftovers of the current doc
                all_tokens_np[0:len(tokens)-remainder] = tokens[remainder:]
                token_count = len(tokens)-remainder

        # write any remaining tokens as the last shard
        if token_count != 0:
            split = "val" if shard_index == 0 else "train"
            filename = os.path.join(out_dir, f"edufineweb_{split}_{shard_index:06d}")
            write_datafile(filename, all_tokens_np[:token_count])
    return n_docs, n_tokens
# ---- end of fineweb.py --------------------------------------------------------------------------


def describe(out_dir):
    shards = []
    for name in sorted(os.listdir(out_dir)):
        with open(os.path.join(out_dir, name), "rb") as f:
            data = f.read()
        shards.append({
            "name": name,
            "tokens": len(np.load(os.path.join(out_dir, name))),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        })
    return shards


def write_fixture(path, nprocs):
    """The stored reference the Rust tests compare with: fineweb.py on the fixture parquet, at a
    shard size that gives several full shards and a partial one, and at one that ends exactly on a
    document boundary (the `<` test's other branch with nothing left over)."""
    files = parquet_files(FIXTURE_PARQUET)
    init_worker()
    lengths = [len(tokenize(d)) for d in documents(files)]
    runs = []
    for shard_size, max_docs in [(25_000, None), (sum(lengths[:40]), 120), (25_000, 120)]:
        with tempfile.TemporaryDirectory() as out:
            docs, tokens = make_shards(documents(files, max_docs), out, shard_size, nprocs)
            runs.append({"shard_size": shard_size, "max_docs": max_docs, "documents": docs, "tokens": tokens,
                         "shards": describe(out)})
    fixture = {
        "what": "build-nanogpt fineweb.py shards of tests/fixtures/data/fineweb_edu_sample.parquet "
                "(written by scripts/reference/fineweb_shards.py --fixture)",
        "tiktoken": tiktoken.__version__,
        "numpy": np.__version__,
        "document_tokens": lengths,
        "runs": runs,
    }
    with open(path, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(f"wrote {path}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="a parquet file or a directory of them")
    parser.add_argument("--out", help="output directory for the shards")
    parser.add_argument("--shard-size", type=int, default=int(1e8))
    parser.add_argument("--max-docs", type=int)
    parser.add_argument("--procs", type=int, default=max(1, os.cpu_count() // 2), help="default: half the cores, as fineweb.py")
    parser.add_argument("--bpe-dir", help="directory with OpenAI's vocab.bpe and encoder.json (offline)")
    parser.add_argument("--fixture", help="write the test fixture JSON here instead")
    parser.add_argument("--encoding", choices=["gpt2", "r50k_base"], default="gpt2",
                        help="tiktoken's name for the GPT-2 encoding to load (the same tokens either way)")
    args = parser.parse_args()
    global ENCODING
    ENCODING = args.encoding
    if args.bpe_dir:
        seed_tiktoken_cache(args.bpe_dir)
    if args.fixture:
        write_fixture(args.fixture, args.procs)
        return
    if not (args.input and args.out):
        parser.error("--input and --out are required (or --fixture)")
    init_worker()  # fails here, once, rather than in pool workers that would be restarted forever
    start = time.perf_counter()
    docs, tokens = make_shards(documents(parquet_files(args.input), args.max_docs), args.out, args.shard_size, args.procs)
    seconds = time.perf_counter() - start
    print(json.dumps({"documents": docs, "tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
                      "procs": args.procs}))


if __name__ == "__main__":
    main()
