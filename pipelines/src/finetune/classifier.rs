//! Fine-tuning GPT-2 as a text classifier (*Build a LLM From Scratch*, ch. 6): the SMS-spam task,
//! or any labelled texts in the same `Label,Text` CSV splits.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use gpt::burn::prelude::*;
use crate::runs::ModelRef;
use gpt::{GptClassifier, Tokenizer, Trainable};
use serde::Serialize;
use serde_json::json;

use crate::data::spam::{LABEL_NAMES, Message, SpamDataset, Splits, read_splits};
use crate::plots::plot_run;
use crate::runs::{MetricsLog, RunDir};
use crate::train::steps::{ClassificationBatch, ClassifierInput, ClassifierTraining, StepReport};
use crate::train::trainer::{BatchSource, TrainConfig, TrainJob, train};

/// Everything `llmfs finetune spam` takes.
#[derive(Debug, Clone)]
pub struct ClassifierFinetune {
    /// `--model`: preset/hub id, HF directory, run directory or `random:<preset>`.
    pub model: String,
    /// Directory with `train.csv`, `validation.csv`, `test.csv` (`llmfs prepare spam`).
    pub data: PathBuf,
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

/// Token batches of a tokenised split.
struct TokenBatches(SpamDataset);

/// Token ids `[B, length]` of these examples.
fn token_ids(data: &SpamDataset, indices: &[usize], device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = indices.iter().flat_map(|&i| data.token_ids[i].iter().map(|&t| t as i64)).collect();
    Tensor::from_data(TensorData::new(ids, [indices.len(), data.length]), device)
}

impl BatchSource<ClassificationBatch> for TokenBatches {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> ClassificationBatch {
        let ids = token_ids(&self.0, indices, device);
        ClassificationBatch { inputs: ClassifierInput::Tokens(ids), labels: labels_tensor(&self.0.labels, indices, device) }
    }

