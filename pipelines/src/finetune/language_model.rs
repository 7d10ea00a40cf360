//! Training a language model (of any family) on the one training loop. Instruction fine-tuning and
//! pretraining on token shards differ only in their batches and in what they do after an epoch;
//! the run directory, the dashboard's metrics, the final model and the plots are the same, and
//! live here.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use gpt::burn::prelude::*;
use gpt::generate::{GenerateConfig, generate};
use gpt::models::{CausalLm, LanguageModel};
use gpt::Tokenizer;
use gpt::io::WeightDtype;
use super::LoraFinetune;
use super::lora::base_dtype;
use crate::runs::ModelRef;
use serde::Serialize;
use serde_json::json;

use crate::plots::plot_run;
use crate::runs::{MetricEvent, MetricsLog, RunDir};
use crate::train::steps::{LanguageModelTraining, LmBatch, StepReport};
use crate::train::dashboard::DashboardMetrics;
use crate::train::trainer::{BatchSource, TrainConfig, TrainHooks, TrainJob, train};

/// A language-model training run.
#[derive(Debug, Clone)]
pub struct LanguageModelJob {
    /// What run.json calls the task (`instruction`, `pretrain`).
    pub task: String,
    /// `--model`: preset/hub id, HF directory, run directory or `random:<preset>` (from scratch).
    pub model: String,
    pub run_dir: PathBuf,
    /// Dropout while training (`None`: the model's own config).
    pub dropout: Option<f64>,
    /// Train LoRA adapters instead of the whole model.
    pub lora: Option<super::LoraFinetune>,
    pub train: TrainConfig,
    pub resume: bool,
    pub dashboard: bool,
    pub device: Device,
    /// Task-specific entries for run.json (data, prompt format, ...).
    pub details: serde_json::Value,
}

/// How the run ended.
#[derive(Debug, Clone, Serialize)]
pub struct LanguageModelReport {
    pub steps: usize,
    /// Mean loss over the validation batches the loop evaluates at the end (all of them when
    /// `full_validation`, else `eval_batches`).
    pub validation_loss: f64,
    pub validation_perplexity: f64,
    pub parameters: usize,
    pub trainable_parameters: usize,
    pub seconds: f64,
    pub model_dir: PathBuf,
}

/// The model `job.model` names, on the training (autodiff) device, with the job's dropout and,
/// with LoRA, its adapters attached (everything else frozen; with QLoRA the targeted weights
/// quantized). `--resume` builds the model the same way before loading the checkpoint into it:
/// checkpoints hold the adapters and an empty placeholder for each quantized weight.
pub fn load_for_training(job: &LanguageModelJob) -> Result<LanguageModel> {
    let device = job.device.clone().autodiff();
    device.seed(job.train.seed);
    let quantize = job.lora.as_ref().and_then(LoraFinetune::quantize_at_load);
    let dtype = if job.lora.is_some() { base_dtype(job.train.precision) } else { WeightDtype::F32 };
    let model = ModelRef::resolve(&job.model).load_language_model_quantized(&device, job.train.seed, dtype, quantize.as_ref())?;
    let model = model.map(|model| match job.dropout {
        Some(p) => model.with_dropout(p),
        None => model,
    });
    Ok(match &job.lora {
        Some(lora) => lora.apply(model, job.train.seed)?,
        None => {
            let model = model.attach()?;
            super::ensure_full_weights(&model, &job.model)?;
            model
        }
    })
}

