//! `llmfs eval <task>`: evaluate a model or a run. One subcommand per task, one file each; each
//! prints a summary on stderr and, with `--json`, its result as the last line of stdout.

mod classify;
mod hellaswag;
mod judge;
mod perplexity;
mod spam;
pub mod tasks;
mod text;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub task: Task,
}

/// The evaluations `eval` knows.
#[derive(clap::Subcommand, Debug)]
pub enum Task {
    /// HellaSwag as build-nanogpt scores it: acc (lowest summed ending loss) and acc_norm (lowest
    /// mean loss per token).
    Hellaswag(hellaswag::HellaswagArgs),
    /// A fine-tuned classifier on a labelled split (Label,Text CSV): accuracy, loss, confusion matrix.
    Spam(spam::SpamArgs),
    /// A fine-tuned classifier on any labelled CSV / TSV / JSONL / JSON file: accuracy, macro-F1,
    /// per-class precision / recall / F1, confusion matrix.
    Classify(classify::ClassifyArgs),
    /// Score model responses (from `llmfs generate-responses`) 0-100 with an LLM judge: Ollama
    /// (llama3.1 by default) or any OpenAI-compatible server.
    Judge(judge::JudgeArgs),
    /// Reference-based scores of model responses: ROUGE-1/2/L/Lsum (as rouge-score), corpus BLEU
    /// and chrF (as sacrebleu), exact match; per-record scores in a report file.
    Text(text::TextArgs),
    /// Token-level perplexity and bits per byte of a text (a .txt file, a data source's text column
    /// or GPT-2 token shards), by Hugging Face's strided sliding window.
    Perplexity(perplexity::PerplexityArgs),
    /// lm-evaluation-harness's loglikelihood tasks (arc_easy, arc_challenge, openbookqa, piqa,
    /// winogrande, lambada_openai, hellaswag) with its prompts, acc / acc_norm / perplexity and
    /// standard errors; results in lm-eval's JSON schema.
    Tasks(tasks::TasksArgs),
}

pub fn run(args: Args) -> Result<()> {
    match args.task {
        Task::Hellaswag(args) => hellaswag::run(args),
        Task::Spam(args) => spam::run(args),
        Task::Classify(args) => classify::run(args),
        Task::Judge(args) => judge::run(args),
        Task::Text(args) => text::run(args),
        Task::Perplexity(args) => perplexity::run(args),
        Task::Tasks(args) => tasks::run(args),
    }
}