    fn tokens(&self, indices: &[usize]) -> usize {
        indices.len() * self.0.length
    }
}

fn labels_tensor(labels: &[u8], indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| labels[i] as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

/// The frozen prefix's output for every example of a split, kept on the host: with everything
/// below the trainable blocks frozen and dropout off there, this is what those blocks would
/// compute again at every epoch.
struct PrefixBatches {
    values: Vec<f32>,
    labels: Vec<u8>,
    length: usize,
    width: usize,
}

impl PrefixBatches {
    fn compute(classifier: &GptClassifier, data: &SpamDataset, first_block: usize, batch_size: usize) -> Result<Self> {
        let gpt = classifier.gpt.valid();
        let device = gpt.device();
        let width = gpt.config().n_embd;
        let mut values = Vec::with_capacity(data.len() * data.length * width);
        let indices: Vec<usize> = (0..data.len()).collect();
        for chunk in indices.chunks(batch_size.max(1)) {
            let x = gpt.run_blocks(gpt.embed_tokens(token_ids(data, chunk, &device)), 0..first_block);
            values.extend(x.into_data().try_into_vec_as::<f32>().map_err(|e| anyhow::anyhow!("reading the prefix cache: {e:?}"))?);
        }
        Ok(Self { values, labels: data.labels.clone(), length: data.length, width })
    }
}

impl BatchSource<ClassificationBatch> for PrefixBatches {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> ClassificationBatch {
        let per_example = self.length * self.width;
        let mut values = Vec::with_capacity(indices.len() * per_example);
        for &i in indices {
            values.extend_from_slice(&self.values[i * per_example..(i + 1) * per_example]);
        }
        let x = Tensor::<3>::from_data(TensorData::new(values, [indices.len(), self.length, self.width]), device);
        ClassificationBatch { inputs: ClassifierInput::Prefix(x), labels: labels_tensor(&self.labels, indices, device) }
    }

    fn tokens(&self, indices: &[usize]) -> usize {
        indices.len() * self.length
    }
}

fn as_source(source: impl BatchSource<ClassificationBatch> + 'static) -> Arc<dyn BatchSource<ClassificationBatch>> {
    Arc::new(source)
}

/// Mean loss and accuracy of `model` on a whole split.
fn evaluate(model: &ClassifierTraining, source: &dyn BatchSource<ClassificationBatch>, batch_size: usize, device: &Device) -> (f64, f64) {
    let indices: Vec<usize> = (0..source.len()).collect();
    let (mut loss, mut batches, mut correct, mut counted) = (0.0, 0, 0, 0);
    for chunk in indices.chunks(batch_size) {
        let out = model.forward_batch(source.batch(chunk, device));
        loss += out.loss();
        batches += 1;
        if let Some((c, n)) = out.correct() {
            correct += c;
            counted += n;
        }
    }
    (loss / batches.max(1) as f64, correct as f64 / counted.max(1) as f64)
}

/// Fine-tunes, evaluates every split, saves the classifier to `RUN_DIR/model` and draws the plots.
pub fn finetune_classifier(job: &ClassifierFinetune) -> Result<ClassifierReport> {
    let started = std::time::Instant::now();
    let run = RunDir::open(&job.run_dir, job.resume)?;
    let splits: Splits<Vec<Message>> = read_splits(&job.data)?;
    let device = job.device.clone().autodiff();
    device.seed(job.train.seed);
    let gpt = ModelRef::resolve(&job.model).load(&device, job.train.seed)?.with_dropout(job.dropout);
    let n_layer = gpt.config().n_layer;
    let context = gpt.config().n_positions;
    let data = Splits::<SpamDataset>::tokenize(&splits, job.max_length, context)?;
    let labels: Vec<String> = LABEL_NAMES.iter().map(|s| s.to_string()).collect();
    let classifier = GptClassifier::new(gpt, labels, job.train.seed)?;
    let (classifier, what_trains) = match &job.lora {
        Some(lora) => (lora.config.apply_to_classifier(classifier, job.train.seed)?, format!("{} + head", lora.summary())),
        None => (classifier.set_trainable(job.trainable), job.trainable.to_string()),
    };
    let (trainable_parameters, total_parameters) = classifier.parameter_counts();
    eprintln!(
        "{}: {} train / {} validation / {} test texts of {} tokens; {trainable_parameters} of {total_parameters} parameters train ({what_trains})",
        job.model,
        data.train.len(),
        data.validation.len(),
        data.test.len(),
        data.train.length,
    );

    // The frozen part runs outside autodiff (and may be cached) only when it is deterministic:
    // no dropout, embeddings frozen. Adapters sit in every block, so with LoRA no block is.
    let trainable_blocks = if job.lora.is_some() { n_layer } else { job.trainable.trainable_blocks(n_layer) };
    let frozen_prefix = job.dropout == 0.0 && trainable_blocks < n_layer;
    let first_block = if frozen_prefix { n_layer - trainable_blocks } else { 0 };
    let use_cache = job.prefix_cache && first_block > 0;
    let sources: Splits<Arc<dyn BatchSource<ClassificationBatch>>> = if use_cache {
        let cache_started = std::time::Instant::now();
        let compute = |d: &SpamDataset| PrefixBatches::compute(&classifier, d, first_block, job.train.batch_size).map(as_source);
        let sources = Splits { train: compute(&data.train)?, validation: compute(&data.validation)?, test: compute(&data.test)? };
        eprintln!("cached the output of the {first_block} frozen blocks in {:.1}s", cache_started.elapsed().as_secs_f64());
        sources
    } else {
        Splits {
            train: as_source(TokenBatches(data.train.clone())),
            validation: as_source(TokenBatches(data.validation.clone())),
            test: as_source(TokenBatches(data.test.clone())),
        }
    };

    if !job.resume {
        run.write_run_json(json!({
            "task": "classification", "data": job.data, "model": job.model, "labels": LABEL_NAMES,
            "trainable": what_trains, "lora": job.lora.as_ref().map(|l| l.describe()), "max_length": data.train.length, "dropout": job.dropout,
            "prefix_cache": use_cache, "train": job.train, "device": format!("{:?}", job.device),
            "examples": { "train": data.train.len(), "validation": data.validation.len(), "test": data.test.len() },
        }))?;
    }
    let model = ClassifierTraining { classifier, first_block, grad_clip: job.train.optim.grad_clip };
    let outcome = train(
        model,
        TrainJob {
            config: job.train.clone(),
            run: run.clone(),
            device: device.clone(),
            train: sources.train.clone(),
            valid: sources.validation.clone(),
            resume: job.resume,
            dashboard: job.dashboard,
        },
        |training| {
            use gpt::burn::train::metric::{AccuracyMetric, LossMetric};
            use crate::train::metrics::LearningRate;
            training
                .metrics((LossMetric::new(), AccuracyMetric::new()))
                .metric_train_numeric(LearningRate::new())
                .summary()
        },
        crate::train::trainer::NoHooks,
    )?;
    if outcome.interrupted {
        anyhow::bail!("training was interrupted at step {}; continue with --resume", outcome.steps);
    }

    // Full accuracy on every split, as the book reports it.
    let plain = job.device.clone();
    let model = outcome.model.valid();
    let batch = job.train.batch_size;
    let (train_loss, train_accuracy) = evaluate(&model, sources.train.as_ref(), batch, &plain);
    let (validation_loss, validation_accuracy) = evaluate(&model, sources.validation.as_ref(), batch, &plain);
    let (test_loss, test_accuracy) = evaluate(&model, sources.test.as_ref(), batch, &plain);
    let mut log = MetricsLog::open(&run.metrics(), None)?;
    let epoch = job.train.epochs;
    for (split, loss, accuracy) in [("train", train_loss, train_accuracy), ("val", validation_loss, validation_accuracy), ("test", test_loss, test_accuracy)] {
        log.log(json!({ "step": outcome.steps, "epoch": epoch, "split": split, "loss": loss, "accuracy": accuracy, "full": true, "final": true }))?;
    }

    let mut classifier = model.classifier;
    classifier.set_max_length(data.train.length);
    let model_dir = save_classifier(classifier, job, &run)?;
    if let Err(e) = plot_run(run.root()) {
        eprintln!("warning: could not draw the plots: {e:#}");
    }
    let report = ClassifierReport {
        train_accuracy,
        validation_accuracy,
        test_accuracy,
        train_loss,
        validation_loss,
        test_loss,
        steps: outcome.steps,
        trainable_parameters,
        total_parameters,
        length: data.train.length,
        seconds: started.elapsed().as_secs_f64(),
        model_dir,
    };
    std::fs::create_dir_all(run.eval()).with_context(|| format!("creating {}", run.eval().display()))?;
    gpt::io::write_atomic(&run.eval().join("accuracy.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(report)
}

/// Saves the trained classifier: in the HF layout under `RUN_DIR/model`, or with LoRA its
/// adapters and head under `RUN_DIR/adapter` (and, with `--merge`, the merged model under
/// `model/` too). Returns the directory `llmfs classify` should load.
fn save_classifier(classifier: GptClassifier, job: &ClassifierFinetune, run: &RunDir) -> Result<PathBuf> {
    let Some(lora) = &job.lora else {
        gpt::hf::save_classifier_dir(&classifier, &run.model()).context("saving the fine-tuned classifier")?;
        return Ok(run.model());
    };
    let config = gpt::lora::AdapterConfig::new(&lora.config, gpt::lora::AdapterTask::SequenceClassification, &ModelRef::resolve(&job.model).model);
    gpt::hf::save_classifier_adapter_dir(&classifier, &run.adapter(), &config).context("saving the classifier's LoRA adapters")?;
    if !lora.merge {
        return Ok(run.adapter());
    }
    gpt::hf::save_classifier_dir(&classifier.materialize(), &run.model()).context("saving the merged classifier")?;
    Ok(run.model())
}

/// One prediction of [`classify_texts`].
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub text: String,
    pub label: String,
    pub probability: f64,
    pub probabilities: Vec<f64>,
}

/// Classifies texts the way the classifier was trained: cut/padded to its training length, the
/// logits of the last position.
pub fn classify_texts(classifier: &GptClassifier, texts: &[String], batch_size: usize) -> Result<Vec<Prediction>> {
    let tokenizer = Tokenizer::gpt2();
    let device = classifier.gpt.device();
    let length = classifier.max_length().unwrap_or(classifier.config().n_positions).min(classifier.config().n_positions);
    let mut predictions = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(batch_size.max(1)) {
        let mut ids = Vec::with_capacity(chunk.len() * length);
        for text in chunk {
            let mut tokens = tokenizer.encode(text);
            tokens.resize(length, gpt::EOT_TOKEN);
            ids.extend(tokens.into_iter().map(|t| t as i64));
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [chunk.len(), length]), &device);
        let probabilities = gpt::burn::tensor::activation::softmax(classifier.forward(ids), 1);
        let probabilities: Vec<f32> = probabilities.into_data().try_into_vec_as::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let n = classifier.labels().len();
        for (text, row) in chunk.iter().zip(probabilities.chunks(n)) {
            let best = gpt::generate::sampling::argmax(row) as usize;
            predictions.push(Prediction {
                text: text.clone(),
                label: classifier.labels()[best].clone(),
                probability: row[best] as f64,
                probabilities: row.iter().map(|&p| p as f64).collect(),
            });
        }
    }
    Ok(predictions)
}

/// Accuracy, mean cross-entropy and the confusion matrix of a classifier on labelled messages.
#[derive(Debug, Clone, Serialize)]
pub struct SplitEvaluation {
    pub n: usize,
    pub accuracy: f64,
    pub loss: f64,
    /// `confusion[true label][predicted label]`.
    pub confusion: Vec<Vec<usize>>,
}

/// Evaluates `classifier` on `messages` (e.g. a split read with `read_split_csv`), as
/// [`classify_texts`] classifies them.
pub fn evaluate_messages(classifier: &GptClassifier, messages: &[Message], batch_size: usize) -> Result<SplitEvaluation> {
    let n_labels = classifier.labels().len();
    if let Some(bad) = messages.iter().find(|m| m.label as usize >= n_labels) {
        anyhow::bail!("label {} is not one of the classifier's {n_labels} labels ({:?})", bad.label, bad.text);
    }
    let texts: Vec<String> = messages.iter().map(|m| m.text.clone()).collect();
    let predictions = classify_texts(classifier, &texts, batch_size)?;
    let mut confusion = vec![vec![0; n_labels]; n_labels];
    let mut loss = 0.0;
    for (message, prediction) in messages.iter().zip(&predictions) {
        let predicted = classifier.labels().iter().position(|l| *l == prediction.label).unwrap_or(0);
        confusion[message.label as usize][predicted] += 1;
        loss -= prediction.probabilities[message.label as usize].max(1e-30).ln();
    }
    let n = messages.len();
    let correct: usize = (0..n_labels).map(|i| confusion[i][i]).sum();
    Ok(SplitEvaluation { n, accuracy: correct as f64 / n.max(1) as f64, loss: loss / n.max(1) as f64, confusion })
}
