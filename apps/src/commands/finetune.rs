//! `llmfs finetune spam|...`: fine-tune a pretrained model on a task.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use gpt::{LoraConfig, LoraTargets, Trainable};
use pipelines::data::conversation::find_test_split;
use pipelines::data::instruction::{self, CollateConfig};
use gpt::io::HubOptions;
use pipelines::data::source::DataSource;
use pipelines::data::{labelled, spam};
use pipelines::finetune::{
    ClassifierData, ClassifierFinetune, InstructionFinetune, LanguageModelJob, LoraFinetune, finetune_classifier, finetune_instruction,
};
use pipelines::runs::QuantizeArgs;
use pipelines::train::{LrSchedule, OptimConfig, Precision, TrainConfig};

use crate::commands::eval::tasks::EvalTasksArgs;
use crate::commands::track::TrackArgs;
use crate::runtime::RuntimeArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub task: Task,
}

#[derive(clap::Subcommand, Debug)]
pub enum Task {
    /// SMS spam classification (Build a LLM From Scratch, ch. 6): a 2-class head on the last
    /// token, the last block + final norm + head trained by default.
    Spam(SpamArgs),
    /// Any text classification: labelled texts from a CSV / TSV / JSONL / JSON file (any number of
    /// classes), split stratified unless --validation and --test are given; the spam task's head and training.
    Classify(ClassifyArgs),
    /// Instruction following (Build a LLM From Scratch, ch. 7): Alpaca-style records or chat
    /// conversations (OpenAI / ShareGPT JSONL), the whole model trained on prompt + response (chat:
    /// the assistant turns); after each epoch a sample response in samples.jsonl.
    Instruct(InstructArgs),
}

/// Defaults that differ between tasks (the book's chapters 6 and 7).
#[derive(Clone, Copy, Debug)]
pub struct TaskDefaults {
    pub epochs: usize,
    pub eval_every: usize,
}

/// Training flags every fine-tuning task shares.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Passes over the training data (default: 5 for spam, 2 for instruct, as in the book)
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Peak learning rate (AdamW)
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Decay every parameter, biases/LayerNorm/embeddings too (PyTorch's AdamW over model.parameters())
    #[arg(long)]
    pub decay_all: bool,
    /// Linear warmup over this many steps, then cosine decay to --min-lr-ratio · lr (default: constant LR)
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    /// Clip the global gradient norm to this
    #[arg(long)]
    pub grad_clip: Option<f64>,
    /// Optimizer step every N batches
    #[arg(long, default_value_t = 1)]
    pub grad_accumulation: usize,
    /// Evaluate every N optimizer steps on --eval-batches batches (default: 50 for spam, 5 for instruct)
    #[arg(long)]
    pub eval_every: Option<usize>,
    #[arg(long, default_value_t = 5)]
    pub eval_batches: usize,
    /// Also checkpoint every N steps (always at the end of each epoch)
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Stop after N optimizer steps (with a checkpoint; --resume continues)
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Continue the run in --run-dir from its last checkpoint
    #[arg(long)]
    pub resume: bool,
    /// Matrix products in f32, bf16-mixed (bf16 inputs, f32 accumulation; f32 weights and
    /// optimizer state: the CPU's AVX512-BF16 kernels), or f16-mixed (f16 inputs, emulated on
    /// the CPU, with dynamic loss scaling as torch.amp.GradScaler)
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Under `mpirun` or with --devices: seconds a rank waits for the others in a collective before every rank stops
    #[arg(long, default_value_t = pipelines::distributed::DEFAULT_TIMEOUT.as_secs())]
    pub collective_timeout: u64,
    /// Data-parallel on several devices of this process, one rank (thread) each, e.g.
    /// cuda:0,cuda:1 (in place of --device): as under mpirun, --batch-size is each rank's
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<gpt::DeviceSpec>,
    /// Plain one-line progress even in a terminal (no dashboard)
    #[arg(long)]
    pub plain: bool,
    /// Print the final report as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tracking: TrackArgs,
}

