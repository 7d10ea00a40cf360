//! `llmfs bench` without a subcommand: the standard workloads on every chosen device, as one table
//! (and JSON), optionally next to a saved baseline (PyTorch's `../shared/bench/torch_baseline/`
//! JSON, or an earlier `llmfs bench --json`).
//!
//! Each workload runs in a child process (`llmfs bench train-step | finetune-cls | generate`), so
//! that its peak memory is its own and a GPU backend tunes its kernels afresh, as a user's job would.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{Context, Result, bail, ensure};
use gpt::DeviceSpec;
use pipelines::runs::WeightArgs;
use pipelines::train::precision::Precision;
use serde_json::{Value, json};

/// `--device`: one device, a comma-separated list (`cpu,tch-cpu`), or `all` (every compiled
/// backend; LibTorch's as `tch-cpu`).
#[derive(Debug, Clone)]
pub struct Devices(pub Vec<DeviceSpec>);

impl FromStr for Devices {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.trim() == "all" {
            let all = gpt::backend::compiled_backends().into_iter().map(|feature| match feature {
                "flex" => "cpu",
                // LibTorch on the CPU: its GPUs (tch-cuda[:N], tch-mps) are named one by one.
                "tch" => "tch-cpu",
                other => other,
            });
            return Ok(Self(all.map(|name| name.parse()).collect::<gpt::Result<_>>()?));
        }
        let devices = s.split(',').map(|name| name.parse()).collect::<gpt::Result<Vec<_>>>()?;
        ensure!(!devices.is_empty(), "--device names no device");
        Ok(Self(devices))
    }
}

impl Devices {
    /// The one device of a single benchmark.
    pub fn one(&self) -> Result<DeviceSpec> {
        match self.0.as_slice() {
            [device] => Ok(*device),
            _ => bail!("a single benchmark runs on one --device; `llmfs bench` without a subcommand takes several"),
        }
    }
}

/// A workload of the table: which child benchmark measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Inference forward pass over the training batch (measured by the train-step child).
    Forward,
    /// Forward + cross-entropy + backward + AdamW, B4×T256.
    Train,
    /// Classifier step B8×T120, last block + final norm + head.
    Cls,
    /// The 16-token prompt through the model (measured by the generate child).
    Prefill,
    /// 128 greedy new tokens with the KV cache.
    Decode,
}

impl FromStr for Case {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim() {
            "forward" => Self::Forward,
            "train" => Self::Train,
            "cls" => Self::Cls,
            "prefill" => Self::Prefill,
            "decode" => Self::Decode,
            other => bail!("unknown case {other:?}: expected forward, train, cls, prefill or decode"),
        })
    }
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Train => "train",
            Self::Cls => "cls",
            Self::Prefill => "prefill",
            Self::Decode => "decode",
        }
    }

    /// The `llmfs bench` subcommand that measures this case.
    fn child(self) -> &'static str {
        match self {
            Self::Forward | Self::Train => "train-step",
            Self::Cls => "finetune-cls",
            Self::Prefill | Self::Decode => "generate",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct SuiteArgs {
    /// Workloads, comma-separated: forward, train, cls, prefill, decode
    #[arg(long, value_delimiter = ',', default_value = "forward,train,cls,prefill,decode")]
    pub cases: Vec<Case>,
    /// Print ratios against this saved JSON: PyTorch's baseline (../shared/bench/torch_baseline/)
    /// or an earlier `llmfs bench --json`
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// The training workloads' (forward, train, cls) --precision: f32, bf16-mixed or f16-mixed
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// The decoding workloads' (prefill, decode) weights, as `bench generate`'s
    #[command(flatten)]
    pub weights: WeightArgs,
}

impl SuiteArgs {
    /// The flags of `child` that carry the suite's --precision, --dtype and --quantize.
    fn child_flags(&self, child: &str) -> Vec<String> {
        let mut flags = Vec::new();
        match child {
            "generate" => {
                flags.extend(["--dtype".to_string(), self.weights.dtype.to_string()]);
                if let Some(scheme) = self.weights.quantize.quantize {
                    let name = clap::ValueEnum::to_possible_value(&scheme).map(|v| v.get_name().to_string()).unwrap_or_default();
                    flags.extend(["--quantize".to_string(), name]);
                }
                if self.weights.quantize.quantize_double {
                    flags.push("--quantize-double".into());
                }
            }
            _ => flags.extend(["--precision".to_string(), self.precision.to_string()]),
        }
        flags
    }
}

/// One measured figure of the table.
struct Figure {
    case: Case,
    metric: &'static str,
    key: &'static str,
    value: f64,
    kind: Kind,
}

/// What a figure measures: its unit, and which way its ratio to a baseline reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// tokens/s: the speed-up is ours / theirs.
    Speed,
    /// seconds: the speed-up is theirs / ours.
    Time,
    /// MiB: ours as a fraction of theirs.
    Memory,
}

