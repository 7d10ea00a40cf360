//! `llmfs eval tasks --model M --tasks arc_easy,piqa,…`: lm-evaluation-harness's loglikelihood
//! tasks (pipelines::eval::tasks), with its prompts, metrics and standard errors; the results
//! table on stdout and, with `--json FILE`, lm-eval's results file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use gpt::io::HubOptions;
use pipelines::eval::hellaswag::default_batch_size;
use pipelines::eval::tasks::hook::EvalTasks;
use pipelines::eval::tasks::mmlu::{self, DEFAULT_FEWSHOT};
use pipelines::eval::tasks::{self, Aggregate, BOOTSTRAP_ITERS, Fewshot, GroupResult, RunInfo, Task, TaskResult, aggregate_samples, evaluate_fewshot, results_json};
use pipelines::runs::ModelRef;

use crate::progress::counting_bar;
use crate::runtime::RuntimeArgs;
use pipelines::runs::WeightArgs;

#[derive(clap::Args, Debug)]
pub struct TasksArgs {
    /// A preset/hub id (gpt2), a local HF-format directory, a run directory, or random:<preset>
    #[arg(long)]
    pub model: String,
    /// Comma-separated tasks: arc_easy, arc_challenge, openbookqa, piqa, winogrande, lambada_openai,
    /// hellaswag, mmlu (its 57 subjects and groups), mmlu_stem / mmlu_humanities / mmlu_social_sciences /
    /// mmlu_other, mmlu_<subject>
    #[arg(long, value_delimiter = ',', required = true)]
    pub tasks: Vec<String>,
    /// Examples in each prompt before the question, as lm-eval picks them: MMLU the first K of its
    /// dev split (default 5); the others K drawn with lm-eval's seed from their train split
    /// (LAMBADA: its test split) for each doc (default 0, lm-eval's)
    #[arg(long)]
    pub num_fewshot: Option<usize>,
    /// Evaluate only the first N docs of each task (lm-eval's --limit)
    #[arg(long)]
    pub limit: Option<usize>,
    /// Read each task from DIR/<task>/ (a directory of split files: test.jsonl, validation.parquet …;
    /// MMLU's DIR/mmlu_<subject>/ also dev.*) instead of its Hugging Face data set
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
    pub weights: WeightArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: TasksArgs) -> Result<()> {
    ensure!(args.batch_size != Some(0), "--batch-size must be at least 1");
    ensure!(args.limit != Some(0), "--limit must be at least 1");
    let mut chosen: Vec<&'static Task> = Vec::new();
    let mut groups: Vec<(&'static str, Vec<&'static Task>)> = Vec::new();
    for name in &args.tasks {
        let name = name.trim();
        for task in tasks::tasks_named(name)? {
            if !chosen.iter().any(|t| t.name == task.name) {
                chosen.push(task);
            }
        }
        for group in mmlu::groups_named(name) {
            if !groups.iter().any(|(g, _)| *g == group.0) {
                groups.push(group);
            }
        }
    }
    // The data first: a bad task or data directory fails before a model download.
    let options = HubOptions::from_env();
    let data_dir_context = |e: anyhow::Error| if args.data_dir.is_some() { e.context("--data-dir") } else { e };
    let mut data = Vec::with_capacity(chosen.len());
    for &task in &chosen {
        let default = if mmlu::category(task).is_some() { DEFAULT_FEWSHOT } else { 0 };
        let k = args.num_fewshot.unwrap_or(default);
        let examples = if k > 0 { tasks::read_fewshot(task, args.data_dir.as_deref(), &options).map_err(data_dir_context)? } else { Vec::new() };
        let fewshot = Fewshot::new(task, examples, k).context("--num-fewshot")?;
        let (records, original) = tasks::read_task(task, args.data_dir.as_deref(), args.limit, &options).map_err(data_dir_context)?;
        data.push((task, k, fewshot, records, original));
    }

    let device = args.runtime.device()?;
    let model_ref = ModelRef::resolve(&args.model);
    let tokenizer = model_ref.tokenizer()?;
    let load_start = Instant::now();
    let model = args.weights.load(&model_ref, &device, args.runtime.seed)?;
    eprintln!("loaded {} on {device:?} in {:.1}s", args.model, load_start.elapsed().as_secs_f64());
    let batch_size = args.batch_size.unwrap_or_else(|| default_batch_size(&device));

    let start = Instant::now();
    let mut results = Vec::with_capacity(data.len());
    for (task, k, fewshot, records, original) in &mut data {
        let progress = counting_bar(records.len(), &format!("{} {{pos}}/{{len}} docs [{{wide_bar}}] {{per_sec}} eta {{eta}}", task.name));
        let task_start = Instant::now();
        let samples = evaluate_fewshot(&model, &tokenizer, task, fewshot, records, batch_size, |done| progress.set_position(done as u64))
            .with_context(|| format!("evaluating {} on {}", args.model, task.name))?;
        progress.finish_and_clear();
        let seconds = task_start.elapsed().as_secs_f64();
        eprintln!("{}: {} docs in {seconds:.1}s ({:.1} docs/s)", task.name, samples.len(), samples.len() as f64 / seconds.max(1e-9));
        let aggregates = aggregate_samples(task, &samples, BOOTSTRAP_ITERS);
        results.push(TaskResult { task, original: *original, effective: samples.len(), num_fewshot: *k, aggregates });
    }
    let groups: Vec<GroupResult> =
        groups.into_iter().filter_map(|(name, members)| GroupResult::of(name, mmlu::group_subtasks(name), &members, &results)).collect();
    print_table(&results, &groups);
    if let Some(path) = &args.json {
        let run = RunInfo {
            model: args.model.clone(),
            batch_size,
            device: format!("{device:?}"),
            limit: args.limit,
            num_fewshot: args.num_fewshot,
            seconds: start.elapsed().as_secs_f64(),
        };
        let text = serde_json::to_string_pretty(&results_json(&results, &groups, &run))?;
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

/// lm-eval's results table, then its groups table when groups were evaluated.
fn print_table(results: &[TaskResult], groups: &[GroupResult]) {
    println!("|     Tasks      |Version|Filter|n-shot|  Metric  |   |  Value   |   |  Stderr  |");
    println!("|----------------|------:|------|-----:|----------|---|---------:|---|---------:|");
    for result in results {
        print_rows(result.task.name, &format!("{}", result.task.version), &result.num_fewshot.to_string(), &result.aggregates);
    }
    if !groups.is_empty() {
        println!();
        println!("|     Groups     |Version|Filter|n-shot|  Metric  |   |  Value   |   |  Stderr  |");
        println!("|----------------|------:|------|-----:|----------|---|---------:|---|---------:|");
        for group in groups {
            print_rows(group.name, "2", "", &group.aggregates);
        }
    }
}

/// A task's or group's rows: one per metric, the name on the first.
fn print_rows(name: &str, version: &str, n_shot: &str, aggregates: &[Aggregate]) {
    for (i, Aggregate { metric, value, stderr }) in aggregates.iter().enumerate() {
        let (name, version, n_shot) = if i == 0 { (name, version, n_shot) } else { ("", "", "") };
        let arrow = if *metric == "perplexity" { "↓" } else { "↑" };
        let stderr = stderr.map_or("N/A".to_string(), |s| format!("{s:.4}"));
        println!("|{name:<16}|{version:>7}|none  |{n_shot:>6}|{metric:<10}|{arrow}  |{value:>10.4}|±  |{stderr:>10}|");
    }
}
