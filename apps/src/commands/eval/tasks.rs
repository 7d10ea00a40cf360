//! `llmfs eval tasks --model M --tasks arc_easy,piqa,…`: lm-evaluation-harness's loglikelihood
//! tasks (pipelines::eval::tasks), with its prompts, metrics and standard errors; the results
//! table on stdout and, with `--json FILE`, lm-eval's results file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use gpt::io::HubOptions;
use pipelines::eval::hellaswag::default_batch_size;
use pipelines::eval::tasks::hook::EvalTasks;
use pipelines::eval::tasks::{self, Aggregate, BOOTSTRAP_ITERS, RunInfo, Task, TaskResult, aggregate_samples, evaluate, results_json};
use pipelines::runs::ModelRef;

use crate::progress::counting_bar;
use crate::runtime::RuntimeArgs;

#[derive(clap::Args, Debug)]
pub struct TasksArgs {
    /// A preset/hub id (gpt2), a local HF-format directory, a run directory, or random:<preset>
    #[arg(long)]
    pub model: String,
    /// Comma-separated tasks: arc_easy, arc_challenge, openbookqa, piqa, winogrande, lambada_openai, hellaswag
    #[arg(long, value_delimiter = ',', required = true)]
    pub tasks: Vec<String>,
    /// Examples in each prompt before the question (only 0, lm-eval's default for these tasks, so far)
    #[arg(long, default_value_t = 0)]
    pub num_fewshot: usize,
    /// Evaluate only the first N docs of each task (lm-eval's --limit)
    #[arg(long)]
    pub limit: Option<usize>,
    /// Read each task from DIR/<task>/ (a directory of split files: test.jsonl, validation.parquet …)
    /// instead of its Hugging Face data set
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Docs (each context with its continuations) per forward pass (default: 1 on the CPU, 8 on a
    /// GPU); the scores do not depend on it
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Write the results in lm-eval's schema ({"results": {task: {"acc,none": …}}, "n-shot", "configs", …})
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: TasksArgs) -> Result<()> {
    ensure!(args.batch_size != Some(0), "--batch-size must be at least 1");
    ensure!(args.limit != Some(0), "--limit must be at least 1");
    if args.num_fewshot != 0 {
        bail!("--num-fewshot {}: few-shot prompts are not implemented yet (0-shot is lm-eval's default for these tasks)", args.num_fewshot);
    }
    let mut chosen: Vec<&'static Task> = Vec::new();
    for name in &args.tasks {
        let task = tasks::task(name.trim())?;
        if !chosen.iter().any(|t| t.name == task.name) {
            chosen.push(task);
        }
    }
    // The data first: a bad task or data directory fails before a model download.
    let options = HubOptions::from_env();
    let mut data = Vec::with_capacity(chosen.len());
    for &task in &chosen {
        let (records, original) = tasks::read_task(task, args.data_dir.as_deref(), args.limit, &options).map_err(|e| if args.data_dir.is_some() { e.context("--data-dir") } else { e })?;
        data.push((task, records, original));
    }

    let device = args.runtime.device()?;
    let model_ref = ModelRef::resolve(&args.model);
    let tokenizer = model_ref.tokenizer()?;
    let load_start = Instant::now();
    let model = model_ref.load_language_model(&device, args.runtime.seed)?;
    eprintln!("loaded {} on {device:?} in {:.1}s", args.model, load_start.elapsed().as_secs_f64());
    let batch_size = args.batch_size.unwrap_or_else(|| default_batch_size(&device));

    let start = Instant::now();
    let mut results = Vec::with_capacity(data.len());
    for (task, records, original) in &data {
        let progress = counting_bar(records.len(), &format!("{} {{pos}}/{{len}} docs [{{wide_bar}}] {{per_sec}} eta {{eta}}", task.name));
        let task_start = Instant::now();
        let samples = evaluate(&model, &tokenizer, task, records, batch_size, |done| progress.set_position(done as u64))
            .with_context(|| format!("evaluating {} on {}", args.model, task.name))?;
        progress.finish_and_clear();
        let seconds = task_start.elapsed().as_secs_f64();
        eprintln!("{}: {} docs in {seconds:.1}s ({:.1} docs/s)", task.name, samples.len(), samples.len() as f64 / seconds.max(1e-9));
        let aggregates = aggregate_samples(task, &samples, BOOTSTRAP_ITERS);
        results.push(TaskResult { task, original: *original, effective: samples.len(), aggregates });
    }
    print_table(&results);
    if let Some(path) = &args.json {
        let run = RunInfo {
            model: args.model.clone(),
            batch_size,
            device: format!("{device:?}"),
            limit: args.limit,
            seconds: start.elapsed().as_secs_f64(),
        };
        let text = serde_json::to_string_pretty(&results_json(&results, &run))?;
        gpt::io::files::write_atomic(path, format!("{text}\n").as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

/// Benchmark tasks during `pretrain` and `finetune instruct`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EvalTasksArgs {
    /// Score these tasks (comma-separated, as `llmfs eval tasks`) at each epoch's end and every
    /// --eval-tasks-every steps; their acc / acc_norm go to metrics.jsonl as events named after the task
    #[arg(long)]
    pub eval_tasks: Option<String>,
    #[arg(long, requires = "eval_tasks")]
    pub eval_tasks_every: Option<usize>,
    /// The first N docs of each task
    #[arg(long, default_value_t = 200)]
    pub eval_tasks_limit: usize,
    /// Local split files of the tasks, DIR/<task>/ (as `eval tasks --data-dir`)
    #[arg(long, requires = "eval_tasks")]
    pub eval_tasks_data_dir: Option<PathBuf>,
}

impl EvalTasksArgs {
    /// The tasks' docs, read before training starts.
    pub fn read(&self) -> Result<EvalTasks> {
        ensure!(self.eval_tasks_limit > 0, "--eval-tasks-limit must be at least 1");
        match &self.eval_tasks {
            None => Ok(EvalTasks::default()),
            Some(names) => EvalTasks::read(names, self.eval_tasks_every, self.eval_tasks_data_dir.as_deref(), Some(self.eval_tasks_limit)),
        }
    }
}

/// lm-eval's results table.
fn print_table(results: &[TaskResult]) {
    println!("|     Tasks      |Version|Filter|n-shot|  Metric  |   |  Value   |   |  Stderr  |");
    println!("|----------------|------:|------|-----:|----------|---|---------:|---|---------:|");
    for result in results {
        for (i, Aggregate { metric, value, stderr }) in result.aggregates.iter().enumerate() {
            let (name, version) = if i == 0 { (result.task.name, format!("{}", result.task.version)) } else { ("", String::new()) };
            let arrow = if *metric == "perplexity" { "↓" } else { "↑" };
            let stderr = stderr.map_or("N/A".to_string(), |s| format!("{s:.4}"));
            println!("|{name:<16}|{version:>7}|none  |{:>6}|{metric:<10}|{arrow}  |{value:>10.4}|±  |{stderr:>10}|", if i == 0 { "0" } else { "" });
        }
    }
}