impl Kind {
    fn unit(self) -> &'static str {
        match self {
            Self::Speed => "tok/s",
            Self::Time => "s",
            Self::Memory => "MiB",
        }
    }

    /// The ratio of `ours` to the baseline's `theirs`, and how to read it.
    fn ratio(self, ours: f64, theirs: f64) -> (f64, &'static str) {
        match self {
            Self::Speed => (ours / theirs, "speed-up"),
            Self::Time => (theirs / ours, "speed-up"),
            Self::Memory => (ours / theirs, "of the baseline's memory"),
        }
    }
}

/// Whether a JSON document is an `llmfs bench --json` result.
fn is_suite(result: &Value) -> bool {
    result.get("bench").and_then(Value::as_str) == Some("llmfs_suite")
}

/// The figures of one device's child results, in table order.
fn figures(cases: &[Case], results: &serde_json::Map<String, Value>) -> Vec<Figure> {
    let get = |child: &str, path: &[&str]| path.iter().try_fold(results.get(child)?, |v, k| v.get(*k)).and_then(Value::as_f64);
    let mut out = Vec::new();
    let mut push = |case, metric, key, value: Option<f64>, kind| {
        if let Some(value) = value {
            out.push(Figure { case, metric, key, value, kind });
        }
    };
    for &case in cases {
        match case {
            Case::Forward => push(case, "tokens/s", "tokens_per_s", get("train-step", &["forward", "tokens_per_s"]), Kind::Speed),
            Case::Train => {
                push(case, "tokens/s", "tokens_per_s", get("train-step", &["tokens_per_s"]), Kind::Speed);
                push(case, "step", "step_s", get("train-step", &["step", "median_s"]), Kind::Time);
                push(case, "peak memory", "peak_rss_mib", get("train-step", &["peak_rss_mib"]), Kind::Memory);
            }
            Case::Cls => {
                push(case, "step", "step_s", get("finetune-cls", &["plain_step", "median_s"]), Kind::Time);
                push(case, "step, prefix cache", "cached_step_s", get("finetune-cls", &["cached_step", "median_s"]), Kind::Time);
                push(case, "peak memory", "peak_rss_mib", get("finetune-cls", &["peak_rss_mib"]), Kind::Memory);
            }
            Case::Prefill => push(case, "16 tokens + 1", "s", get("generate", &["prefill_16_tokens_plus_1_s"]), Kind::Time),
            Case::Decode => {
                push(case, "tokens/s", "tokens_per_s", get("generate", &["kv_cache", "tokens_per_s"]), Kind::Speed);
                push(case, "peak memory", "peak_rss_mib", get("generate", &["peak_rss_mib"]), Kind::Memory);
            }
        }
    }
    out
}

/// The baseline's value of a figure: in a suite JSON under `{case}.{key}`; in PyTorch's baseline
/// under its own names (`cls.step.median_s`, `infer.hf_generate_kv_cache.tokens_per_s`, …).
fn baseline_value(baseline: &Value, figure: &Figure) -> Option<f64> {
    let at = |path: &[&str]| path.iter().try_fold(baseline, |v, k| v.get(*k)).and_then(Value::as_f64);
    if is_suite(baseline) {
        return at(&[figure.case.name(), figure.key]);
    }
    match (figure.case, figure.key) {
        (Case::Train, "tokens_per_s") => at(&["train", "tokens_per_s"]),
        (Case::Train, "step_s") => at(&["train", "step", "median_s"]),
        (Case::Train, "peak_rss_mib") => at(&["train", "peak_rss_mib"]),
        (Case::Cls, "step_s") => at(&["cls", "step", "median_s"]),
        (Case::Cls, "peak_rss_mib") => at(&["cls", "peak_rss_mib"]),
        (Case::Prefill, "s") => at(&["infer", "prefill_16_tokens", "median_s"]),
        (Case::Decode, "tokens_per_s") => at(&["infer", "hf_generate_kv_cache", "tokens_per_s"]),
        (Case::Decode, "peak_rss_mib") => at(&["infer", "peak_rss_mib"]),
        _ => None,
    }
}

