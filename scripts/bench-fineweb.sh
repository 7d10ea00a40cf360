#!/usr/bin/env bash
# Shard preparation speed, `llmfs prepare fineweb` vs build-nanogpt's fineweb.py loop (tiktoken +
# multiprocessing, scripts/reference/fineweb_shards.py) on the same parquet, back to back: tokens/s
# and tokens per CPU-second (user + sys of the whole process tree, pool workers included), at 1 and
# 2 workers. The input is the shipped FineWeb-Edu sample repeated (`--repeat`, default 150: ~18M
# tokens). Checks that both wrote the same bytes.
#
#   bash scripts/bench-fineweb.sh [--baseline DIR] [--threads "1 2"] [--out DIR] [--repeat N]
#
# The Python side runs in the PyTorch baseline's venv (numpy, pyarrow, tiktoken; made once by its
# setup.sh). Offline, tiktoken gets the GPT-2 vocabulary (`r50k_base.tiktoken`) from tiktoken-rs's crate sources.
out="target/bench-fineweb"
repeat=150
extra_flags="repeat"
source "$(dirname "$0")/bench-common.sh" "$@"
cargo build --release --locked -p llmfs-apps
llmfs="${CARGO_TARGET_DIR:-target}/release/llmfs"
bpe_dir=$(dirname "$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tiktoken-rs-*/assets/r50k_base.tiktoken | tail -1)")

"$venv/bin/python" - "$out" "$repeat" "$llmfs" "$bpe_dir" $threads <<'PY'
import hashlib, json, os, resource, shutil, subprocess, sys, time
import pyarrow as pa, pyarrow.parquet as pq

out, repeat, llmfs, bpe_dir, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
parquet = os.path.join(out, f"fineweb_sample_x{repeat}.parquet")
if not os.path.exists(parquet):
    table = pq.read_table("tests/fixtures/data/fineweb_edu_sample.parquet", columns=["text"])
    pq.write_table(pa.concat_tables([table] * repeat), parquet, row_group_size=10_000)

def run(cmd, shards):
    """Wall seconds and CPU seconds (user + sys, every descendant) of one run into a fresh directory."""
    shutil.rmtree(shards, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout

def digest(shards):
    return {name: hashlib.sha256(open(os.path.join(shards, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(shards)) if name.endswith(".npy")}

rows = []
for t in threads:
    py_dir, rs_dir = os.path.join(out, "python_shards"), os.path.join(out, "llmfs_shards")
    py_wall, py_cpu, py_out = run([sys.executable, "scripts/reference/fineweb_shards.py", "--input", parquet, "--out", py_dir,
                                   "--procs", t, "--bpe-dir", bpe_dir, "--encoding", "r50k_base"], py_dir)
    tokens = json.loads(py_out.strip().splitlines()[-1])["tokens"]
    rs_wall, rs_cpu, _ = run([llmfs, "prepare", "fineweb", "--input", parquet, "--out", rs_dir, "--workers", t, "--json"], rs_dir)
    same = digest(py_dir) == digest(rs_dir)
    rows.append(dict(workers=int(t), tokens=tokens, python_wall_s=py_wall, python_cpu_s=py_cpu, llmfs_wall_s=rs_wall,
                     llmfs_cpu_s=rs_cpu, identical_shards=same))
    if not same:
        sys.exit(f"the shards differ at {t} worker(s): {py_dir} vs {rs_dir}")

print(f"{'workers':>7} {'tokens':>10} {'python tok/s':>12} {'llmfs tok/s':>12} {'ratio':>6} "
      f"{'python tok/CPU-s':>16} {'llmfs tok/CPU-s':>15} {'ratio':>6}")
for r in rows:
    py, rs = r["tokens"] / r["python_wall_s"], r["tokens"] / r["llmfs_wall_s"]
    py_c, rs_c = r["tokens"] / r["python_cpu_s"], r["tokens"] / r["llmfs_cpu_s"]
    print(f"{r['workers']:>7} {r['tokens']:>10} {py:>12.0f} {rs:>12.0f} {rs/py:>5.1f}x {py_c:>16.0f} {rs_c:>15.0f} {rs_c/py_c:>5.1f}x")
json.dump(rows, open(os.path.join(out, "results.json"), "w"), indent=1)
print("identical shards: yes")
PY
