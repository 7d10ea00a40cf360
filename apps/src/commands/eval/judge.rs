//! `llmfs eval judge`: score instruction responses 0-100 with an LLM judge.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, ensure};
use pipelines::eval::judge::{self, JudgeConfig, JudgeKind, default_report_path, judge_responses, write_report};
use pipelines::eval::responses::read_responses;

use crate::progress::counting_bar;

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum JudgeArg {
    Ollama,
    Openai,
}

#[derive(clap::Args, Debug)]
pub struct JudgeArgs {
    /// The responses file (records with `model_response`)
    #[arg(long)]
    pub responses: PathBuf,
    /// The judge's protocol: Ollama's /api/chat, or /v1/chat/completions
    #[arg(long, value_enum, default_value = "ollama")]
    pub judge: JudgeArg,
    /// The judge's base URL (default: http://localhost:11434 for ollama, https://api.openai.com for openai)
    #[arg(long)]
    pub judge_url: Option<String>,
    #[arg(long, default_value = judge::DEFAULT_MODEL)]
    pub judge_model: String,
    /// Requests in flight at once
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Bearer token for an OpenAI-compatible judge (never sent to Ollama)
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Longest wait for one reply, in seconds
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Retries after a timeout, a dropped connection or HTTP 5xx (exponential backoff from 1 s)
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Where to write the scores (default: eval/judge.json in --run-dir, else next to --responses)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A run directory: the report goes to its eval/judge.json
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Only the first N records
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the summary as JSON on stdout (the last line)
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: JudgeArgs) -> Result<()> {
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(args.timeout > 0.0 && args.timeout.is_finite(), "--timeout must be a positive number of seconds");
    let kind = match args.judge {
        JudgeArg::Ollama => JudgeKind::Ollama,
        JudgeArg::Openai => JudgeKind::OpenAi,
    };
    let mut records = read_responses(&args.responses)?;
    if let Some(limit) = args.limit {
        records.truncate(limit);
    }
    ensure!(!records.is_empty(), "{} has no records", args.responses.display());
    let config = JudgeConfig {
        url: args.judge_url.clone().unwrap_or_else(|| kind.default_url().to_string()),
        model: args.judge_model.clone(),
        api_key: if kind == JudgeKind::OpenAi { args.api_key.clone() } else { None },
        concurrency: args.concurrency,
        timeout: Duration::from_secs_f64(args.timeout),
        retries: args.retries,
        ..JudgeConfig::new(kind)
    };
    let out = args.out.clone().unwrap_or_else(|| default_report_path(&args.responses, args.run_dir.as_deref()));
    eprintln!("judging {} responses with {} ({kind} at {}), {} at a time", records.len(), config.model, config.url, config.concurrency);

    let progress = counting_bar(records.len(), "judging {pos}/{len} [{wide_bar}] eta {eta}");
    let mut report = judge_responses(&records, &config, |done, _| progress.set_position(done as u64))?;
    progress.finish_and_clear();
    report.responses = Some(args.responses.clone());
    write_report(&out, &report)?;

    eprintln!("wrote {} ({:.1}s)", out.display(), report.seconds);
    let mean = report.mean_score.map_or("-".to_string(), |m| format!("{m:.2}"));
    let line = format!("average score: {mean} ({} of {} replies scored, {} unparseable)", report.scored, report.n, report.unparseable);
    if args.json {
        eprintln!("{line}");
        println!("{}", report.summary());
    } else {
        println!("{line}");
    }
    Ok(())
}