impl TrainArgs {
    /// The training configuration, with the task's defaults for what was not given.
    pub fn config(&self, seed: u64, defaults: TaskDefaults) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs.unwrap_or(defaults.epochs),
            batch_size: self.batch_size,
            seed,
            optim: OptimConfig {
                lr: self.lr,
                weight_decay: self.weight_decay,
                decay_all: self.decay_all,
                schedule: match self.warmup_steps {
                    Some(warmup_steps) => LrSchedule::WarmupCosine { warmup_steps, min_lr_ratio: self.min_lr_ratio },
                    None => LrSchedule::Constant,
                },
                grad_clip: self.grad_clip,
                ..OptimConfig::default()
            },
            grad_accumulation: self.grad_accumulation,
            eval_every: Some(self.eval_every.unwrap_or(defaults.eval_every)),
            eval_batches: self.eval_batches,
            checkpoint_every: self.checkpoint_every,
            drop_last: true,
            stop_after_steps: self.max_steps,
            precision: self.precision,
            ..TrainConfig::default()
        }
    }

    /// The dashboard in a terminal, plain lines otherwise (CI, pipes) or with --plain.
    pub fn dashboard(&self) -> bool {
        wants_dashboard(self.plain)
    }
}

/// burn-train's dashboard when stdout is a terminal outside CI and `--plain` was not given; plain
/// lines otherwise (what every training command does).
pub fn wants_dashboard(plain: bool) -> bool {
    !plain && std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("CI").is_none()
}

