//! Speed benchmarks on the GPT-2 124M shape (random weights), run by `cargo bench` (benches/) and
//! by `llmfs bench`, on any compiled backend. Each returns one JSON object; the comparisons with
//! PyTorch are made by scripts/bench-*.sh (CPU) and scripts/gpu-check.sh (CUDA), which run the
//! baseline in the same script because only ratios measured together mean anything; `llmfs bench`
//! without a subcommand tabulates them against a saved baseline.

pub mod finetune_cls;
pub mod generate;
pub mod hellaswag;
pub mod train_step;

/// The model shape a benchmark runs (`--preset`; GPT-2 124M, `gpt2`, unless told), random weights.
pub fn preset_config(preset: &str) -> anyhow::Result<gpt::GptConfig> {
    gpt::GptConfig::preset(preset).ok_or_else(|| anyhow::anyhow!("unknown preset {preset:?}: expected one of {}", gpt::models::gpt2::PRESETS.join(", ")))
}

/// A result's `bench` name: `llmfs_{case}_gpt2_124m` for the default shape (the name the PyTorch
/// comparisons look for), `llmfs_{case}_{preset}` for another.
pub fn bench_name(case: &str, preset: &str) -> String {
    match preset {
        "gpt2" => format!("llmfs_{case}_gpt2_124m"),
        _ => format!("llmfs_{case}_{preset}"),
    }
}

/// The median of `xs` (the upper one for an even count); 0 for none.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// The process's peak resident memory (VmHWM), in MiB, where /proc has it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The value after `name` in a bench binary's arguments (`cargo bench --bench X -- --name value`).
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

/// What a bench binary does at the start: `--threads` (default 2) for the CPU backend, and the
/// `--device` (default cpu).
pub fn setup(args: &[String]) -> anyhow::Result<gpt::backend::DeviceSpec> {
    gpt::backend::set_cpu_threads(arg(args, "--threads").unwrap_or(2))?;
    let device = args.iter().position(|a| a == "--device").and_then(|i| args.get(i + 1));
    Ok(device.map(|d| d.parse()).transpose()?.unwrap_or(gpt::backend::DeviceSpec::Cpu))
}

/// Prints the result as one JSON line, and also writes it to `out` when given.
pub fn report(result: &serde_json::Value, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    println!("{result}");
    save(result, out)
}

/// Writes the result as one JSON line to `out` when given (atomically).
pub fn save(result: &serde_json::Value, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    if let Some(path) = out {
        gpt::io::write_atomic(path, (result.to_string() + "\n").as_bytes())?;
    }
    Ok(())
}