/// Trains `model` (from [`load_for_training`]) on `train`, validating on `valid`, and saves the
/// result in the HF layout under `RUN_DIR/model`, with plots. `prepare_run` gets the run
/// directory once it is open (checked, created), before training: e.g. to keep the data splits.
pub fn train_language_model(
    job: &LanguageModelJob,
    model: LanguageModel,
    train_data: Arc<dyn BatchSource<LmBatch>>,
    valid_data: Arc<dyn BatchSource<LmBatch>>,
    hooks: impl TrainHooks<LanguageModelTraining> + 'static,
    prepare_run: impl FnOnce(&std::path::Path) -> Result<()>,
) -> Result<LanguageModelReport> {
    let started = std::time::Instant::now();
    // Data-parallel: rank 0 opens and writes the run directory; the other ranks only read its
    // checkpoints on --resume.
    let world = crate::distributed::current();
    let leader = world.rank() == 0;
    let run = if leader { RunDir::open(&job.run_dir, job.resume)? } else { RunDir::joined(&job.run_dir) };
    if leader {
        prepare_run(run.root())?;
        super::check_world_size(&run, job.resume, world.world_size())?;
    }
    let (trainable_parameters, parameters) = gpt::io::parameter_counts(&model);
    // `attn`, `mlp`, `all` name both families' projections: record the model's.
    let lora = job.lora.as_ref().map(|lora| lora.for_model(&model)).transpose()?;
    if let Some(lora) = lora.as_ref().filter(|_| leader) {
        let base = if base_dtype(job.train.precision) == WeightDtype::Bf16 { ", the frozen base in bf16" } else { "" };
        eprintln!("{}{base}: {trainable_parameters} of {parameters} parameters train", lora.summary());
    }
    let config = model.config_json();
    if !job.resume && leader {
        run.write_run_json(json!({
            "task": job.task, "model": job.model, "architecture": model.architecture(), "dropout": job.dropout, "train": job.train,
            "lora": lora.as_ref().map(|l| l.describe()), "trainable_parameters": trainable_parameters,
            "device": format!("{:?}", job.device), "parameters": parameters, "config": config,
            "examples": { "train": train_data.len(), "validation": valid_data.len() },
            "world_size": world.world_size(),
            "details": job.details,
        }))?;
    }
    let model = LanguageModelTraining { model, grad_clip: job.train.optim.grad_clip };
    let outcome = train(
        model,
        TrainJob {
            config: job.train.clone(),
            run: run.clone(),
            device: job.device.clone().autodiff(),
            train: train_data,
            valid: valid_data.clone(),
            resume: job.resume,
            dashboard: job.dashboard,
        },
        {
            use crate::train::metrics::{Averaged, LearningRate, Perplexity, TokensPerSecond};
            DashboardMetrics::new().both(Averaged::loss()).both(Perplexity::new()).train(TokensPerSecond::new()).train(LearningRate::new())
        },
        hooks,
    )?;
    if outcome.interrupted {
        return Err(crate::train::Interrupted { step: outcome.steps }.into());
    }

    let model = outcome.model.valid();
    let plain = job.device.clone();
    // `eval_batches` global batches: each rank's micro-batch of each.
    let batches = if job.train.full_validation { None } else { Some(job.train.eval_batches * world.world_size()) };
    let validation_loss = mean_loss(&model, valid_data.as_ref(), job.train.batch_size, batches, &plain);
    if !leader {
        // Every rank holds the same model: rank 0 logs and saves it.
        let seconds = started.elapsed().as_secs_f64();
        let validation_perplexity = validation_loss.exp();
        return Ok(LanguageModelReport { steps: outcome.steps, validation_loss, validation_perplexity, parameters, trainable_parameters, seconds, model_dir: run.model() });
    }
    let mut log = MetricsLog::open(&run.metrics(), None)?;
    let mut event = MetricEvent::new(outcome.steps, job.train.epochs, "val").with("full", job.train.full_validation).with("final", true);
    (event.loss, event.perplexity) = (Some(validation_loss), Some(validation_loss.exp()));
    log.log(&event)?;
    let model_dir = save_language_model(model.model, job, lora.as_ref(), &run)?;
    if let Err(e) = plot_run(run.root()) {
        eprintln!("warning: could not draw the plots: {e:#}");
    }
    let report = LanguageModelReport {
        steps: outcome.steps,
        validation_loss,
        validation_perplexity: validation_loss.exp(),
        parameters,
        trainable_parameters,
        seconds: started.elapsed().as_secs_f64(),
        model_dir,
    };
    std::fs::create_dir_all(run.eval()).with_context(|| format!("creating {}", run.eval().display()))?;
    gpt::io::write_atomic(&run.eval().join("validation.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(report)
}

/// Saves the trained model in the HF layout under `RUN_DIR/model` (with the base's tokenizer
/// files, for a family that has its own), or with LoRA its adapters under `RUN_DIR/adapter`
/// (and, with `--merge`, the merged model under `model/` too). Returns the directory `--model`
/// should name to use it (the run directory itself also works).
fn save_language_model(model: LanguageModel, job: &LanguageModelJob, lora: Option<&super::LoraFinetune>, run: &RunDir) -> Result<PathBuf> {
    let base = ModelRef::resolve(&job.model);
    let save_model = |model: &LanguageModel, what: &str| -> Result<()> {
        gpt::hf::save_language_model_dir(model, &run.model()).with_context(|| format!("saving the {what} model"))?;
        gpt::hf::copy_model_tokenizer(&base.spec()?, &run.model()).context("copying the tokenizer files")?;
        Ok(())
    };
    let Some(lora) = lora else {
        save_model(&model, "trained")?;
        return Ok(run.model());
    };
    let config = gpt::lora::AdapterConfig::new(&lora.config, gpt::lora::AdapterTask::CausalLm, &base.model);
    gpt::lora::save_adapter_dir(&run.adapter(), &model, &config, Vec::new()).context("saving the LoRA adapters")?;
    if !lora.merge {
        return Ok(run.adapter());
    }
    save_model(&model.materialize(), "merged")?;
    Ok(run.model())
}

/// Mean batch loss of `model` on the first `max_batches` batches of `source` (all with `None`).
pub fn mean_loss(
    model: &LanguageModelTraining,
    source: &dyn BatchSource<LmBatch>,
    batch_size: usize,
    max_batches: Option<usize>,
    device: &Device,
) -> f64 {
    let indices: Vec<usize> = (0..source.len()).collect();
    let (mut sum, mut batches) = (0.0, 0usize);
    for chunk in indices.chunks(batch_size.max(1)).take(max_batches.unwrap_or(usize::MAX)) {
        sum += model.forward_batch(source.batch(chunk, device)).loss();
        batches += 1;
    }
    sum / batches.max(1) as f64
}

/// After every epoch (and every `every_steps` steps, if set): a greedy continuation of a fixed
/// prompt, appended to `samples.jsonl` (`{"time","step","epoch","prompt","text"}`), so that one
/// sees what the model learns, not only its loss.
pub struct SampleHook {
    prompt: String,
    prompt_ids: Vec<u32>,
    /// The model's: encodes the prompt, decodes the sample, says where it ends.
    tokenizer: Tokenizer,
    max_new_tokens: usize,
    /// What of the continuation to keep (the instruction task strips its `### Response:` header).
    clean: fn(&str) -> String,
    samples: PathBuf,
    log: Mutex<Option<MetricsLog>>,
    /// The step of the last sample: the end of a run can be both a sampling step and an epoch end.
    last_step: Mutex<Option<usize>>,
    print: bool,
    /// Also sample after every this many optimizer steps.
    pub every_steps: Option<usize>,
}

impl SampleHook {
    /// Samples go to `samples` (a run's `samples.jsonl`); `print` also shows them on stderr.
    /// `prompt_ids`: the prompt as the model reads it (tokenised like the training data).
    pub fn new(
        samples: PathBuf,
        prompt: &str,
        prompt_ids: Vec<u32>,
        tokenizer: Tokenizer,
        max_new_tokens: usize,
        clean: fn(&str) -> String,
        print: bool,
    ) -> Self {
        Self {
            prompt: prompt.to_string(),
            prompt_ids,
            tokenizer,
            max_new_tokens,
            clean,
            samples,
            log: Mutex::new(None),
            last_step: Mutex::new(None),
            print,
            every_steps: None,
        }
    }
}

impl TrainHooks<LanguageModelTraining> for SampleHook {
    fn start(&self, resume_step: Option<usize>) -> Result<()> {
        // Samples the interrupted run logged after its checkpoint are about to be redone.
        *self.log.lock().map_err(|_| anyhow::anyhow!("samples log poisoned"))? = Some(MetricsLog::open(&self.samples, resume_step)?);
        Ok(())
    }

    fn epoch_end(&self, model: &LanguageModelTraining, epoch: usize, step: usize) -> Result<Vec<MetricEvent>> {
        self.sample(model, epoch, step)
    }

    fn wants_step(&self, step: usize) -> bool {
        self.every_steps.is_some_and(|every| step.is_multiple_of(every))
    }

    fn step_end(&self, model: &LanguageModelTraining, epoch: usize, step: usize) -> Result<Vec<MetricEvent>> {
        self.sample(model, epoch, step)
    }
}

impl SampleHook {
    fn sample(&self, model: &LanguageModelTraining, epoch: usize, step: usize) -> Result<Vec<MetricEvent>> {
        {
            let mut last = self.last_step.lock().map_err(|_| anyhow::anyhow!("samples state poisoned"))?;
            if *last == Some(step) {
                return Ok(Vec::new());
            }
            *last = Some(step);
        }
        let context = model.model.context_length();
        // As many new tokens as fit after the whole prompt (a prompt cut to fit would not be the
        // sample's prompt any more); at least one, with the prompt's start dropped if it must be.
        let room = context.saturating_sub(self.prompt_ids.len());
        let config = GenerateConfig::greedy(self.max_new_tokens.min(room).clamp(1, context.saturating_sub(1).max(1))).with_tokenizer(&self.tokenizer);
        let completion = generate(&model.model, std::slice::from_ref(&self.prompt_ids), &config)?;
        let text = (self.clean)(&completion[0].text);
        if self.print {
            eprintln!("epoch {epoch} step {step} sample: {text:?}");
        }
        let event = MetricEvent::new(step, epoch, "sample").with("prompt", self.prompt.clone()).with("text", text);
        let mut log = self.log.lock().map_err(|_| anyhow::anyhow!("samples log poisoned"))?;
        log.as_mut().context("the sample hook was not started")?.log(&event)?;
        Ok(Vec::new())
    }
}