#[derive(clap::Args, Debug, Clone)]
pub struct SpamArgs {
    /// A preset/hub id (gpt2, gpt2-medium, ...), an HF-format directory, a run directory or random:<preset>
    #[arg(long, default_value = "gpt2")]
    pub model: String,
    /// Directory with train.csv, validation.csv, test.csv; prepared there from --url when missing
    #[arg(long, default_value = "data/spam")]
    pub data: PathBuf,
    /// Where to get the collection when --data has no splits yet
    #[arg(long, default_value = spam::DEFAULT_URL)]
    pub url: String,
    #[arg(long, default_value = "runs/spam")]
    pub run_dir: PathBuf,
    #[command(flatten)]
    pub classifier: ClassifierArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ClassifyArgs {
    /// A preset/hub id, an HF-format directory (GPT-2 or Llama family), a run directory or random:<preset>
    #[arg(long)]
    pub model: String,
    /// The labelled texts: a .csv / .tsv (header row), .jsonl, .json (a list of objects) or .parquet
    /// file, a directory with train.* (+ validation.*, test.*), or hf:owner/name[:config][@split]
    #[arg(long)]
    pub data: String,
    #[command(flatten)]
    pub columns: ColumnArgs,
    /// The classes, in this order (comma-separated) [default: the training labels, sorted]
    #[arg(long)]
    pub labels: Option<String>,
    /// Validation texts (any --data source, same columns) [default: --data's validation split, or
    /// cut from the training data]
    #[arg(long)]
    pub validation: Option<String>,
    /// Test texts [default: --data's test split, or cut from the training data]
    #[arg(long)]
    pub test: Option<String>,
    /// Train and validation fractions of the seeded stratified split of splits the data lacks (the rest is test)
    #[arg(long, default_value = "0.7,0.1")]
    pub split: String,
    /// Down-sample every class to the smallest one's size before splitting (the book's spam recipe)
    #[arg(long)]
    pub balance: bool,
    #[arg(long, default_value = "runs/classify")]
    pub run_dir: PathBuf,
    #[command(flatten)]
    pub classifier: ClassifierArgs,
}

/// Where a labelled file keeps its texts and labels (`finetune classify`, `eval classify`).
#[derive(clap::Args, Debug, Clone)]
pub struct ColumnArgs {
    /// The column(s) holding the text; several (comma-separated) are joined with a newline
    #[arg(long, default_value = "text")]
    pub text_column: String,
    #[arg(long, default_value = "label")]
    pub label_column: String,
}

impl ColumnArgs {
    pub fn columns(&self) -> Result<labelled::Columns> {
        labelled::Columns::from_flags(&self.text_column, &self.label_column)
    }
}

/// What every classifier fine-tuning takes besides its data.
#[derive(clap::Args, Debug, Clone)]
pub struct ClassifierArgs {
    /// What trains: last-block (+ final norm + head), head, last-n:K, all [default: last-block;
    /// with --lora-rank: the adapters and the head]
    #[arg(long)]
    pub trainable: Option<Trainable>,
    /// Cut/pad texts to this many tokens (default: the longest training text)
    #[arg(long)]
    pub max_length: Option<usize>,
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Recompute the frozen blocks at every step instead of caching their output once
    #[arg(long)]
    pub no_prefix_cache: bool,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct InstructArgs {
    /// A preset/hub id (the book uses gpt2-medium), an HF-format directory or a run directory
    #[arg(long, default_value = "gpt2-medium")]
    pub model: String,
    /// Alpaca records {instruction, input, output} (a JSON list or JSONL) or conversations, one a
    /// line: {"messages": [{"role", "content"}, ...]} (OpenAI) or {"conversations": [{"from",
    /// "value"}, ...]} (ShareGPT); a .jsonl / .json / .csv / .tsv / .parquet file, an http(s) URL, a
    /// directory of split files or hf:owner/name[:config][@split] (its train split by default)
    #[arg(long, default_value = instruction::DEFAULT_URL)]
    pub data: String,
    /// Where a downloaded --data is kept
    #[arg(long, default_value = instruction::DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
    #[arg(long, default_value = "runs/instruct")]
    pub run_dir: PathBuf,
    /// Shuffle the records (seeded) before the 85/10/5 split instead of keeping file order
    #[arg(long)]
    pub shuffle: bool,
    /// Leave the prompt out of the loss (only the response is learned): --train-on assistant
    #[arg(long, conflicts_with = "train_on")]
    pub mask_prompt: bool,
    /// What the loss learns: the assistant turns (responses), or all tokens, prompt included
    /// [default: assistant for conversations, all for Alpaca records as in the book]
    #[arg(long, value_enum)]
    pub train_on: Option<TrainOn>,
    /// A Jinja2 chat template file to render conversations with instead of the model's
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Cut examples to this many tokens (and never past the model's context)
    #[arg(long, default_value_t = instruction::DEFAULT_ALLOWED_MAX_LENGTH)]
    pub allowed_max_length: usize,
    /// Batch examples of similar length together (less padding)
    #[arg(long)]
    pub group_by_length: bool,
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// New tokens of the per-epoch sample response
    #[arg(long, default_value_t = 256)]
    pub sample_tokens: usize,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub eval_tasks: EvalTasksArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `--train-on`: which tokens of an instruction example the loss learns.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainOn {
    Assistant,
    All,
}

/// LoRA flags of every fine-tuning task.
#[derive(clap::Args, Debug, Clone)]
pub struct LoraArgs {
    /// Train LoRA adapters of this rank instead of the model's weights (the base stays frozen;
    /// RUN_DIR/adapter gets PEFT-format adapters)
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA updates are scaled by alpha / rank [default: the rank, i.e. scale 1]
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Projections that get adapters: attn, mlp, all, or module names (c_attn, attn.c_proj,
    /// c_fc, mlp.c_proj) [default: attn,mlp]
    #[arg(long)]
    pub lora_targets: Option<String>,
    /// Also write the adapters merged into a plain HF-layout model under RUN_DIR/model
    #[arg(long)]
    pub merge: bool,
    /// QLoRA: `--quantize nf4` holds the targeted projections' frozen weights as 4-bit NF4 while
    /// the adapters train (the adapters and a --merge model are saved against the original base)
    #[command(flatten)]
    pub quantize: QuantizeArgs,
}

impl LoraArgs {
    /// The LoRA settings, `None` without --lora-rank (the other LoRA flags then are an error).
    pub fn finetune(&self) -> Result<Option<LoraFinetune>> {
        let quantize = self.quantize.nf4()?;
        let Some(rank) = self.lora_rank else {
            if quantize.is_some() {
                bail!("--quantize needs --lora-rank (QLoRA): quantized weights stay frozen, only LoRA adapters can train on them");
            }
            if self.lora_alpha.is_some() || self.lora_targets.is_some() || self.merge {
                bail!("--lora-alpha, --lora-targets and --merge need --lora-rank");
            }
            return Ok(None);
        };
        let targets: LoraTargets = self.lora_targets.as_deref().unwrap_or("attn,mlp").parse()?;
        let config = LoraConfig::new(rank, self.lora_alpha.unwrap_or(rank as f64), targets)?;
        Ok(Some(LoraFinetune { config, merge: self.merge, quantize }))
    }
}

pub fn run(args: Args) -> Result<()> {
    use crate::runtime::train_on_ranks;
    match args.task {
        Task::Spam(args) => {
            let train = &args.classifier.train;
            train_on_ranks(&train.devices, train.collective_timeout, &args.classifier.runtime, |runtime| {
                let mut args = args.clone();
                args.classifier.runtime = runtime;
                run_spam(args)
            })
        }
        Task::Classify(args) => {
            let train = &args.classifier.train;
            train_on_ranks(&train.devices, train.collective_timeout, &args.classifier.runtime, |runtime| {
                let mut args = args.clone();
                args.classifier.runtime = runtime;
                run_classify(args)
            })
        }
        Task::Instruct(args) => train_on_ranks(&args.train.devices, args.train.collective_timeout, &args.runtime, |runtime| run_instruct(InstructArgs { runtime, ..args.clone() })),
    }
}

fn run_instruct(args: InstructArgs) -> Result<()> {
    let device = args.runtime.device()?;
    let job = InstructionFinetune {
        lm: LanguageModelJob {
            task: "instruction".into(),
            model: args.model.clone(),
            run_dir: args.run_dir.clone(),
            dropout: Some(args.dropout),
            lora: args.lora.finetune()?,
            train: args.train.config(args.runtime.seed, TaskDefaults { epochs: 2, eval_every: 5 }),
            resume: args.train.resume,
            dashboard: args.train.dashboard(),
            device,
            details: serde_json::Value::Null,
        },
        data: args.data.clone(),
        cache_dir: args.cache_dir.clone(),
        shuffle: args.shuffle,
        collate: CollateConfig { mask_prompt: args.mask_prompt, allowed_max_length: Some(args.allowed_max_length) },
        train_on_assistant: if args.mask_prompt { Some(true) } else { args.train_on.map(|t| t == TrainOn::Assistant) },
        chat_template: match &args.chat_template {
            Some(file) => Some((std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?, file.display().to_string())),
            None => None,
        },
        group_by_length: args.group_by_length,
        sample_tokens: args.sample_tokens,
        eval_tasks: args.eval_tasks.read()?,
    };
    let report = args.train.tracking.around(&args.run_dir, args.train.resume, || finetune_instruction(&job))?;
    if pipelines::distributed::current().rank() != 0 {
        return Ok(()); // rank 0 reports
    }
    eprintln!(
        "validation loss {:.4} after {} steps in {:.1}s; model in {} (test split in {})",
        report.validation_loss,
        report.steps,
        report.seconds,
        report.model_dir.display(),
        find_test_split(&args.run_dir).unwrap_or_else(|| args.run_dir.join("data")).display()
    );
    if args.train.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

fn run_spam(args: SpamArgs) -> Result<()> {
    if !spam::SPLIT_FILES.iter().all(|f| args.data.join(f).is_file()) {
        eprintln!("no prepared splits in {}: preparing them from {}", args.data.display(), args.url);
        spam::prepare_spam(&args.url, &args.data, spam::DEFAULT_SEED)
            .with_context(|| format!("preparing the SMS spam data in {}", args.data.display()))?;
    }
    run_classifier(args.model, args.run_dir, ClassifierData::SpamSplits(args.data), args.classifier)
}

fn run_classify(args: ClassifyArgs) -> Result<()> {
    let labels: Option<Vec<String>> = args.labels.as_ref().map(|l| l.split(',').map(|s| s.trim().to_string()).collect());
    let (train, validation) = parse_split(&args.split)?;
    let plan = labelled::SplitPlan { train, validation, balance: args.balance, seed: args.classifier.runtime.seed };
    let hub = HubOptions::from_env();
    let open = |source: &Option<String>| source.as_deref().map(|s| DataSource::open(s, &hub)).transpose();
    let data = DataSource::open(&args.data, &hub)?;
    let (validation, test) = (open(&args.validation)?, open(&args.test)?);
    let labelled::LabelledSplits { labels, splits, source } =
        labelled::labelled_splits(&data, &args.columns.columns()?, labels.as_deref(), validation.as_ref(), test.as_ref(), plan)?;
    eprintln!(
        "{}: {} classes ({}); {} train / {} validation / {} test texts",
        args.data,
        labels.len(),
        labels.join(", "),
        splits.train.len(),
        splits.validation.len(),
        splits.test.len()
    );
    run_classifier(args.model, args.run_dir, ClassifierData::Labelled { labels, splits, source }, args.classifier)
}

/// `--split TRAIN,VALIDATION` fractions.
fn parse_split(text: &str) -> Result<(f64, f64)> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    match parts[..] {
        [train, validation] => match (train.parse::<f64>(), validation.parse::<f64>()) {
            (Ok(t), Ok(v)) => Ok((t, v)),
            _ => bail!("--split {text:?}: expected two fractions, e.g. 0.7,0.1"),
        },
        _ => bail!("--split {text:?}: expected two fractions, e.g. 0.7,0.1"),
    }
}

/// Fine-tunes a classifier on `data` (the spam task and any labelled set alike).
fn run_classifier(model: String, run_dir: std::path::PathBuf, data: ClassifierData, args: ClassifierArgs) -> Result<()> {
    let device = args.runtime.device()?;
    let lora = args.lora.finetune()?;
    if lora.is_some() && args.trainable.is_some() {
        bail!("--trainable and --lora-rank exclude each other: with LoRA the adapters and the head train");
    }
    let job = ClassifierFinetune {
        model,
        data,
        run_dir,
        trainable: args.trainable.unwrap_or_default(),
        lora,
        max_length: args.max_length,
        dropout: args.dropout,
        prefix_cache: !args.no_prefix_cache,
        train: args.train.config(args.runtime.seed, TaskDefaults { epochs: 5, eval_every: 50 }),
        resume: args.train.resume,
        dashboard: args.train.dashboard(),
        device,
    };
    let report = args.train.tracking.around(&job.run_dir, args.train.resume, || finetune_classifier(&job))?;
    if pipelines::distributed::current().rank() != 0 {
        return Ok(()); // rank 0 reports
    }
    eprintln!(
        "accuracy: train {:.2}%, validation {:.2}%, test {:.2}% (macro-F1 {:.4}) after {} steps in {:.1}s; model in {}",
        100.0 * report.train_accuracy,
        100.0 * report.validation_accuracy,
        100.0 * report.test_accuracy,
        report.test_macro_f1,
        report.steps,
        report.seconds,
        report.model_dir.display()
    );
    if args.train.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
