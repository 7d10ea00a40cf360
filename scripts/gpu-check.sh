#!/usr/bin/env bash
# The CUDA checks in one go: backend parity tests, a CPU-vs-CUDA comparison of two whole CLI jobs,
# and the GPU benchmarks next to PyTorch on the same card. Two halves, because a GPU machine often
# has no Rust toolchain and no network:
#
#   bash scripts/gpu-check.sh build    # here: the CUDA builds of the parity tests and the CLI, in .cuda-bin/
#   bash scripts/gpu-check.sh all [S]  # on the GPU machine, in the repository root: all of the below in S seconds
#   bash scripts/gpu-check.sh tests    # there: parity tests on cuda
#   bash scripts/gpu-check.sh cli      # there too: CLI jobs on cpu vs cuda, then benchmarks vs PyTorch
#   bash scripts/gpu-check.sh profile  # after cli: the tuned training steps' GPU time, kernel by kernel
#   bash scripts/gpu-check.sh ddp [S]  # there: --devices cuda:… with NCCL against one process and the host path
#   bash scripts/gpu-check.sh bench 60 generate --batch 8   # one `llmfs bench` on cuda, into benches.jsonl
#   bash scripts/gpu-check.sh report   # the benchmarks in $OUT so far, next to PyTorch's if it ran
#
# The GPU machine needs only .cuda-bin/gpu.tar.xz: both binaries link LLVM's NVPTX back end and
# most of Burn (~130 MB each), so they are packed together with a dictionary that spans both, and
# the second costs little more than its differences (45 MB in all instead of 34 + 38 MB).
# `build` needs the offline LLVM of scripts/setup-cuda-build.sh; it pins the CUDA API version that
# cudarc binds to CUDARC_CUDA_VERSION (default 13000 = CUDA 13.0: no nvcc is needed here, and the
# driver on the GPU machine must be at least that version). `tests` and `cli` write their logs and results to
# $OUT (default target/gpu-check): summary.txt, and tests.log or cli.log, benches.jsonl, torch_gpu.json.
set -uo pipefail
cd "$(dirname "$0")/.."
bins=.cuda-bin
b=/tmp/llmfs-cuda/bin  # where the GPU machine unpacks the archives

build() {
    set -e
    bash scripts/setup-cuda-build.sh
    export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
    # Without debug info: the binaries travel to the GPU machine (LLVM's NVPTX back end is linked in).
    export CARGO_PROFILE_DEV_DEBUG=0 CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-target/cuda}"
    # Two binaries (each ~130 MB with LLVM's NVPTX back end): every parity test in one, and the
    # CLI, whose `llmfs bench` runs the benchmarks.
    local targets=(--test backends --bin llmfs)
    rm -rf "$bins" && mkdir -p "$bins/bin"
    cargo build --features cuda -p llmfs-pipelines -p llmfs-apps "${targets[@]}" \
        --message-format=json-render-diagnostics |
        python3 -c '
import json, shutil, sys
for line in sys.stdin:
    msg = json.loads(line)
    exe = msg.get("executable") if msg.get("reason") == "compiler-artifact" else None
    if exe:
        name = msg["target"]["name"]
        shutil.copy(exe, sys.argv[1] + "/" + name)
        print(name, file=sys.stderr)
