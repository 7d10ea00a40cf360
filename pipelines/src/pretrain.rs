//! Pretraining on token shards (build-nanogpt's `train_gpt2.py` on the one training loop), GPT-2
//! or a Llama-family model on shards of its own tokenizer's ids:
//! batches of `B` windows of `T + 1` tokens read in shard order exactly as its `DataLoaderLite`
//! reads them (one process), a total batch in tokens reached with gradient accumulation, AdamW
//! (0.9, 0.95) with decay on 2-D weights, global-norm clipping, warmup + cosine, validation loss
//! and HellaSwag every N steps, sample generations, checkpoints and `--resume`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use gpt::Tokenizer;
use gpt::burn::prelude::*;
use gpt::models::CausalLm;
use serde_json::json;

use crate::runs::MetricEvent;
use crate::data::hellaswag::Example;
use crate::data::fineweb::{shards_tokenizer, tokenizer_fingerprint};
use crate::data::shards::{Split, TokenFile, find_shards};
use crate::eval::hellaswag;
use crate::eval::tasks::hook::EvalTasks;
use crate::finetune::language_model::{LanguageModelJob, LanguageModelReport, SampleHook, load_for_training, train_language_model};
use crate::runs::ModelRef;
use crate::train::steps::{LanguageModelTraining, LmBatch};
use crate::train::trainer::{BatchSource, TrainHooks};

/// What `llmfs pretrain` takes besides the shared training settings in `lm`.
#[derive(Debug, Clone)]
pub struct PretrainJob {
    pub lm: LanguageModelJob,
    /// Directory with `*_val_*.npy` and `*_train_*.npy` shards (`llmfs prepare fineweb`).
    pub data: PathBuf,
    /// Tokens per row (T).
    pub seq_len: usize,
    /// Prompt of the sample generations (`None`: no samples).
    pub sample_prompt: Option<String>,
    pub sample_tokens: usize,
    /// Generate a sample and score HellaSwag every this many steps.
    pub sample_every: Option<usize>,
    pub hellaswag_every: Option<usize>,
    /// HellaSwag examples scored each time (the first N of `hellaswag`).
    pub hellaswag: Vec<Example>,
    /// Benchmark tasks scored during training (`--eval-tasks`).
    pub eval_tasks: EvalTasks,
}

/// The windows `DataLoaderLite` reads, as examples the loop can batch by index: in shard `s` of
/// `len` tokens, batch `j` of `B` rows starts at token `j·B·T`, for every `j` with
/// `j·B·T + B·T + 1 <= len`; row `r` of it is tokens `[j·B·T + r·T, … + T + 1)`. Visited in order
/// with batches of `B`, these are exactly its batches.
pub struct ShardWindows {
    files: Vec<TokenFile>,
    /// Index of the first window of each shard, and the total at the end.
    starts: Vec<usize>,
    seq_len: usize,
}

impl ShardWindows {
    pub fn open(shards: &[PathBuf], batch_size: usize, seq_len: usize) -> Result<Self> {
        let mut files = Vec::with_capacity(shards.len());
        let mut starts = vec![0];
        for path in shards {
            let file = TokenFile::open(path)?;
            let batches = file.len().saturating_sub(1) / (batch_size * seq_len);
            if batches == 0 {
                bail!(
                    "{} has {} tokens: fewer than one batch of {batch_size} × {seq_len} (+1) needs",
                    path.display(),
                    file.len()
                );
            }
            starts.push(starts[starts.len() - 1] + batches * batch_size);
            files.push(file);
        }
        if files.is_empty() {
            bail!("no shards given");
        }
        Ok(Self { files, starts, seq_len })
    }

    /// (shard, first token) of window `index`.
    fn locate(&self, index: usize) -> (usize, usize) {
        let shard = self.starts.partition_point(|&start| start <= index) - 1;
        (shard, (index - self.starts[shard]) * self.seq_len)
    }

    /// Tokens in all windows (each counted once, without the extra target token).
    pub fn tokens_total(&self) -> usize {
        self.len() * self.seq_len
    }
}

impl BatchSource<LmBatch> for ShardWindows {
    fn len(&self) -> usize {
        self.starts[self.starts.len() - 1]
    }

    fn batch(&self, indices: &[usize], device: &Device) -> LmBatch {
        let t = self.seq_len;
        let mut inputs = Vec::with_capacity(indices.len() * t);
        let mut targets = Vec::with_capacity(indices.len() * t);
        for &index in indices {
            let (shard, start) = self.locate(index);
            let window: Vec<i64> = self.files[shard].tokens(start..start + t + 1).map(i64::from).collect();
            inputs.extend_from_slice(&window[..t]);
            targets.extend_from_slice(&window[1..]);
        }
        let shape = [indices.len(), t];
        LmBatch {
            inputs: Tensor::from_data(TensorData::new(inputs, shape), device),
            targets: Tensor::from_data(TensorData::new(targets, shape), device),
        }
    }

