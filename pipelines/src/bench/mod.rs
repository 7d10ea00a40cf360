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

/// A seeded random model of a preset's shape, of any family (`gpt2`, `smollm2-135m`, `qwen3-0.6b` ...).
pub fn preset_model(preset: &str, device: &gpt::burn::prelude::Device) -> anyhow::Result<gpt::models::LanguageModel> {
    Ok(gpt::hf::load_language_model(&format!("random:{preset}"), device, 0)?)
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

/// Starts the peak resident memory (VmHWM) afresh from what the process holds now, after giving
/// the memory freed so far back to the OS (mimalloc keeps it for minutes): from here on
/// [`peak_rss_mib`] is a phase's own peak, not the load's. Returns the peak before the reset,
/// `None` where /proc cannot reset it (the peak then stays the process's).
pub fn reset_peak_rss() -> Option<f64> {
    let before = peak_rss_mib();
    gpt::backend::allocator::release_freed_memory();
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    before
}

/// The flags every benchmark takes, in `llmfs bench` and in the `cargo bench` binaries.
#[derive(clap::Args, Debug, Clone)]
pub struct SharedArgs {
    /// Model shape: gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl, mini or tiny (random weights);
    /// generate and train-step also take smollm2-135m, smollm2-360m, qwen3-0.6b, llama-3.2-1b
    #[arg(long, default_value = "gpt2", global = true)]
    pub preset: String,
    /// CPU threads for the CPU backend (default: all cores)
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Also write the JSON result to this file
    #[arg(long, visible_alias = "json", global = true)]
    pub out: Option<std::path::PathBuf>,
}

/// A `cargo bench` binary's command line: `cargo bench --bench NAME -- [--device D] [shared
/// flags] [the workload's flags]`.
#[derive(clap::Parser, Debug)]
pub struct BenchCli<O: clap::Args> {
    /// auto, cpu, cuda, cuda:N, wgpu, vulkan or metal
    #[arg(long, default_value = "cpu")]
    pub device: gpt::backend::DeviceSpec,
    #[command(flatten)]
    pub shared: SharedArgs,
    #[command(flatten)]
    pub options: O,
    /// Passed by `cargo bench` itself.
    #[arg(long, hide = true)]
    pub bench: bool,
}

impl<O: clap::Args> BenchCli<O> {
    /// Sets the CPU threads (when given) and returns the device.
    pub fn setup(&self) -> anyhow::Result<gpt::backend::DeviceSpec> {
        gpt::backend::set_cpu_threads(self.shared.threads)?;
        Ok(self.device)
    }
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn bench_command_lines_parse_with_their_defaults_and_refuse_bad_values() {
        let cli = BenchCli::<train_step::Options>::try_parse_from(["train_step", "--bench", "--threads", "1", "--batch", "8"]).unwrap();
        assert_eq!((cli.shared.threads, cli.options.batch, cli.options.seq_len, cli.shared.preset.as_str()), (Some(1), 8, 256, "gpt2"));
        assert_eq!(cli.device, gpt::backend::DeviceSpec::Cpu);
        let cli = BenchCli::<generate::Options>::try_parse_from(["generate", "--no-cache", "--preset", "tiny", "--out", "x.json"]).unwrap();
        assert!(cli.options.no_cache && cli.options.reps == 3 && cli.shared.preset == "tiny");
        assert_eq!(cli.shared.out.as_deref(), Some(std::path::Path::new("x.json")));
        let cli = BenchCli::<finetune_cls::Options>::try_parse_from(["finetune_cls", "--device", "cuda:1", "--steps", "2"]).unwrap();
        assert_eq!((cli.device, cli.options.steps), (gpt::backend::DeviceSpec::Cuda(1), 2));
        // What the hand-written parser silently dropped is an error now.
        assert!(BenchCli::<train_step::Options>::try_parse_from(["train_step", "--batch", "four"]).is_err());
        assert!(BenchCli::<generate::Options>::try_parse_from(["generate", "--device", "tpu"]).is_err());
        assert!(BenchCli::<generate::Options>::try_parse_from(["generate", "--batchh", "2"]).is_err());
    }
}
