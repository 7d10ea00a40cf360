//! Fine-tuning a language model (GPT-2 or the Llama family) as a text classifier (*Build a LLM
//! From Scratch*, ch. 6): the SMS-spam task,
//! or any labelled texts in the same `Label,Text` CSV splits. The steps: the model with its new
//! head and what trains, the batches ([`batches`]), the one training loop, an evaluation of every
//! split, the saved classifier. Classifying new texts is [`crate::eval::classifier`]'s.

mod batches;

use std::borrow::Cow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use gpt::burn::prelude::*;
use gpt::models::CausalLm;
use gpt::io::WeightDtype;
use gpt::{Classifier, Tokenizer, Trainable};
use super::LoraFinetune;
use serde::Serialize;
use serde_json::json;

use crate::data::spam::{LABEL_NAMES, Message, SpamDataset, Splits, read_splits};
use crate::distributed::Collective;
use crate::eval::metrics::ClassificationMetrics;
use crate::plots::plot_run;
use crate::runs::{MetricEvent, MetricsLog, ModelRef, RunDir};
use crate::train::steps::{ClassificationBatch, ClassifierTraining, StepReport};
use crate::train::trainer::{BatchSource, TrainConfig, TrainJob, TrainOutcome, train};

/// The labelled texts of a classification run.
#[derive(Debug, Clone)]
pub enum ClassifierData {
    /// A directory with `train.csv`, `validation.csv`, `test.csv` (`llmfs prepare spam`): ham / spam.
    SpamSplits(PathBuf),
    /// Texts with class indices into `labels`, already split (`llmfs finetune classify`).
    Labelled {
        labels: Vec<String>,
        splits: Splits<Vec<Message>>,
        /// Where they came from, for run.json (files, columns, split settings).
        source: serde_json::Value,
    },
}

impl ClassifierData {
    /// The class names and the three splits (read from the files, or the ones held).
    fn load(&self) -> Result<(Vec<String>, Cow<'_, Splits<Vec<Message>>>)> {
        match self {
            Self::SpamSplits(dir) => Ok((LABEL_NAMES.iter().map(|s| s.to_string()).collect(), Cow::Owned(read_splits(dir)?))),
            Self::Labelled { labels, splits, .. } => Ok((labels.clone(), Cow::Borrowed(splits))),
        }
    }

    fn describe(&self) -> serde_json::Value {
        match self {
            Self::SpamSplits(dir) => json!(dir),
            Self::Labelled { source, .. } => source.clone(),
        }
    }
}

/// Everything `llmfs finetune spam|classify` takes.
#[derive(Debug, Clone)]
pub struct ClassifierFinetune {
    /// `--model`: preset/hub id, HF directory, run directory or `random:<preset>`.
    pub model: String,
    pub data: ClassifierData,
    pub run_dir: PathBuf,
    pub trainable: Trainable,
    /// LoRA adapters (and the head) train instead of `trainable`.
    pub lora: Option<super::LoraFinetune>,
    /// Cut/pad every text to this many tokens (default: the longest training text).
    pub max_length: Option<usize>,
    /// Dropout during fine-tuning (the book uses 0).
    pub dropout: f64,
    /// Run the frozen blocks once per example and train on their cached output.
    pub prefix_cache: bool,
    pub train: TrainConfig,
    pub resume: bool,
    pub dashboard: bool,
    pub device: Device,
}

/// Accuracy (and loss) on each split of the fine-tuned classifier.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifierReport {
    pub train_accuracy: f64,
    pub validation_accuracy: f64,
    pub test_accuracy: f64,
    pub test_macro_f1: f64,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub test_loss: f64,
    pub steps: usize,
    pub trainable_parameters: usize,
    pub total_parameters: usize,
    pub length: usize,
    pub seconds: f64,
    pub model_dir: PathBuf,
}

