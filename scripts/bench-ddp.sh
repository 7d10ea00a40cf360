#!/usr/bin/env bash
# Data-parallel scaling: GPT-2 124M pretraining from scratch (T256, dropout 0, B4 per rank) on the
# shards of the fixture's FineWeb sample, run back to back in these shapes:
#   one rank, 1 thread (B4)          the unit of scaling
#   one rank, all threads (B4×N)     the same global batch as N ranks, in one process
#   --devices LIST, all threads      N ranks as threads of one process (B4 each)
#   mpirun -np N, threads/N each     N ranks as processes (B4 each; when mpirun is installed)
# Prints tokens/s (median of steps 2 to the last), the gradients' all-reduce a step (median, the
# wait for the slower rank included) and the scaling over one rank of one thread.
#
#   bash scripts/bench-ddp.sh [--devices cpu,cpu] [--threads N] [--steps 6] [--out DIR]
#
# On a GPU machine: --devices cuda:0,cuda:1 (the one-rank rows run on the first device).
set -euo pipefail
cd "$(dirname "$0")/.."
devices="cpu,cpu"
threads="$(nproc)"
steps=6
out="target/bench-ddp"
while [ $# -gt 0 ]; do
    case "$1" in
        --devices) devices="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
ranks=$(echo "$devices" | tr ',' '\n' | grep -c .)
first="${devices%%,*}"
features=()
if command -v mpirun >/dev/null; then
    features=(--features mpi)
else
    echo "note: no mpirun (bash scripts/setup-mpi.sh installs Open MPI): the mpirun row is left out" >&2
fi
cargo build --release --locked "${features[@]}" --bin llmfs
llmfs="${CARGO_TARGET_DIR:-target}/release/llmfs"
mkdir -p "$out"
grep -m1 "model name" /proc/cpuinfo >&2 || true
echo "$ranks ranks on $devices, $threads threads in all, $steps steps of B4×T256 per rank" >&2
"$llmfs" prepare fineweb --shard-size 20000 --input tests/fixtures/data/fineweb_edu_sample.parquet --out "$out/shards" >/dev/null 2>&1

# One shape: its name, then `launch` (the command before `pretrain`: llmfs, or mpirun … llmfs) and
# its flags. A model of 124M parameters: each run's directory is removed once its metrics are read.
train() {
    local name="$1"
    shift
    rm -rf "${out:?}/$name"
    "${launch[@]}" pretrain --config gpt2 --data "$out/shards" --seq-len 256 --steps "$steps" --warmup-steps 2 --dropout 0 \
        --eval-every 100000 --checkpoint-every 100000 --sample-every 100000 --eval-batches 1 --plain \
        --run-dir "$out/$name" "$@" >/dev/null 2>"$out/$name.log" || { cat "$out/$name.log" >&2; exit 1; }
    cp "$out/$name/metrics.jsonl" "$out/$name.metrics.jsonl"
    rm -rf "${out:?}/$name"
}
per_rank=$(( threads / ranks > 0 ? threads / ranks : 1 ))
shapes=("one-1t" "one-all" "devices")
launch=("$llmfs")
echo "== one rank, 1 thread" >&2
train one-1t --device "$first" --threads 1 --batch-size 4
echo "== one rank, $threads threads, B$(( 4 * ranks ))" >&2
train one-all --device "$first" --threads "$threads" --batch-size $(( 4 * ranks ))
echo "== --devices $devices, $threads threads" >&2
train devices --devices "$devices" --threads "$threads" --batch-size 4
if command -v mpirun >/dev/null; then
    echo "== mpirun -np $ranks, $per_rank thread(s) each" >&2
    launch=(env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np "$ranks" --oversubscribe "$llmfs")
    train mpirun --device "$first" --threads "$per_rank" --batch-size 4
    shapes+=("mpirun")
fi

python3 - "$out" "$ranks" "${shapes[@]}" <<'PY'
import json, statistics, sys
out, ranks, shapes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
labels = {"one-1t": "one rank, 1 thread", "one-all": "one rank, all threads", "devices": "--devices", "mpirun": "mpirun"}
rows = {}
for shape in shapes:
    events = [json.loads(l) for l in open(f"{out}/{shape}.metrics.jsonl")]
    train = [e for e in events if e.get("split") == "train"][1:]
    rows[shape] = (statistics.median(e["tokens_per_s"] for e in train), [e.get("allreduce_s") for e in train], train[-1]["loss"])
unit = rows["one-1t"][0]
print(f"{'shape':<22} {'tok/s':>8} {'scaling':>8} {'all-reduce s':>13} {'share':>6} {'last loss':>10}")
for shape, (tps, allreduce, loss) in rows.items():
    # Every shape but the unit trains the N ranks' global batch of 4 × 256 tokens each.
    workers = 1 if shape == "one-1t" else ranks
    reduce = statistics.median(allreduce) if allreduce[0] is not None else 0.0
    share = f"{reduce * tps / (4 * 256 * workers):.0%}" if reduce else "-"
    print(f"{labels[shape]:<22} {tps:>8.1f} {tps / (unit * workers):>7.0%} {reduce:>13.3f} {share:>6} {loss:>10.5f}")
PY