/// The model shape a baseline measured: a suite's `preset`; PyTorch's baselines are GPT-2 124M.
fn baseline_preset(baseline: &Value) -> Option<&str> {
    if is_suite(baseline) {
        return baseline.get("preset").and_then(Value::as_str);
    }
    baseline.get("bench").and_then(Value::as_str).filter(|name| name.ends_with("gpt2_124m")).map(|_| "gpt2")
}

/// Reads a baseline JSON and checks that it is one of the two known kinds.
fn read_baseline(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the baseline {}", path.display()))?;
    let baseline: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let suite = is_suite(&baseline);
    let torch = baseline.get("train").is_some() || baseline.get("infer").is_some() || baseline.get("cls").is_some();
    ensure!(
        suite || torch,
        "{} is neither an `llmfs bench --json` result (bench: llmfs_suite) nor a PyTorch baseline (train / cls / infer)",
        path.display()
    );
    Ok(baseline)
}

/// Runs one child benchmark and returns its JSON.
fn run_child(child: &str, flags: &[String], device: DeviceSpec, preset: &str, threads: Option<usize>, scratch: &Path) -> Result<Value> {
    let out = scratch.join(format!("{child}-{}.json", device.to_string().replace(':', "_")));
    let mut cmd = Command::new(std::env::current_exe().context("finding the llmfs binary")?);
    cmd.args(["bench", child, "--device", &device.to_string(), "--preset", preset, "--out"]).arg(&out).args(flags);
    if let Some(threads) = threads {
        cmd.args(["--threads", &threads.to_string()]);
    }
    eprintln!("llmfs bench {child} --device {device} --preset {preset} {} …", flags.join(" "));
    let output = cmd.output().with_context(|| format!("starting `llmfs bench {child}`"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no output)");
        bail!("`llmfs bench {child} --device {device}` failed ({}): {last}", output.status);
    }
    let text = std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", out.display()))
}

/// Runs the suite, prints the table and returns the JSON (with `train`, `cls`, `decode`, … of the
/// first device at the top level).
pub fn run(args: &SuiteArgs, devices: &Devices, preset: &str, threads: Option<usize>) -> Result<Value> {
    ensure!(!args.cases.is_empty(), "--cases names no workload");
    pipelines::bench::preset_config(preset)?;
    // Every device first: one this build lacks would otherwise fail only after the others ran.
    for &device in &devices.0 {
        device.resolve().with_context(|| format!("--device {device}"))?;
    }
    let baseline = args.compare.as_deref().map(read_baseline).transpose()?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let mut children: Vec<&str> = args.cases.iter().map(|c| c.child()).collect();
    children.sort_unstable();
    children.dedup();

    let mut per_device = serde_json::Map::new();
    let mut table = String::new();
    let quantized = match args.weights.quantize.describe() {
        Value::String(scheme) => format!(", {scheme} block projections"),
        _ => String::new(),
    };
    let _ = writeln!(table, "precision {} (forward, train, cls); weights {}{quantized} (prefill, decode)", args.precision, args.weights.dtype);
    let mut failures = Vec::new();
    for &device in &devices.0 {
        let mut results = serde_json::Map::new();
        for child in &children {
            match run_child(child, &args.child_flags(child), device, preset, threads, scratch.path()) {
                Ok(result) => {
                    results.insert((*child).into(), result);
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    failures.push(format!("{e:#}"));
                }
            }
        }
        let figures = figures(&args.cases, &results);
        let child_threads = results.values().find_map(|r| r.get("threads").and_then(Value::as_u64));
        let mut summary = serde_json::Map::new();
        for figure in &figures {
            let case = summary.entry(figure.case.name()).or_insert_with(|| json!({}));
            case[figure.key] = json!(figure.value);
        }
        write_rows(&mut table, device, child_threads, &figures, baseline.as_ref());
        summary.insert("threads".into(), json!(child_threads));
        summary.insert("results".into(), Value::Object(results));
        per_device.insert(device.to_string(), Value::Object(summary));
    }
    print!("{table}");
    if let Some(baseline) = &baseline {
        let their_threads = baseline.get("threads").and_then(Value::as_u64);
        let ours = per_device.values().find_map(|d| d.get("threads").and_then(Value::as_u64));
        if let (Some(theirs), Some(ours)) = (their_threads, ours)
            && theirs != ours
        {
            println!("note: the baseline ran on {theirs} threads, llmfs on {ours}: pass --threads {theirs} for a like-for-like ratio");
        }
        if let Some(theirs) = baseline_preset(baseline)
            && theirs != preset
        {
            println!("note: the baseline measured the {theirs} shape, llmfs {preset}: the ratios compare different workloads");
        }
    }

    let mut result = json!({
        "bench": "llmfs_suite", "preset": preset,
        "cases": args.cases.iter().map(|c| c.name()).collect::<Vec<_>>(),
        "precision": args.precision.to_string(), "dtype": args.weights.dtype, "quantize": args.weights.quantize.describe(),
        "devices": per_device.clone(),
    });
    if let Some(first) = devices.0.first().and_then(|d| per_device.get(&d.to_string())) {
        result["threads"] = first["threads"].clone();
        for case in &args.cases {
            if let Some(figures) = first.get(case.name()) {
                result[case.name()] = figures.clone();
            }
        }
    }
    ensure!(failures.is_empty(), "{} of the benchmarks failed: {}", failures.len(), failures.join("; "));
    Ok(result)
}