/// Fine-tunes, evaluates every split, saves the classifier to `RUN_DIR/model` and draws the plots.
pub fn finetune_classifier(job: &ClassifierFinetune) -> Result<ClassifierReport> {
    let started = std::time::Instant::now();
    // Data-parallel (`mpirun -np N`): rank 0 opens and writes the run directory; every rank
    // trains on its share of each global batch and scores its share of each split.
    let world = crate::distributed::current();
    let leader = world.rank() == 0;
    let run = if leader { RunDir::open(&job.run_dir, job.resume)? } else { RunDir::joined(&job.run_dir) };
    if leader {
        super::check_world_size(&run, job.resume, world.world_size())?;
    }
    let device = job.device.clone().autodiff();
    device.seed(job.train.seed);
    let (classifier, data, what_trains) = classifier_and_data(job, &device)?;
    // `attn`, `mlp`, `all` name both families' projections: record the model's.
    let lora = job.lora.as_ref().map(|lora| lora.for_model(&classifier.model)).transpose()?;
    let (trainable_parameters, total_parameters) = classifier.parameter_counts();
    if leader {
        eprintln!(
        "{}: {} train / {} validation / {} test texts of {} tokens; {trainable_parameters} of {total_parameters} parameters train ({what_trains})",
        job.model,
        data.train.len(),
        data.validation.len(),
        data.test.len(),
        data.train.length,
        );
    }
    // Every rank caches the frozen prefix of every example: the trainer picks its share.
    let first_block = frozen_blocks(job, classifier.model.num_blocks());
    let use_cache = job.prefix_cache && first_block > 0;
    let sources = batches::split_sources(&classifier, &data, if use_cache { first_block } else { 0 }, job.train.batch_size)?;
    if !job.resume && leader {
        run.write_run_json(json!({
            "task": "classification", "data": job.data.describe(), "model": job.model, "architecture": classifier.model.architecture(), "labels": classifier.labels(),
            "trainable": what_trains, "lora": lora.as_ref().map(|l| l.describe()), "pad_token": classifier.pad_token(), "max_length": data.train.length, "dropout": job.dropout,
            "prefix_cache": use_cache, "train": job.train, "device": format!("{:?}", job.device),
            "examples": { "train": data.train.len(), "validation": data.validation.len(), "test": data.test.len() },
            "world_size": world.world_size(),
        }))?;
    }
    let model = ClassifierTraining { classifier, first_block, grad_clip: job.train.optim.grad_clip };
    let outcome = train_classifier(model, job, &run, &device, &sources)?;
    if outcome.interrupted {
        return Err(crate::train::Interrupted { step: outcome.steps }.into());
    }

    let model = outcome.model.valid();
    let [train, validation, test] = evaluate_splits(&model, &sources, job, &run, outcome.steps, world.as_ref())?;
    let mut classifier = model.classifier;
    classifier.set_max_length(data.train.length);
    let report = |model_dir: PathBuf| ClassifierReport {
        train_accuracy: train.metrics.accuracy,
        validation_accuracy: validation.metrics.accuracy,
        test_accuracy: test.metrics.accuracy,
        test_macro_f1: test.metrics.macro_f1,
        train_loss: train.loss,
        validation_loss: validation.loss,
        test_loss: test.loss,
        steps: outcome.steps,
        trainable_parameters,
        total_parameters,
        length: data.train.length,
        seconds: started.elapsed().as_secs_f64(),
        model_dir,
    };
    if !leader {
        // Every rank holds the same classifier: rank 0 saves it.
        return Ok(report(run.model()));
    }
    let model_dir = save_classifier(classifier, job, lora.as_ref(), &run)?;
    if let Err(e) = plot_run(run.root()) {
        eprintln!("warning: could not draw the plots: {e:#}");
    }
    let report = report(model_dir);
    std::fs::create_dir_all(run.eval()).with_context(|| format!("creating {}", run.eval().display()))?;
    gpt::io::write_atomic(&run.eval().join("accuracy.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(report)
}

/// The model `--model` names with a new head, what trains (a set of blocks, or LoRA adapters),
/// and the splits tokenised with the model's tokenizer to the training length.
fn classifier_and_data(job: &ClassifierFinetune, device: &Device) -> Result<(Classifier, Splits<SpamDataset>, String)> {
    let (labels, splits) = job.data.load()?;
    let model_ref = ModelRef::resolve(&job.model);
    let quantize = job.lora.as_ref().and_then(LoraFinetune::quantize_at_load);
    let dtype = if job.lora.is_some() { super::lora::base_dtype(job.train.precision) } else { WeightDtype::F32 };
    let model = model_ref.load_language_model_quantized(device, job.train.seed, dtype, quantize.as_ref())?.map(|m| m.with_dropout(job.dropout));
    let tokenizer: Tokenizer = model_ref.tokenizer()?;
    let data = Splits::<SpamDataset>::tokenize(&splits, job.max_length, model.model().context_length(), &tokenizer)?;
    let classifier = model.try_map(|model| Classifier::new(model, labels, tokenizer.pad_id(), job.train.seed))?;
    Ok(match &job.lora {
        Some(lora) => {
            let adapted = lora.apply_to_classifier(classifier, job.train.seed)?;
            let summary = lora.for_model(&adapted.model)?.summary();
            (adapted, data, format!("{summary} + head"))
        }
        None => {
            let classifier = classifier.attach()?;
            super::ensure_full_weights(&classifier.model, &job.model)?;
            (classifier.set_trainable(job.trainable), data, job.trainable.to_string())
        }
    })
}

/// How many blocks at the bottom are frozen and deterministic (no dropout, embeddings frozen), so
/// that they can run outside autodiff (and be cached); 0 when none. Adapters sit in every block,
/// so with LoRA no block is.
fn frozen_blocks(job: &ClassifierFinetune, n_layer: usize) -> usize {
    let trainable_blocks = if job.lora.is_some() { n_layer } else { job.trainable.trainable_blocks(n_layer) };
    if job.dropout == 0.0 && trainable_blocks < n_layer { n_layer - trainable_blocks } else { 0 }
}

/// The one training loop, with the dashboard's loss, accuracy and learning rate.
fn train_classifier(
    model: ClassifierTraining,
    job: &ClassifierFinetune,
    run: &RunDir,
    device: &Device,
    sources: &Splits<std::sync::Arc<dyn BatchSource<ClassificationBatch>>>,
) -> Result<TrainOutcome<ClassifierTraining>> {
    let job_for_loop = TrainJob {
        config: job.train.clone(),
        run: run.clone(),
        device: device.clone(),
        train: sources.train.clone(),
        valid: sources.validation.clone(),
        resume: job.resume,
        dashboard: job.dashboard,
    };
    let metrics = {
        use crate::train::metrics::{Averaged, LearningRate};
        crate::train::DashboardMetrics::new().both(Averaged::loss()).both(Averaged::accuracy()).train(LearningRate::new())
    };
    train(model, job_for_loop, metrics, crate::train::trainer::NoHooks)
}

/// Mean loss and the scores (accuracy, macro-F1, per class) on a whole split.
#[derive(Debug, Clone)]
struct SplitScore {
    loss: f64,
    metrics: ClassificationMetrics,
}

/// Full scores on every split, as the book reports accuracy: logged to `metrics.jsonl` (loss,
/// accuracy, macro-F1) and kept whole in `eval/metrics.json`.
fn evaluate_splits(
    model: &ClassifierTraining,
    sources: &Splits<std::sync::Arc<dyn BatchSource<ClassificationBatch>>>,
    job: &ClassifierFinetune,
    run: &RunDir,
    steps: usize,
    world: &dyn Collective,
) -> Result<[SplitScore; 3]> {
    let plain = job.device.clone();
    let labels = model.classifier.labels();
    let score = |source: &dyn BatchSource<ClassificationBatch>| evaluate(model, labels, source, job.train.batch_size, &plain, world);
    let scores = [score(sources.train.as_ref())?, score(sources.validation.as_ref())?, score(sources.test.as_ref())?];
    if world.rank() != 0 {
        return Ok(scores);
    }
    let mut log = MetricsLog::open(&run.metrics(), None)?;
    for (split, score) in ["train", "val", "test"].into_iter().zip(&scores) {
        let mut event = MetricEvent::new(steps, job.train.epochs, split).with("full", true).with("final", true).with("macro_f1", score.metrics.macro_f1);
        (event.loss, event.accuracy) = (Some(score.loss), Some(score.metrics.accuracy));
        log.log(&event)?;
    }
    std::fs::create_dir_all(run.eval()).with_context(|| format!("creating {}", run.eval().display()))?;
    let [train, validation, test] = &scores;
    let all = json!({ "steps": steps, "train": train.metrics, "validation": validation.metrics, "test": test.metrics });
    gpt::io::write_atomic(&run.eval().join("metrics.json"), serde_json::to_string_pretty(&all)?.as_bytes())?;
    Ok(scores)
}

/// Mean loss and scores of `model` on a whole split: each rank scores every `ranks`-th batch
/// and the ranks add up their losses and confusion matrices.
fn evaluate(
    model: &ClassifierTraining,
    labels: &[String],
    source: &dyn BatchSource<ClassificationBatch>,
    batch_size: usize,
    device: &Device,
    world: &dyn Collective,
) -> Result<SplitScore> {
    let (rank, ranks, n) = (world.rank(), world.world_size(), labels.len());
    let indices: Vec<usize> = (0..source.len()).collect();
    // [loss sum, batches, confusion matrix row by row (truth, predicted)]
    let mut sums = vec![0.0f64; 2 + n * n];
    for chunk in indices.chunks(batch_size).enumerate().filter(|(i, _)| i % ranks == rank).map(|(_, chunk)| chunk) {
        let out = model.forward_batch(source.batch(chunk, device));
        sums[0] += out.loss();
        sums[1] += 1.0;
        let read = |t: Tensor<1, Int>| t.into_data().try_into_vec_as::<i64>().map_err(|e| anyhow::anyhow!("reading the predictions: {e:?}"));
        let (truth, predicted) = (read(out.targets.clone())?, read(out.output.clone().argmax(1).squeeze_dim::<1>(1))?);
        for (t, p) in truth.into_iter().zip(predicted) {
            sums[2 + t as usize * n + p as usize] += 1.0;
        }
    }
    world.all_reduce_sum(&mut sums)?;
    let confusion = sums[2..].chunks(n).map(|row| row.iter().map(|&c| c as usize).collect()).collect();
    Ok(SplitScore { loss: sums[0] / sums[1].max(1.0), metrics: ClassificationMetrics::from_confusion(labels, confusion) })
}

/// Saves the trained classifier: in the HF layout under `RUN_DIR/model` (with the base's
/// tokenizer files, for a family that has its own), or with LoRA its adapters and head under
/// `RUN_DIR/adapter` (and, with `--merge`, the merged model under `model/` too). Returns the
/// directory `llmfs classify` should load.
fn save_classifier(classifier: Classifier, job: &ClassifierFinetune, lora: Option<&super::LoraFinetune>, run: &RunDir) -> Result<PathBuf> {
    let base = ModelRef::resolve(&job.model);
    let save_model = |classifier: &Classifier, what: &str| -> Result<()> {
        gpt::hf::save_classifier_dir(classifier, &run.model()).with_context(|| format!("saving the {what} classifier"))?;
        gpt::hf::copy_model_tokenizer(&base.spec()?, &run.model()).context("copying the tokenizer files")?;
        Ok(())
    };
    let Some(lora) = lora else {
        save_model(&classifier, "fine-tuned")?;
        return Ok(run.model());
    };
    let config = gpt::lora::AdapterConfig::new(&lora.config, gpt::lora::AdapterTask::SequenceClassification, &base.model);
    gpt::hf::save_classifier_adapter_dir(&classifier, &run.adapter(), &config).context("saving the classifier's LoRA adapters")?;
    if !lora.merge {
        return Ok(run.adapter());
    }
    save_model(&classifier.materialize(), "merged")?;
    Ok(run.model())
}
