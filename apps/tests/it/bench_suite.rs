//! `llmfs bench` without a subcommand on the tiny preset: every workload in its own process, one
//! table, the JSON keys the issue names, and ratios against a PyTorch-format baseline that are
//! the figures divided as the table says.

use crate::common::*;
use serde_json::{Value, json};

/// The table row of `case` and `metric`, split on runs of spaces.
fn row<'a>(table: &'a str, case: &str, metric: &str) -> Vec<&'a str> {
    let prefix = format!("{case} {metric} ");
    let line = table
        .lines()
        .map(str::trim)
        .find(|l| l.split_whitespace().collect::<Vec<_>>().join(" ").starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row {case} / {metric} in\n{table}"));
    line.split("  ").map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// The ratio printed at the end of a row ("1.23x speed-up").
fn ratio(cells: &[&str]) -> f64 {
    let last = cells.last().unwrap();
    last.split('x').next().unwrap().parse().unwrap_or_else(|_| panic!("no ratio in {cells:?}"))
}

#[test]
fn the_suite_runs_each_case_and_compares_with_a_pytorch_baseline() {
    let home = tempfile::tempdir().unwrap();
    let baseline = home.path().join("torch.json");
    // PyTorch's schema (../shared/bench/torch_baseline), with round numbers.
    let torch = json!({
        "bench": "torch_cpu_gpt2_124m", "threads": 1,
        "train": {"tokens_per_s": 1000.0, "peak_rss_mib": 4000.0, "step": {"median_s": 1.0}},
        "cls": {"step": {"median_s": 0.5}, "peak_rss_mib": 2000.0},
        "infer": {"hf_generate_kv_cache": {"tokens_per_s": 10.0}, "prefill_16_tokens": {"median_s": 0.1}},
    });
    std::fs::write(&baseline, torch.to_string()).unwrap();
    let out_json = home.path().join("suite.json");
    let out = run(llmfs(home.path())
        .args(["bench", "--preset", "tiny", "--device", "cpu", "--threads", "1", "--cases", "train,cls,decode,forward,prefill"])
        .arg("--json")
        .arg(&out_json)
        .arg("--compare")
        .arg(&baseline));
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    assert_eq!(result["bench"], "llmfs_suite");
    assert_eq!(result["preset"], "tiny");
    assert_eq!(result["threads"], 1);

    // The keys a comparison script reads, with real measurements behind them.
    let train_tps = result["train"]["tokens_per_s"].as_f64().unwrap();
    let train_rss = result["train"]["peak_rss_mib"].as_f64().unwrap();
    let cls_step = result["cls"]["step_s"].as_f64().unwrap();
    let decode_tps = result["decode"]["tokens_per_s"].as_f64().unwrap();
    assert!(train_tps > 0.0 && train_rss > 10.0 && cls_step > 0.0 && decode_tps > 0.0, "{result}");
    assert!(result["forward"]["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(result["prefill"]["s"].as_f64().unwrap() > 0.0);
    // Each child's own result is kept: the tiny preset trains on its whole 128-token context
    // (the default 256 does not fit) and generates the 112 tokens that fit after the prompt.
    let results = &result["devices"]["cpu"]["results"];
    assert_eq!(results["train-step"]["bench"], "llmfs_train_tiny");
    assert_eq!(results["train-step"]["seq_len"], 128);
    assert_eq!(results["generate"]["new_tokens"], 112);
    assert_eq!(results["finetune-cls"]["losses_max_rel_diff"], 0.0);
    assert_eq!(result["train"]["tokens_per_s"], results["train-step"]["tokens_per_s"]);

    // Ratios: speeds ours / theirs, times theirs / ours, memory ours / theirs.
    let close = |a: f64, b: f64| (a - b).abs() <= 0.006 + 0.005 * b.abs();
    let r = ratio(&row(&table, "train", "tokens/s"));
    assert!(close(r, train_tps / 1000.0), "{r} vs {}\n{table}", train_tps / 1000.0);
    let r = ratio(&row(&table, "train", "peak memory"));
    assert!(close(r, train_rss / 4000.0), "{r}\n{table}");
    let r = ratio(&row(&table, "cls", "step"));
    assert!(close(r, 0.5 / cls_step), "{r} vs {}\n{table}", 0.5 / cls_step);
    let r = ratio(&row(&table, "decode", "tokens/s"));
    assert!(close(r, decode_tps / 10.0), "{r}\n{table}");
    // PyTorch's baseline has no forward-only figure: that row has no ratio.
    assert!(!row(&table, "forward", "tokens/s").last().unwrap().contains("x "), "{table}");
    // It measured GPT-2 124M, not the tiny shape: the table says so.
    assert!(table.contains("note: the baseline measured the gpt2 shape, llmfs tiny"), "{table}");

    // The saved JSON is itself a baseline: against it every ratio is about 1 (another run, same
    // machine), and each row has one.
    let again = run(llmfs(home.path())
        .args(["bench", "--preset", "tiny", "--threads", "1", "--cases", "cls"])
        .arg("--compare")
        .arg(&out_json));
    assert!(again.status.success(), "{}", stderr(&again));
    let table = stdout(&again);
    assert!(ratio(&row(&table, "cls", "step")) > 0.0, "{table}");
}

/// `--precision` reaches the training workloads and `--dtype` / `--quantize` the decoding ones:
/// each child's JSON records what it ran with, and the suite's JSON and table say so too.
#[test]
fn the_suite_passes_precision_and_weights_to_its_children() {
    let home = tempfile::tempdir().unwrap();
    let out_json = home.path().join("suite.json");
    let out = run(llmfs(home.path())
        .args(["bench", "--preset", "tiny", "--threads", "1", "--cases", "cls,decode"])
        .args(["--precision", "f16-mixed", "--dtype", "bf16", "--quantize", "nf4", "--quantize-double", "--json"])
        .arg(&out_json));
    assert!(out.status.success(), "{}", stderr(&out));
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    let results = &result["devices"]["cpu"]["results"];
    assert_eq!(results["finetune-cls"]["precision"], "f16-mixed");
    assert_eq!(results["generate"]["dtype"], "bf16");
    assert_eq!(results["generate"]["quantize"], "nf4-double");
    assert_eq!((&result["precision"], &result["dtype"], &result["quantize"]), (&json!("f16-mixed"), &json!("bf16"), &json!("nf4-double")));
    assert!(stdout(&out).contains("precision f16-mixed (forward, train, cls); weights bf16, nf4-double block projections (prefill, decode)"), "{}", stdout(&out));
}

#[test]
fn bad_suite_arguments_are_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let out = run(llmfs(home.path()).args(["bench", "--preset", "tiny", "--cases", "train,fly"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown case \"fly\""), "{}", stderr(&out));

    let out = run(llmfs(home.path()).args(["bench", "--preset", "huge"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown preset \"huge\""), "{}", stderr(&out));

    let not_a_baseline = home.path().join("other.json");
    std::fs::write(&not_a_baseline, r#"{"hello": 1}"#).unwrap();
    let out = run(llmfs(home.path()).args(["bench", "--preset", "tiny"]).arg("--compare").arg(&not_a_baseline));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("other.json is neither"), "{}", stderr(&out));

    // One benchmark takes one device.
    let out = run(llmfs(home.path()).args(["bench", "train-step", "--preset", "tiny", "--device", "cpu,cpu"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("runs on one --device"), "{}", stderr(&out));
}