    fn tokens(&self, indices: &[usize]) -> usize {
        indices.len() * self.seq_len
    }
}

/// Samples and HellaSwag every N steps and at the end of the run. Passes over the shards are
/// not an event in pretraining (build-nanogpt counts steps only): nothing happens at an epoch's end.
struct PretrainHooks {
    final_step: usize,
    tokenizer: Tokenizer,
    samples: Option<SampleHook>,
    hellaswag: Vec<Example>,
    hellaswag_every: Option<usize>,
    batch_size: usize,
    print: bool,
    last_scored: Mutex<Option<usize>>,
}

impl PretrainHooks {
    fn score(&self, model: &LanguageModelTraining, epoch: usize, step: usize) -> Result<Vec<MetricEvent>> {
        if self.hellaswag.is_empty() || self.last_scored.lock().is_ok_and(|last| *last == Some(step)) {
            return Ok(Vec::new());
        }
        let scores = hellaswag::evaluate_with(&model.model, &self.tokenizer, &self.hellaswag, self.batch_size, |_| {})?;
        if let Ok(mut last) = self.last_scored.lock() {
            *last = Some(step);
        }
        if self.print {
            eprintln!("epoch {epoch} step {step} hellaswag acc {:.4} acc_norm {:.4} (n={})", scores.acc, scores.acc_norm, scores.n);
        }
        let mut event = MetricEvent::new(step, epoch, "hellaswag").with("acc", scores.acc).with("acc_norm", scores.acc_norm).with("n", scores.n);
        event.accuracy = Some(scores.acc_norm);
        Ok(vec![event])
    }
}

impl TrainHooks<LanguageModelTraining> for PretrainHooks {
    fn start(&self, resume_step: Option<usize>) -> Result<()> {
        match &self.samples {
            Some(samples) => samples.start(resume_step),
            None => Ok(()),
        }
    }

    fn epoch_end(&self, model: &LanguageModelTraining, epoch: usize, step: usize) -> Result<Vec<MetricEvent>> {
        if step != self.final_step {
            return Ok(Vec::new());
        }
        let mut events = self.score(model, epoch, step)?;
        if let Some(samples) = &self.samples {
            events.extend(samples.epoch_end(model, epoch, step)?);
        }
        Ok(events)
    }

    fn wants_step(&self, step: usize) -> bool {
        self.hellaswag_every.is_some_and(|every| step.is_multiple_of(every)) || self.samples.as_ref().is_some_and(|s| s.wants_step(step))
    }

    fn step_end(&self, model: &LanguageModelTraining, epoch: usize, step: usize) -> Result<Vec<MetricEvent>> {
        let mut events = Vec::new();
        if self.hellaswag_every.is_some_and(|every| step.is_multiple_of(every)) {
            events.extend(self.score(model, epoch, step)?);
        }
        if let Some(samples) = self.samples.as_ref().filter(|s| s.wants_step(step)) {
            events.extend(samples.step_end(model, epoch, step)?);
        }
        Ok(events)
    }
}