/// The table's rows for one device: value, and with a baseline its value and the ratio
/// (speed-up for speeds and times: > 1 is llmfs faster; memory: < 1 is llmfs smaller).
fn write_rows(table: &mut String, device: DeviceSpec, threads: Option<u64>, figures: &[Figure], baseline: Option<&Value>) {
    let threads = threads.map_or(String::new(), |t| format!(", {t} thread{}", if t == 1 { "" } else { "s" }));
    let _ = writeln!(table, "{device}{threads}");
    if baseline.is_some() {
        let _ = writeln!(table, "  {:<8} {:<20} {:>12} {:>12}  ratio", "case", "metric", "llmfs", "baseline");
    } else {
        let _ = writeln!(table, "  {:<8} {:<20} {:>12}", "case", "metric", "llmfs");
    }
    for f in figures {
        let value = format!("{} {}", fmt_value(f.value), f.kind.unit());
        let mut line = format!("  {:<8} {:<20} {:>12}", f.case.name(), f.metric, value);
        if let Some(base) = baseline.and_then(|b| baseline_value(b, f)).filter(|b| *b > 0.0) {
            let (ratio, reading) = f.kind.ratio(f.value, base);
            let _ = write!(line, " {:>12}  {ratio:.2}x {reading}", format!("{} {}", fmt_value(base), f.kind.unit()));
        }
        let _ = writeln!(table, "{line}");
    }
}

/// Four significant digits, without an exponent for the figures at hand.
fn fmt_value(v: f64) -> String {
    match v.abs() {
        x if x >= 1000.0 => format!("{v:.0}"),
        x if x >= 100.0 => format!("{v:.1}"),
        x if x >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.4}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_lists_and_all() {
        let two: Devices = "cpu,cuda:1".parse().unwrap();
        assert_eq!(two.0, vec![DeviceSpec::Cpu, DeviceSpec::Cuda(1)]);
        assert!(two.one().is_err());
        assert_eq!("cpu".parse::<Devices>().unwrap().one().unwrap(), DeviceSpec::Cpu);
        let all: Devices = "all".parse().unwrap();
        assert!(all.0.contains(&DeviceSpec::Cpu), "{:?}", all.0);
        assert!("cpu,tpu".parse::<Devices>().is_err());
        let tch: Devices = "cpu,tch-cpu,tch-cuda:1".parse().unwrap();
        assert_eq!(tch.0, vec![DeviceSpec::Cpu, DeviceSpec::TchCpu, DeviceSpec::TchCuda(1)]);
        assert_eq!(all.0.contains(&DeviceSpec::TchCpu), cfg!(feature = "tch"), "{:?}", all.0);
    }

    #[test]
    fn torch_baseline_values_are_found_under_their_own_names() {
        let torch = json!({"threads": 2, "train": {"tokens_per_s": 176.4, "peak_rss_mib": 6225.0, "step": {"median_s": 5.8}},
                           "cls": {"step": {"median_s": 1.2}}, "infer": {"hf_generate_kv_cache": {"tokens_per_s": 25.8}}});
        let figure = |case, key, kind| Figure { case, metric: "", key, value: 1.0, kind };
        assert_eq!(baseline_value(&torch, &figure(Case::Train, "tokens_per_s", Kind::Speed)), Some(176.4));
        assert_eq!(baseline_value(&torch, &figure(Case::Cls, "step_s", Kind::Time)), Some(1.2));
        assert_eq!(baseline_value(&torch, &figure(Case::Decode, "tokens_per_s", Kind::Speed)), Some(25.8));
        assert_eq!(baseline_value(&torch, &figure(Case::Forward, "tokens_per_s", Kind::Speed)), None);
        let suite = json!({"bench": "llmfs_suite", "cls": {"step_s": 0.9}});
        assert_eq!(baseline_value(&suite, &figure(Case::Cls, "step_s", Kind::Time)), Some(0.9));
    }
}