' "$bins/bin"
    strip "$bins"/bin/*
    pwd >"$bins/bin/built_at"
    tar -C "$bins/bin" -cf - backends llmfs built_at | xz -T1 --lzma2=preset=6,dict=320MiB >"$bins/gpu.tar.xz"
    rm -rf "$bins/bin"
    ls -la "$bins"
}

# The CLI jobs compared across devices: HellaSwag scoring and a short instruction fine-tune.
cli_jobs() {
    local dev=$1 limit=$2 fx=tests/fixtures
    timeout "$limit" "$b/llmfs" eval hellaswag --device "$dev" --model "$fx/gpt2-tiny" \
        --data "$fx/data/hellaswag_val_40.jsonl" --predictions "/tmp/hs_$dev.jsonl" --json
    echo "llmfs eval hellaswag --device $dev: rc=$?"
    rm -rf "/tmp/run_$dev"
    timeout "$limit" "$b/llmfs" finetune instruct --device "$dev" --model "$fx/gpt2-tiny" \
        --data "$fx/data/instruction_data_60.json" --epochs 2 --batch-size 4 --sample-tokens 8 \
        --run-dir "/tmp/run_$dev" --plain --json
    echo "llmfs finetune instruct --device $dev: rc=$?"
}

# One `llmfs bench` on the GPU with a time limit; its JSON line goes to benches.jsonl.
bench() {
    local limit=$1 name=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$b/llmfs" bench "$name" --device cuda "$@" >>"$out/benches.jsonl" 2>>"$out/cli.log"
    echo "llmfs bench $name $*: rc=$? ($((SECONDS - start)) s)" | tee -a "$out/summary.txt"
}

# Unpacks the binaries and makes the GPU machine ready for them.
setup() {
    [ -n "${ready:-}" ] && return
    ready=1
    out="${OUT:-target/gpu-check}"
    mkdir -p "$out" "$b"
    if [ ! -x "$b/llmfs" ]; then
        tar -C "$b" -xJf "$bins/gpu.tar.xz" || { echo "no $bins/gpu.tar.xz: run \`$0 build\` first" >&2; exit 1; }
    fi
    local built_at
    built_at="$(cat "$b/built_at")"
    # The tests' fixtures are found through the absolute path the binary was built at.
    if [ -n "$built_at" ] && [ ! -e "$built_at" ]; then mkdir -p "$(dirname "$built_at")" && ln -s "$PWD" "$built_at"; fi
    # cudarc loads libcuda and NVRTC at run time; cubecl-cuda compiles kernels against the CUDA headers
    # of $CUDA_PATH (default /usr/local/cuda).
    if [ -z "${CUDA_PATH:-}" ] && [ ! -e /usr/local/cuda ] && command -v nvcc >/dev/null; then
        export CUDA_PATH="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
    fi
    local cuda_home="${CUDA_PATH:-/usr/local/cuda}" nvrtc
    nvrtc="$(ls "$cuda_home"/lib64/libnvrtc.so* "$cuda_home"/targets/x86_64-linux/lib/libnvrtc.so* 2>/dev/null | head -1)"
    [ -n "$nvrtc" ] || nvrtc="$(timeout 30 find /usr /opt -name 'libnvrtc.so*' 2>/dev/null | head -1)"
    [ -n "$nvrtc" ] && export LD_LIBRARY_PATH="$(dirname "$nvrtc"):${LD_LIBRARY_PATH:-}"
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
        echo "cuda: $cuda_home; nvrtc: ${nvrtc:-not found}; fixtures via: ${built_at:-?}; cpu: $(nproc) cores"
    } | tee -a "$out/summary.txt"
    nccl_lib
}

# On the GPU: every parity test with LLMFS_TEST_DEVICE=cuda.
tests() {
    setup
    echo "== parity tests on cuda (LLMFS_TEST_DEVICE=cuda)" | tee -a "$out/summary.txt"
    local start=$SECONDS
    LLMFS_TEST_DEVICE=cuda timeout "${1:-240}" "$b/backends" --test-threads 1 --nocapture >"$out/tests.log" 2>&1
    echo "backends (parity, generation, classifier, llama, loss_and_adamw, mixed_precision, device_collective): rc=$? ($((SECONDS - start)) s) $(grep -h '^test result' "$out/tests.log" | tail -1)" |
        tee -a "$out/summary.txt"
    grep -h "FAILED\|panicked" "$out/tests.log" | head -20 >>"$out/summary.txt"
    grep -h "max abs diff\|rel err\|tolerance" "$out/tests.log" | sort | uniq | head -40 >>"$out/summary.txt"
}

# The CLI jobs' results on cpu and cuda, compared with each other and with transformers.
compare_cli() {
    cat /tmp/cli_cpu.log /tmp/cli_cuda.log >>"$out/cli.log"
    grep -h "^llmfs " /tmp/cli_cpu.log /tmp/cli_cuda.log | tee -a "$out/summary.txt"
    python3 - tests/fixtures/hellaswag_tiny_reference.json <<'PY' 2>&1 | tee -a "$out/summary.txt"
import json, sys
ref = {e["ind"]: e for e in json.load(open(sys.argv[1]))["examples"]}
for d in ("cpu", "cuda"):
    rows = [json.loads(l) for l in open(f"/tmp/hs_{d}.jsonl")]
    same = sum(r["pred"] == ref[r["ind"]]["pred"] and r["pred_norm"] == ref[r["ind"]]["pred_norm"] for r in rows)
    print(f"hellaswag {d}: predictions equal transformers' on {same}/{len(rows)} examples")
curves = {}
for d in ("cpu", "cuda"):
    events = [json.loads(l) for l in open(f"/tmp/run_{d}/metrics.jsonl") if l.strip()]
    curves[d] = [e for e in events if e.get("split") == "train" and "loss" in e]
pairs = list(zip(curves["cpu"], curves["cuda"]))
worst = max((abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in pairs), default=float("nan"))
print(f"finetune instruct: {len(pairs)} train events; losses cpu {[round(a['loss'], 4) for a, _ in pairs[:4]]} "
      f"cuda {[round(b['loss'], 4) for _, b in pairs[:4]]}; worst relative difference {worst:.2e}")
PY
}

# PyTorch's benchmarks on the same card (fp32 and TF32), for the ratios in report().
torch_bench() {
    PYTHONUNBUFFERED=1 timeout "$1" python3 scripts/reference/bench_torch_gpu.py --batch 16 --seq-len 1024 \
        --out "$out/torch_gpu.json" >/dev/null 2>>"$out/cli.log"
    echo "torch: rc=$?" | tee -a "$out/summary.txt"
}

# llmfs's benchmark results next to PyTorch's where there are some, and the training step's MFU.
report() {
    python3 - "$out" <<'PY' 2>&1 | tee -a "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
ours = {}
for line in open(f"{out}/benches.jsonl") if os.path.exists(f"{out}/benches.jsonl") else []:
    if line.startswith("{"):
        r = json.loads(line)
        # The bf16-mixed training step under its own key.
        key = r["bench"] + ("_bf16" if r.get("precision") == "bf16-mixed" else "")
        ours[key] = r
torch = json.load(open(f"{out}/torch_gpu.json")) if os.path.exists(f"{out}/torch_gpu.json") else None
print(f"llmfs on cuda (f32 matmuls in TF32); PyTorch: {torch['torch'] + ' on ' + torch['device'] if torch else 'not run'}")
def row(what, ours_v, key, unit):
    line = f"{what:<34} llmfs {ours_v:>9.1f} {unit}"
    if torch:
        t32, ttf = key(torch["fp32"]), key(torch["tf32"])
        line += f"  torch fp32 {t32:>9.1f} ({ours_v / t32:.2f}x)  torch tf32 {ttf:>9.1f} ({ours_v / ttf:.2f}x)"
    print(line)
t = ours.get("llmfs_train_gpt2_124m")
if t:
    row(f"train step B{t['batch']}xT{t['seq_len']}", t["tokens_per_s"], lambda c: c["train"]["tokens_per_s"], "tok/s")
    # Model FLOPs utilisation: 6 FLOPs per parameter per token (forward + backward), against the
    # H100/H200's dense TF32 tensor-core peak (~495 TFLOP/s, SXM).
    flops = 6 * 124.44e6 * t["tokens_per_s"]
    print(f"{'':<34} {flops / 1e12:.1f} TFLOP/s of model FLOPs = {100 * flops / 495e12:.1f} % MFU (TF32 peak 495 TFLOP/s)")
    if torch:
        print(f"{'':<34} losses llmfs {[round(x, 3) for x in t['losses'][:3]]} torch {[round(x, 3) for x in torch['fp32']['train']['losses']]}")
t = ours.get("llmfs_train_gpt2_124m_bf16")
if t:
    flops = 6 * 124.44e6 * t["tokens_per_s"]
    line = f"{'train step, bf16-mixed':<34} llmfs {t['tokens_per_s']:>9.1f} tok/s ({t.get('matmul')})"
    if torch and "bf16" in torch:
        tb = torch["bf16"]["train"]["tokens_per_s"]
        line += f"  torch bf16 autocast {tb:>9.1f} ({t['tokens_per_s'] / tb:.2f}x)"
    f32 = ours.get("llmfs_train_gpt2_124m")
    if f32:
        line += f"  vs llmfs f32 {t['tokens_per_s'] / f32['tokens_per_s']:.2f}x"
    print(line)
    # Against the H100/H200's dense bf16 tensor-core peak (~989 TFLOP/s, SXM).
    print(f"{'':<34} {flops / 1e12:.1f} TFLOP/s of model FLOPs = {100 * flops / 989e12:.1f} % MFU (bf16 peak 989 TFLOP/s)")
c = ours.get("llmfs_cls_gpt2_124m")
if c:
    row("cls step B8xT120 (last block)", c["batch"] / c["plain_step"]["median_s"], lambda x: x["cls"]["examples_per_s"], "ex/s")
    row("cls step, prefix cache", c["batch"] / c["cached_step"]["median_s"], lambda x: x["cls"]["examples_per_s"], "ex/s")
g = ours.get("llmfs_generate_gpt2_124m")
if g:
    row("greedy 128 tokens, batch 1", g["kv_cache"]["tokens_per_s"], lambda x: x["infer"]["batch_1"]["tokens_per_s"], "tok/s")
g8 = ours.get("llmfs_generate_batched_gpt2_124m")
if g8:
    row(f"greedy 128 tokens, batch {g8['batch']}", g8["batched"]["tokens_per_s"], lambda x: x["infer"][f"batch_{g8['batch']}"]["tokens_per_s"], "tok/s")
    print(f"{'':<34} llmfs batched vs one at a time: {g8['speedup']:.2f}x")
PY
}

# On the GPU: the CLI jobs on cpu and cuda, compared; then the benchmarks next to PyTorch.
cli() {
    setup
    echo "== CLI: the same jobs on cpu and cuda" | tee -a "$out/summary.txt"
    cli_jobs cpu 120 >/tmp/cli_cpu.log 2>&1 &
    cli_jobs cuda 120 >/tmp/cli_cuda.log 2>&1
    wait
    compare_cli
    echo "== benchmarks (llmfs on cuda, then PyTorch on the same card)" | tee -a "$out/summary.txt"
    bench 90 train-step --batch 16 --seq-len 1024 --steps 10
    bench 90 train-step --batch 16 --seq-len 1024 --steps 10 --precision bf16-mixed
    bench 50 generate
    bench 70 generate --batch 8
    torch_bench 120
    bench 100 finetune-cls --steps 10
    report
}

# On the GPU, everything within one time budget (seconds; device time is short): the parity tests
# with both CLI jobs beside them (they check results, not speed), then each benchmark alone on the
# GPU while its time limit still fits, most wanted first, then data-parallel training (`ddp`) and the kernel profile if time is left.
all() {
    local budget=${1:-540} t0=$SECONDS
    setup
    left() { echo $((budget - (SECONDS - t0))); }
    cli_jobs cpu 150 >/tmp/cli_cpu.log 2>&1 &
    cli_jobs cuda 150 >/tmp/cli_cuda.log 2>&1 &
    tests 200
    wait
    echo "== CLI: the same jobs on cpu and cuda" | tee -a "$out/summary.txt"
    compare_cli
    echo "== benchmarks, one at a time ($(left) s left)" | tee -a "$out/summary.txt"
    [ "$(left)" -ge 90 ] && bench 90 train-step --batch 16 --seq-len 1024 --steps 10
    [ "$(left)" -ge 90 ] && bench 90 train-step --batch 16 --seq-len 1024 --steps 10 --precision bf16-mixed
    [ "$(left)" -ge 70 ] && bench 70 generate --batch 8
    [ "$(left)" -ge 100 ] && bench 100 finetune-cls --steps 10
    [ "$(left)" -ge 120 ] && torch_bench 120
    [ "$(left)" -ge 50 ] && bench 50 generate
    report
    [ "$(left)" -ge 120 ] && ddp "$(($(left) - 10))"
    [ "$(left)" -ge 60 ] && profile "$(($(left) - 10))"
    echo "done in $((SECONDS - t0)) s of $budget" | tee -a "$out/summary.txt"
}

# On the GPU: where a training step's GPU time goes, kernel by kernel.
# CubeCL times every kernel when its profiling logger is on (cubecl.toml in the working directory
# or a parent) and logs one `| duration | name` line per launch. Autotuning runs its own probe
# kernels (…Throughput…, LaunchOverhead…) while it tunes; the launches after the last probe are the
# tuned steps, summed per kernel into summary.txt (CubeCL's own per-sync tables can hold as little
# as one probe).
profile() {
    setup
    local dir=/tmp/llmfs-profile start=$SECONDS
    rm -rf "$dir" && mkdir -p "$dir"
    printf '[profiling.logger]\nlevel = "basic"\nfile = "%s/kernels.log"\n' "$dir" >"$dir/cubecl.toml"
    (cd "$dir" && timeout "${1:-90}" "$b/llmfs" bench train-step --device cuda --batch 16 --seq-len 1024 --steps 2) \
        >>"$out/benches.jsonl" 2>>"$out/cli.log"
    echo "== kernel profile of the tuned train steps B16xT1024 (rc=$?, $((SECONDS - start)) s): the 25 longest" | tee -a "$out/summary.txt"
    python3 - "$dir/kernels.log" <<'PY' 2>&1 | tee -a "$out/summary.txt"
import collections, re, sys
units = {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
launches = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    parts = line.rstrip("\n").split("|")
    m = re.fullmatch(r"\s*([\d.]+)(ns|µs|ms|s)\s*", parts[1]) if len(parts) > 2 else None
    if m:
        launches.append((float(m[1]) * units[m[2]], "|".join(parts[2:]).strip()))
probes = [i for i, (_, name) in enumerate(launches) if "Throughput" in name or "LaunchOverhead" in name]
tuned = launches[probes[-1] + 1:] if probes else launches
total = sum(d for d, _ in tuned) or float("nan")
per_kernel = collections.defaultdict(lambda: [0.0, 0])
for d, name in tuned:
    # A matmul's name lists its launch arguments first and its kernel family last.
    key = name.split("__AccSize |")[-1].strip() if name.startswith("MatmulEntry") else name
    per_kernel[key[:110]][0] += d
    per_kernel[key[:110]][1] += 1
print(f"{len(tuned)} launches after autotuning, {total * 1e3:.1f} ms of GPU time")
for key, (d, n) in sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:25]:
    print(f"{d * 1e3:9.1f} ms {100 * d / total:5.1f} % {n:6d}x  {key}")
PY
    xz -6 <"$dir/kernels.log" >"$out/kernels.log.xz"
}

# NCCL for `--devices cuda:…` (CubeCL opens libnccl.so at run time): the system's, else the one a
# CUDA build of PyTorch brings (nvidia-nccl-*: libnccl.so.2 only, a name cudarc does not try), as a
# libnccl.so link in a directory put on LD_LIBRARY_PATH.
nccl_lib() {
    ldconfig -p 2>/dev/null | grep -q 'libnccl\.so ' && { echo "nccl: the system's" | tee -a "$out/summary.txt"; return; }
    local found
    found="$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)"
    found="$(ls "$found"/libnccl.so* 2>/dev/null | head -1)"
    [ -n "$found" ] || found="$(timeout 30 find / -xdev -name 'libnccl.so*' 2>/dev/null | head -1)"
    if [ -n "$found" ]; then
        mkdir -p /tmp/llmfs-nccl && ln -sf "$found" /tmp/llmfs-nccl/libnccl.so
        export LD_LIBRARY_PATH="/tmp/llmfs-nccl:${LD_LIBRARY_PATH:-}"
    fi
    echo "nccl: ${found:-not found (the --devices runs average through host memory)}" | tee -a "$out/summary.txt"
}

# On the GPU: data-parallel ranks as threads (`--devices`), their gradients averaged by NCCL on the
# GPUs, against one process and against the host-memory path (LLMFS_NCCL=0). The tiny model first
# (losses, step by step), then GPT-2 124M's tokens/s; with two GPUs or more, two ranks too.
ddp() {
    setup
    local limit=${1:-240} t0=$SECONDS fx=tests/fixtures d=/tmp/llmfs-ddp gpus
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
    rm -rf "$d" && mkdir -p "$d"
    "$b/llmfs" prepare fineweb --shard-size 20000 --input "$fx/data/fineweb_edu_sample.parquet" --out "$d/shards" >/dev/null 2>>"$out/ddp.log"
    echo "== data-parallel on $gpus GPU(s): --devices (NCCL) against one process" | tee -a "$out/summary.txt"
    # name, then env assignments and flags; each run's losses and run.json are kept in $d.
    one() {
        local name=$1 start=$SECONDS
        shift
        timeout 120 env "$@" --run-dir "$d/$name" >>"$out/ddp.log" 2>&1
        echo "$name: rc=$? ($((SECONDS - start)) s)" | tee -a "$out/summary.txt"
    }
    local tiny=("$b/llmfs" pretrain --init "$fx/gpt2-tiny" --data "$d/shards" --seq-len 32 --steps 20 --warmup-steps 2
        --dropout 0 --eval-every 10 --eval-batches 2 --sample-every 1000 --plain --json)
    one tiny-device "${tiny[@]}" --device cuda:0 --batch-size 4
    one tiny-nccl "${tiny[@]}" --devices cuda:0 --batch-size 4
    one tiny-host LLMFS_NCCL=0 "${tiny[@]}" --devices cuda:0 --batch-size 4
    local runs=(tiny-device tiny-nccl tiny-host)
    if [ "$gpus" -ge 2 ]; then
        one tiny-device-b8 "${tiny[@]}" --device cuda:0 --batch-size 8
        one tiny-nccl-2 "${tiny[@]}" --devices cuda:0,cuda:1 --batch-size 4
        runs+=(tiny-device-b8 tiny-nccl-2)
    fi
    local big=("$b/llmfs" pretrain --config gpt2 --data "$d/shards" --seq-len 1024 --steps 8 --warmup-steps 2 --dropout 0
        --eval-every 100000 --checkpoint-every 100000 --sample-every 100000 --eval-batches 1 --plain --json)
    for name in big-device big-nccl big-host; do
        [ $((limit - (SECONDS - t0))) -ge 80 ] || break
        case $name in
            big-device) one $name "${big[@]}" --device cuda:0 --batch-size 8 ;;
            big-nccl) one $name "${big[@]}" --devices cuda:0 --batch-size 8 ;;
            big-host) one $name LLMFS_NCCL=0 "${big[@]}" --devices cuda:0 --batch-size 8 ;;
        esac
        runs+=("$name")
    done
    if [ "$gpus" -ge 2 ] && [ $((limit - (SECONDS - t0))) -ge 80 ]; then
        one big-nccl-2 "${big[@]}" --devices cuda:0,cuda:1 --batch-size 8
        runs+=(big-nccl-2)
    fi
    python3 - "$d" "${runs[@]}" <<'PY' 2>&1 | tee -a "$out/summary.txt"
import json, os, statistics, sys
d, runs = sys.argv[1], sys.argv[2:]
def load(name):
    path = f"{d}/{name}/metrics.jsonl"
    if not os.path.exists(path):
        return None
    events = [json.loads(l) for l in open(path) if l.strip()]
    info = json.load(open(f"{d}/{name}/run.json"))
    return [e for e in events if e.get("split") == "train"], info.get("gradients_averaged", "-")
got = {name: load(name) for name in runs}
def compare(a, b):
    if not (got.get(a) and got.get(b)):
        return
    pairs = list(zip(got[a][0], got[b][0]))
    worst = max((abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in pairs), default=float("nan"))
    print(f"{b} ({got[b][1]}) against {a}: {len(pairs)} steps, worst relative loss difference {worst:.2e}; "
          f"last losses {pairs[-1][0]['loss']:.5f} / {pairs[-1][1]['loss']:.5f}")
compare("tiny-device", "tiny-nccl")
compare("tiny-device", "tiny-host")
compare("tiny-device-b8", "tiny-nccl-2")
base = None
for name in ("big-device", "big-nccl", "big-host", "big-nccl-2"):
    if got.get(name):
        tps = statistics.median(e["tokens_per_s"] for e in got[name][0][2:])
        base = base or tps
        print(f"{name:<11} GPT-2 124M B8xT1024 per rank: {tps:9.1f} tok/s ({tps / base:.3f}x big-device), gradients {got[name][1]}")
PY
    rm -rf "$d"/big-*
}

case "${1:-}" in
    build) build ;;
    tests) tests ;;
    cli) cli ;;
    all) all "${2:-540}" ;;
    bench) setup && shift && bench "$@" ;;
    report) setup && report ;;
    profile) profile "${2:-90}" ;;
    ddp) ddp "${2:-240}" ;;
    *) echo "usage: $0 build|all [seconds]|tests [seconds]|cli|profile [seconds]|ddp [seconds]|bench SECONDS NAME [ARGS]|report" >&2; exit 2 ;;
esac