/// Pretrains `job.lm.model` (a `random:<preset>` model from scratch, or weights to continue).
pub fn pretrain(job: &PretrainJob) -> Result<LanguageModelReport> {
    let model = load_for_training(&job.lm)?;
    let from_scratch = job.lm.model.starts_with("random:");
    let (tokenizer, shards_tokenizer) = tokenizer_for_shards(&job.data, &job.lm.model, from_scratch, model.vocab_size())?;
    let context = model.context_length();
    if job.seq_len == 0 || job.seq_len > context {
        bail!("--seq-len {} must be in 1..={context} (the model's context)", job.seq_len);
    }
    let batch_size = job.lm.train.batch_size;
    let train_data = ShardWindows::open(&find_shards(&job.data, Split::Train)?, batch_size, job.seq_len)
        .with_context(|| format!("reading the training shards in {}", job.data.display()))?;
    let valid_data = ShardWindows::open(&find_shards(&job.data, Split::Val)?, batch_size, job.seq_len)
        .with_context(|| format!("reading the validation shard in {}", job.data.display()))?;
    let mut lm = job.lm.clone();
    lm.train.shuffle = false;
    lm.train.full_validation = false;
    lm.train.drop_last = true;
    // Data-parallel: each rank takes `batch_size` windows of every global batch.
    let world = crate::distributed::current();
    let ranks = world.world_size();
    if let Some(steps) = lm.train.run_steps {
        // As many passes over the shards as the steps need (the run ends at the step count).
        let per_epoch = lm.train.batches_per_epoch(train_data.len() / ranks).div_ceil(lm.train.grad_accumulation).max(1);
        lm.train.epochs = steps.div_ceil(per_epoch).max(1);
    }
    if world.rank() == 0 {
        eprintln!(
            "{}: {} parameters; {} training tokens in {} windows of {}, {} tokens a step ({} × {} × {} accumulated{})",
            job.lm.model,
            model.num_params(),
            train_data.tokens_total(),
            train_data.len(),
            job.seq_len,
            batch_size * ranks * job.seq_len * lm.train.grad_accumulation,
            batch_size,
            job.seq_len,
            lm.train.grad_accumulation,
            if ranks > 1 { format!(" × {ranks} ranks") } else { String::new() }
        );
    }
    let print = !lm.dashboard;
    let samples = job.sample_prompt.as_ref().map(|prompt| {
        let prompt_ids = tokenizer.encode(prompt);
        let mut hook = SampleHook::new(lm.run_dir.join("samples.jsonl"), prompt, prompt_ids, tokenizer.clone(), job.sample_tokens, |text| text.to_string(), print);
        hook.every_steps = job.sample_every;
        hook
    });
    let hooks = PretrainHooks {
        final_step: lm.train.total_steps(train_data.len()),
        tokenizer: tokenizer.clone(),
        samples,
        hellaswag: job.hellaswag.clone(),
        hellaswag_every: job.hellaswag_every,
        batch_size: hellaswag::default_batch_size(&job.lm.device),
        print,
        last_scored: Mutex::new(None),
    };
    let tasks = job.eval_tasks.hook(tokenizer, hellaswag::default_batch_size(&job.lm.device), print);
    lm.details = json!({ "data": job.data, "seq_len": job.seq_len, "hellaswag_examples": job.hellaswag.len(),
        "tokens_per_step": batch_size * job.seq_len * lm.train.grad_accumulation, "eval_tasks": job.eval_tasks.describe(), "extra": lm.details });
    let report = train_language_model(&lm, model, Arc::new(train_data), Arc::new(valid_data), (hooks, tasks), |_| Ok(()))?;
    // A model trained from scratch has no tokenizer files of its own: it gets its shards' (none
    // for GPT-2's, which is compiled in), so that generate, chat and serve find them.
    if from_scratch && world.rank() == 0 && shards_tokenizer != "gpt2" && report.model_dir.join("config.json").is_file() {
        gpt::hf::copy_model_tokenizer(&shards_tokenizer, &report.model_dir)
            .with_context(|| format!("copying the tokenizer files of {shards_tokenizer} to {}", report.model_dir.display()))?;
    }
    Ok(report)
}

/// The run's tokenizer: the model's, which must be the one the shards in `data` were made with
/// (their manifest's fingerprint; shards without one are build-nanogpt's, of GPT-2's ids). A model
/// of random weights (`from_scratch`) may have none of its own and then takes the shards'. Also
/// returns how the shards name their tokenizer.
fn tokenizer_for_shards(data: &Path, model: &str, from_scratch: bool, model_vocab: usize) -> Result<(Tokenizer, String)> {
    let (shards_tokenizer, fingerprint) = shards_tokenizer(data)?;
    let tokenizer = match ModelRef::resolve(model).tokenizer() {
        Ok(tokenizer) => tokenizer,
        Err(_) if from_scratch => ModelRef::tokenizer_named(&shards_tokenizer)
            .with_context(|| format!("{model} has no tokenizer, and the shards' ({shards_tokenizer}) cannot be loaded"))?,
        Err(error) => return Err(error),
    };
    if tokenizer_fingerprint(&tokenizer) != fingerprint {
        let its = if tokenizer.is_gpt2() { "gpt2" } else { model };
        bail!(
            "{} holds token ids of {shards_tokenizer}'s tokenizer, and {model} has another: \
             make shards of its ids with `llmfs prepare fineweb --tokenizer {its}`",
            data.display()
        );
    }
    if tokenizer.vocab_size() > model_vocab {
        bail!("{model} embeds {model_vocab} tokens, fewer than the {} of the shards' tokenizer ({shards_tokenizer})", tokenizer.vocab_size());
    }
    Ok((tokenizer, shards_tokenizer))
}

/// Gradient-accumulation steps that make a total batch of `total_tokens` from micro-batches of
/// `batch_size × seq_len` tokens (build-nanogpt's `grad_accum_steps`); it must divide evenly.
pub fn accumulation_for(total_tokens: usize, batch_size: usize, seq_len: usize) -> Result<usize> {
    let micro = batch_size * seq_len;
    if micro == 0 || total_tokens == 0 || !total_tokens.is_multiple_of(micro) {
        bail!("--total-batch {total_tokens} must be a positive multiple of batch size × sequence length ({batch_size} × {seq_len} = {micro})");
    }
    Ok(total_tokens / micro)
}
