//! The one training loop of llmfs, as a burn-train learning strategy: burn-train supplies the
//! learner (model, AdamW, LR schedule), the TUI dashboard and its metrics; this loop adds what
//! fine-tuning and pretraining need on top: a data order that is a function of (seed, epoch), so
//! a run resumes mid-epoch exactly; evaluation every N steps on K batches; checkpoints every N
//! steps and every epoch; dropout seeded per step; every event in `metrics.jsonl`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use gpt::burn::data::dataloader::{DataLoaderBuilder, Progress, batcher::Batcher};
use gpt::burn::data::dataset::InMemDataset;
use gpt::burn::optim::GradientsAccumulator;
use gpt::burn::prelude::*;
use gpt::burn::train::renderer::{EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation, MetricsRendererTraining};
use gpt::burn::train::{
    EventProcessorTraining, InferenceStep, Learner, LearnerEvent, LearnerModel, LearningResult, SupervisedLearningStrategy,
    SupervisedTraining, SupervisedTrainingEventProcessor, TrainLoader, TrainStep, TrainingComponents, TrainingItem,
    TrainingStrategy, ValidLoader,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::runs::{MetricEvent, MetricsLog, RunDir};
use crate::train::checkpoint::{AtomicFileCheckpointer, KeepLast, TrainState};
use crate::train::decisions::{Stop, after_batch, after_epoch};
use crate::train::optim::{OptimConfig, Scheduler, scale_gradients};
use crate::train::precision::Precision;
use crate::train::steps::StepReport;

/// What every training run is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub optim: OptimConfig,
    /// Optimizer step every this many batches (gradients summed in between).
    pub grad_accumulation: usize,
    /// Evaluate every this many optimizer steps on `eval_batches` batches of each split.
    pub eval_every: Option<usize>,
    pub eval_batches: usize,
    /// Checkpoint every this many optimizer steps (and always at the end of an epoch).
    pub checkpoint_every: Option<usize>,
    /// Drop the last, smaller training batch of each epoch (the book does).
    pub drop_last: bool,
    /// Stop (with a checkpoint) after this many optimizer steps; `--resume` continues the run as
    /// if it had not stopped (the LR schedule still spans all epochs).
    #[serde(default)]
    pub stop_after_steps: Option<usize>,
    /// The run is at most this many optimizer steps long (pretraining counts steps, not epochs):
    /// the LR schedule spans them and the run ends there, complete.
    #[serde(default)]
    pub run_steps: Option<usize>,
    /// Visit the training examples in a seeded random order each epoch (else in order, as
    /// pretraining on token shards does).
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// A full pass over the validation split at the end of every epoch (else only the
    /// `eval_batches` evaluations, for validation sets too large to go through).
    #[serde(default = "yes")]
    pub full_validation: bool,
    /// The arithmetic of the matrix products (`--precision`).
    #[serde(default)]
    pub precision: Precision,
}

fn yes() -> bool {
    true
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 8,
            seed: 123,
            optim: OptimConfig::default(),
            grad_accumulation: 1,
            eval_every: None,
            eval_batches: 5,
            checkpoint_every: None,
            drop_last: true,
            stop_after_steps: None,
            run_steps: None,
            shuffle: true,
            full_validation: true,
            precision: Precision::F32,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.grad_accumulation == 0 {
            bail!("epochs, batch size and gradient accumulation must be at least 1");
        }
        if !(self.optim.lr > 0.0 && self.optim.lr <= 1.0) {
            bail!("the learning rate must be in (0, 1], got {}", self.optim.lr);
        }
        if self.eval_every == Some(0) || self.checkpoint_every == Some(0) || self.run_steps == Some(0) {
            bail!("--eval-every and --checkpoint-every must be at least 1");
        }
        Ok(())
    }

    /// Training batches per epoch for `n` examples.
    pub fn batches_per_epoch(&self, n: usize) -> usize {
        if self.drop_last { n / self.batch_size } else { n.div_ceil(self.batch_size) }
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self, n: usize) -> usize {
        let steps = self.epochs * self.batches_per_epoch(n).div_ceil(self.grad_accumulation);
        self.run_steps.map_or(steps, |limit| steps.min(limit))
    }

    /// The order of the training examples in `epoch` (see [`epoch_order`]).
    pub fn order(&self, n: usize, epoch: usize) -> Vec<usize> {
        if self.shuffle { epoch_order(n, self.seed, epoch) } else { (0..n).collect() }
    }
}

/// A data split the loop can batch by example index.
pub trait BatchSource<B>: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The batch of these examples, on `device`.
    fn batch(&self, indices: &[usize], device: &Device) -> B;
    /// Tokens in these examples (for tokens/s).
    fn tokens(&self, indices: &[usize]) -> usize;
    /// The training order of `epoch`, a permutation of `0..len()` that the loop cuts into
    /// consecutive batches: [`TrainConfig::order`] unless the source groups examples (e.g. by
    /// length, to cut padding). It must be a function of (config, epoch) for exact resumes.
    fn epoch_order(&self, config: &TrainConfig, epoch: usize) -> Vec<usize> {
        config.order(self.len(), epoch)
    }
}

/// The order of the training examples in `epoch`: a pure function of (seed, epoch), so a resumed
/// run sees exactly the batches the interrupted one would have.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    order
}

/// Everything a run needs besides the model.
pub struct TrainJob<B> {
    pub config: TrainConfig,
    pub run: RunDir,
    /// The training device (autodiff).
    pub device: Device,
    pub train: Arc<dyn BatchSource<B>>,
    pub valid: Arc<dyn BatchSource<B>>,
    /// Continue from the last checkpoint of `run`.
    pub resume: bool,
    /// Show burn-train's TUI (else plain lines on stderr).
    pub dashboard: bool,
}

/// What a task adds to the loop at fixed points, with the model in eval mode (e.g. the
/// instruction task generates a sample response after every epoch).
pub trait TrainHooks<M>: Send + Sync {
    /// Before the first step; `resume_step` is the step a resumed run continues from (its
    /// checkpoint's, 0 when it was stopped before its first checkpoint).
    fn start(&self, _resume_step: Option<usize>) -> Result<()> {
        Ok(())
    }

    /// After the end-of-epoch validation; events returned go to `metrics.jsonl` (and the plain log).
    fn epoch_end(&self, _model: &M, _epoch: usize, _step: usize) -> Result<Vec<MetricEvent>> {
        Ok(Vec::new())
    }

    /// Whether [`TrainHooks::step_end`] wants the model after optimizer step `step` (an eval-mode
    /// copy is made only then).
    fn wants_step(&self, _step: usize) -> bool {
        false
    }

    /// After optimizer step `step` (and its periodic evaluation), when [`TrainHooks::wants_step`].
    fn step_end(&self, _model: &M, _epoch: usize, _step: usize) -> Result<Vec<MetricEvent>> {
        Ok(Vec::new())
    }
}

/// No hooks.
pub struct NoHooks;

impl<M> TrainHooks<M> for NoHooks {}

/// Two hooks as one: both see every call (each `step_end` only at its own steps); their events
/// in this order.
impl<M, A: TrainHooks<M>, B: TrainHooks<M>> TrainHooks<M> for (A, B) {
    fn start(&self, resume_step: Option<usize>) -> Result<()> {
        self.0.start(resume_step)?;
        self.1.start(resume_step)
    }

    fn epoch_end(&self, model: &M, epoch: usize, step: usize) -> Result<Vec<MetricEvent>> {
        let mut events = self.0.epoch_end(model, epoch, step)?;
        events.extend(self.1.epoch_end(model, epoch, step)?);
        Ok(events)
    }

    fn wants_step(&self, step: usize) -> bool {
        self.0.wants_step(step) || self.1.wants_step(step)
    }

    fn step_end(&self, model: &M, epoch: usize, step: usize) -> Result<Vec<MetricEvent>> {
        let mut events = if self.0.wants_step(step) { self.0.step_end(model, epoch, step)? } else { Vec::new() };
        if self.1.wants_step(step) {
            events.extend(self.1.step_end(model, epoch, step)?);
        }
        Ok(events)
    }
}

/// A run that stopped before its end (Ctrl-C, `--max-steps`), with its last checkpoint: the error
/// of the job, which callers can tell from a failure (a tracker ends the run KILLED, not FAILED).
#[derive(Debug, thiserror::Error)]
#[error("training was interrupted at step {step}; continue with --resume")]
pub struct Interrupted {
    pub step: usize,
}

/// The trained model (in eval mode) and where the run stopped.
pub struct TrainOutcome<M> {
    pub model: M,
    pub steps: usize,
    pub interrupted: bool,
}

/// Runs the job. `metrics` registers the dashboard's metrics on burn-train's builder (they
/// depend on the model's output type).
pub fn train<M, B>(
    model: M,
    job: TrainJob<B>,
    metrics: impl FnOnce(SupervisedTraining<M>) -> SupervisedTraining<M>,
    hooks: impl TrainHooks<M> + 'static,
) -> Result<TrainOutcome<M>>
where
    M: LearnerModel + TrainStep<Input = B> + InferenceStep<Input = B>,
    <M as TrainStep>::Output: StepReport,
    <M as InferenceStep>::Output: StepReport,
    B: Clone + std::fmt::Debug + Send + Sync + 'static,
{
    job.config.validate()?;
    if job.train.len() < job.config.batch_size && job.config.drop_last {
        bail!("{} training examples make no batch of {}", job.train.len(), job.config.batch_size);
    }
    job.run.check_space(model.num_params())?;
    let precision = job.config.precision.apply(&job.device)?;
    if job.config.precision != Precision::F32 {
        eprintln!("--precision {}: matrix products on the {} path", job.config.precision, precision.path());
    }
    job.run.record_in_run_json("matmul", serde_json::json!(precision.path()))?;
    let checkpoints = job.run.checkpoints();
    let state = if job.resume { latest_complete_checkpoint(&checkpoints)? } else { None };
    if job.resume && state.is_none() {
        // Killed before its first checkpoint: nothing was kept, so resuming is starting over (and
        // dropping whatever the killed run logged).
        eprintln!("--resume: no complete checkpoint in {} yet: the run starts from the beginning", checkpoints.display());
    }
    // What the logs keep on resume: events up to the checkpoint's step (none before the first).
    let keep_through_step = job.resume.then(|| state.map_or(0, |s| s.step));
    let total_steps = job.config.total_steps(job.train.len());
    let optimizer = job.config.optim.optimizer();
    let scheduler = Scheduler::new(job.config.optim.schedule, job.config.optim.lr, total_steps);
    let learner = Learner::new(model, optimizer, scheduler);

    let metrics_log = MetricsLog::open(&job.run.metrics(), keep_through_step)?;
    hooks.start(keep_through_step)?;
    let strategy = LoopStrategy {
        config: job.config.clone(),
        device: job.device.clone(),
        train: job.train.clone(),
        valid: job.valid.clone(),
        checkpoints: checkpoints.clone(),
        resume_from: state,
        log: Mutex::new(metrics_log),
        outcome: Mutex::new(None),
        plain_progress: !job.dashboard,
        hooks,
    };
    let strategy = Arc::new(strategy);

    // burn-train wants data loaders; the loop batches by index itself (see `epoch_order`), so
    // these only describe the splits.
    let index_loader = |source: Arc<dyn BatchSource<B>>| {
        DataLoaderBuilder::new(IndexBatcher(source.clone())).batch_size(job.config.batch_size).build(InMemDataset::new((0..source.len()).collect::<Vec<_>>()))
    };
    let mut training = SupervisedTraining::new(job.run.root(), index_loader(job.train.clone()), index_loader(job.valid.clone()))
        .with_training_strategy(TrainingStrategy::Custom(strategy.clone()))
        .with_custom_checkpointers(
            AtomicFileCheckpointer::new(&checkpoints, "model"),
            AtomicFileCheckpointer::new(&checkpoints, "optim"),
            AtomicFileCheckpointer::new(&checkpoints, "scheduler"),
        )
        .with_checkpointing_strategy(KeepLast::new(2))
        .with_application_logger(None)
        .num_epochs(job.config.epochs);
    if !job.dashboard {
        training = training.renderer(Box::new(QuietRenderer));
    }
    let result: LearningResult<M> = metrics(training).launch(learner);
    if let Some(error) = result.error {
        bail!("training failed: {error}");
    }
    let outcome = strategy.outcome.lock().map_err(|_| anyhow::anyhow!("the training loop panicked"))?.take();
    let (steps, interrupted) = match outcome {
        Some(Ok(done)) => done,
        Some(Err(error)) => bail!("training stopped: {error}"),
        None => bail!("the training loop did not run"),
    };
    let model = result.model;
    // Drop the renderer (the TUI leaves the alternate screen) before anything else prints.
    drop(result.renderer);
    Ok(TrainOutcome { model, steps, interrupted })
}

/// The newest checkpoint whose three record files are all on disk.
fn latest_complete_checkpoint(dir: &std::path::Path) -> Result<Option<TrainState>> {
    let Some(states) = TrainState::load_all(dir)? else {
        return Ok(None);
    };
    Ok(states.into_iter().rev().find(|s| {
        ["model", "optim", "scheduler"].iter().all(|name| dir.join(format!("{name}-{}.bpk", s.step)).is_file())
    }))
}

#[derive(Clone)]
struct IndexBatcher<B>(Arc<dyn BatchSource<B>>);

impl<B: Send + Sync> Batcher<usize, B> for IndexBatcher<B> {
    fn batch(&self, items: Vec<usize>, device: &Device) -> B {
        self.0.batch(&items, device)
    }
}

/// A renderer that draws nothing: without a terminal the loop prints its own one-line events.
struct QuietRenderer;

impl MetricsRendererTraining for QuietRenderer {
    fn update_train(&mut self, _state: MetricState) {}
    fn update_valid(&mut self, _state: MetricState) {}
}

impl MetricsRendererEvaluation for QuietRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}

impl gpt::burn::train::logger::TrainingProgressLogger for QuietRenderer {
    fn start(&mut self, _: usize, _: usize, _: Option<usize>, _: Option<&str>) {}
    fn update_epoch(&mut self, _: usize) {}
    fn start_split(&mut self, _: &str, _: usize) {}
    fn update_split(&mut self, _: usize) {}
    fn end_split(&mut self) {}
    fn end(&mut self) {}
    fn log_event_training(&mut self, _: String) {}
}

impl gpt::burn::train::logger::EvaluationProgressLogger for QuietRenderer {
    fn start_global_progress(&mut self, _: usize) {}
    fn start_test(&mut self, _: &str, _: usize) {}
    fn update_test_progress(&mut self, _: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _: String) {}
}

impl MetricsRenderer for QuietRenderer {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, _definition: gpt::burn::train::metric::MetricDefinition) {}
}

struct LoopStrategy<B, H> {
    config: TrainConfig,
    device: Device,
    train: Arc<dyn BatchSource<B>>,
    valid: Arc<dyn BatchSource<B>>,
    checkpoints: PathBuf,
    resume_from: Option<TrainState>,
    log: Mutex<MetricsLog>,
    /// (optimizer steps done, stopped before the last epoch), or the error that stopped the loop,
    /// handed back to `train`. (burn-train's own `interrupted` flag is unreliable: its dashboard
    /// resets the interrupter when training ends.)
    outcome: Mutex<Option<std::result::Result<(usize, bool), String>>>,
    plain_progress: bool,
    hooks: H,
}

/// Mean loss and accuracy over batches.
#[derive(Default)]
struct Tally {
    loss_sum: f64,
    batches: usize,
    correct: usize,
    counted: usize,
    language_modelling: bool,
}

impl Tally {
    fn add(&mut self, report: &impl StepReport) {
        self.loss_sum += report.loss();
        self.batches += 1;
        self.language_modelling |= report.is_language_modelling();
        if let Some((correct, counted)) = report.correct() {
            self.correct += correct;
            self.counted += counted;
        }
    }

    /// Sets the event's mean loss, and its accuracy and perplexity where they apply.
    fn fill(&self, event: &mut MetricEvent) {
        let loss = self.loss_sum / self.batches.max(1) as f64;
        event.loss = Some(loss);
        if self.counted > 0 {
            event.accuracy = Some(self.correct as f64 / self.counted as f64);
        }
        if self.language_modelling {
            event.perplexity = Some(loss.exp());
        }
    }
}

impl<B, H> LoopStrategy<B, H>
where
    B: Clone + std::fmt::Debug + Send + Sync + 'static,
{
    fn log(&self, event: MetricEvent) -> Result<()> {
        if self.plain_progress {
            eprintln!("{}", plain_line(&event));
        }
        self.log.lock().map_err(|_| anyhow::anyhow!("metrics log poisoned"))?.log(&event)
    }

    /// Mean loss/accuracy of `model` (eval mode) on the first `max_batches` batches of `source`
    /// (all with `None`), in file order.
    fn evaluate<M>(&self, model: &M, source: &dyn BatchSource<B>, max_batches: Option<usize>) -> Tally
    where
        M: InferenceStep<Input = B>,
        <M as InferenceStep>::Output: StepReport,
    {
        let device = self.device.clone().without_autodiff();
        let indices: Vec<usize> = (0..source.len()).collect();
        let mut tally = Tally::default();
        for chunk in indices.chunks(self.config.batch_size).take(max_batches.unwrap_or(usize::MAX)) {
            tally.add(&InferenceStep::step(model, source.batch(chunk, &device)));
        }
        tally
    }

    fn checkpoint<M: LearnerModel>(&self, components: &mut TrainingComponents<M>, learner: &Learner<M>, state: TrainState) -> Result<()> {
        if let Some(checkpointer) = &mut components.checkpointer {
            checkpointer.checkpoint(learner, state.step, &components.event_store);
            state.append_to(&self.checkpoints)?;
        }
        Ok(())
    }
}

/// Tells burn-train (and its dashboard) that `--max-steps` stopped the run; other stops came from
/// its interrupter or end the run.
fn announce<M: LearnerModel>(components: &TrainingComponents<M>, stop: Stop, step: usize) {
    if stop == Stop::MaxSteps {
        components.interrupter.stop(Some(&format!("stopped after {step} steps (--max-steps)")));
    }
}

/// One human line for an event, for logs and pipes.
fn plain_line(event: &MetricEvent) -> String {
    let mut line = format!("epoch {} step {} {}", event.epoch, event.step, event.split);
    if let Some(loss) = event.loss {
        line.push_str(&format!(" loss {loss:.4}"));
    }
    if let Some(accuracy) = event.accuracy {
        line.push_str(&format!(" accuracy {:.1}%", 100.0 * accuracy));
    }
    if let Some(perplexity) = event.perplexity {
        line.push_str(&format!(" perplexity {perplexity:.2}"));
    }
    if let Some(lr) = event.lr {
        line.push_str(&format!(" lr {lr:.2e}"));
    }
    if let Some(speed) = event.tokens_per_s {
        line.push_str(&format!(" {speed:.0} tok/s"));
    }
    line
}

impl<M, B, H> SupervisedLearningStrategy<M> for LoopStrategy<B, H>
where
    H: TrainHooks<M> + 'static,
    M: LearnerModel + TrainStep<Input = B> + InferenceStep<Input = B>,
    <M as TrainStep>::Output: StepReport,
    <M as InferenceStep>::Output: StepReport,
    B: Clone + std::fmt::Debug + Send + Sync + 'static,
{
    fn fit(
        &self,
        mut components: TrainingComponents<M>,
        mut learner: Learner<M>,
        _train: TrainLoader<M>,
        _valid: ValidLoader<M>,
        _starting_epoch: usize,
    ) -> (M, SupervisedTrainingEventProcessor<M>) {
        let result = self.run(&mut components, &mut learner).map_err(|e| format!("{e:#}"));
        if let Ok(mut outcome) = self.outcome.lock() {
            *outcome = Some(result);
        }
        (learner.model(), components.event_processor)
    }
}

impl<B, H> LoopStrategy<B, H>
where
    B: Clone + std::fmt::Debug + Send + Sync + 'static,
{
    /// The whole run: epochs until the last, or until a stop. Returns the optimizer steps done and
    /// whether the run was left unfinished (to be continued with `--resume`).
    fn run<M>(&self, components: &mut TrainingComponents<M>, learner: &mut Learner<M>) -> Result<(usize, bool)>
    where
        M: LearnerModel + TrainStep<Input = B> + InferenceStep<Input = B>,
        <M as TrainStep>::Output: StepReport,
        <M as InferenceStep>::Output: StepReport,
        H: TrainHooks<M>,
    {
        learner.fork(&self.device);
        let mut state = TrainState { step: 0, epoch: 1, batch: 0 };
        if let Some(resume) = self.resume_from {
            let checkpointer = components.checkpointer.as_ref().context("resuming needs the checkpointer")?;
            *learner = checkpointer.load_checkpoint(learner.clone(), resume.step);
            state = resume;
        }
        while state.epoch <= self.config.epochs {
            let epoch = state.epoch;
            let stopped = self.train_epoch(components, learner, &mut state)?;
            components.event_processor.process_train(LearnerEvent::EndSplit(epoch))?;
            if let Some(stop) = stopped {
                if stop == Stop::RunComplete {
                    self.run_hooks(&learner.model().valid(), epoch, state.step)?;
                }
                return Ok((state.step, stop.leaves_run_unfinished()));
            }
            self.end_epoch(components, &learner.model().valid(), epoch, state.step)?;
            state = TrainState { step: state.step, epoch: epoch + 1, batch: 0 };
            self.checkpoint(components, learner, state)?;
            if let Some(stop) = after_epoch(&self.config, state.step, state.epoch, components.interrupter.should_stop()) {
                announce(components, stop, state.step);
                return Ok((state.step, stop.leaves_run_unfinished()));
            }
        }
        Ok((state.step, false))
    }

    /// The batches of `state.epoch` from `state.batch` on, with the evaluations, hooks and
    /// checkpoints [`after_batch`] asks for. `Some(stop)` when the run stops inside the epoch
    /// (checkpointed there).
    fn train_epoch<M>(&self, components: &mut TrainingComponents<M>, learner: &mut Learner<M>, state: &mut TrainState) -> Result<Option<Stop>>
    where
        M: LearnerModel + TrainStep<Input = B> + InferenceStep<Input = B>,
        <M as TrainStep>::Output: StepReport,
        <M as InferenceStep>::Output: StepReport,
        H: TrainHooks<M>,
    {
        let (config, epoch, n_train) = (&self.config, state.epoch, self.train.len());
        let batches = config.batches_per_epoch(n_train);
        let order = self.train.epoch_order(config, epoch);
        if order.len() != n_train {
            bail!("the training order of epoch {epoch} has {} examples, not {n_train}", order.len());
        }
        components.event_processor.process_train(LearnerEvent::StartSplit { epoch_number: epoch, total_items: batches })?;
        let mut accumulator = GradientsAccumulator::new();
        let mut accumulated = 0;
        for batch_index in state.batch..batches {
            let started = Instant::now();
            let indices = &order[batch_index * config.batch_size..((batch_index + 1) * config.batch_size).min(n_train)];
            // Dropout masks depend only on (seed, step, batch): a resumed run draws the same.
            self.device.seed(config.seed ^ ((epoch * batches + batch_index) as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            let output = learner.train_step(self.train.batch(indices, &self.device));
            accumulator.accumulate(&learner.model(), output.grads);
            accumulated += 1;
            let last_of_epoch = batch_index + 1 == batches;
            let stepped = accumulated == config.grad_accumulation || last_of_epoch;
            if stepped {
                learner.lr_step();
                // The mean over the accumulated batches, as one large batch would give (and
                // what --grad-clip should see), not their sum.
                let grads = accumulator.grads();
                let grads = if accumulated > 1 { scale_gradients(&learner.model(), grads, 1.0 / accumulated as f64) } else { grads };
                learner.optimizer_step(grads);
                accumulated = 0;
                state.step += 1;
            }
            let mut event = MetricEvent::new(state.step, epoch, "train").with("batch", batch_index + 1);
            event.examples_seen = Some(((epoch - 1) * n_train + (batch_index + 1) * config.batch_size) as u64);
            event.lr = Some(learner.lr_current().base());
            event.tokens_per_s = Some(self.train.tokens(indices) as f64 / started.elapsed().as_secs_f64().max(1e-9));
            let mut tally = Tally::default();
            tally.add(&output.item);
            tally.fill(&mut event);
            self.log(event)?;
            let progress = Progress::new(batch_index + 1, batches, Some("batches".to_string()));
            let item = TrainingItem::new(output.item, progress, Some(batch_index + 1), Some(learner.lr_current()));
            components.event_processor.process_train(LearnerEvent::ProcessedItem(item))?;

            let actions = after_batch(config, state.step, stepped, last_of_epoch, components.interrupter.should_stop());
            if actions.evaluate {
                self.periodic_evaluation(&learner.model().valid(), epoch, state.step)?;
            }
            if stepped && self.hooks.wants_step(state.step) {
                for event in self.hooks.step_end(&learner.model().valid(), epoch, state.step)? {
                    self.log(event)?;
                }
            }
            if actions.checkpoint {
                self.checkpoint(components, learner, TrainState { step: state.step, epoch, batch: batch_index + 1 })?;
            }
            if let Some(stop) = actions.stop {
                announce(components, stop, state.step);
                return Ok(Some(stop));
            }
        }
        Ok(None)
    }

    /// Loss (and accuracy) on `eval_batches` batches of the training and the validation split.
    fn periodic_evaluation<M>(&self, model: &M, epoch: usize, step: usize) -> Result<()>
    where
        M: InferenceStep<Input = B>,
        <M as InferenceStep>::Output: StepReport,
    {
        for (split, source) in [("train_eval", &self.train), ("val", &self.valid)] {
            let mut event = MetricEvent::new(step, epoch, split);
            self.evaluate(model, source.as_ref(), Some(self.config.eval_batches)).fill(&mut event);
            self.log(event)?;
        }
        Ok(())
    }

    /// The end of an epoch: a full validation pass (when configured), the task's hooks, the
    /// dashboard's epoch event.
    fn end_epoch<M>(&self, components: &mut TrainingComponents<M>, model: &M, epoch: usize, step: usize) -> Result<()>
    where
        M: LearnerModel + TrainStep<Input = B> + InferenceStep<Input = B>,
        <M as InferenceStep>::Output: StepReport,
        H: TrainHooks<M>,
    {
        if self.config.full_validation {
            self.full_validation(components, model, epoch, step)?;
        }
        self.run_hooks(model, epoch, step)?;
        components.event_processor.process_train(LearnerEvent::EndEpoch(epoch))?;
        Ok(())
    }

    /// Events from the task's hooks, logged.
    fn run_hooks<M>(&self, model: &M, epoch: usize, step: usize) -> Result<()>
    where
        H: TrainHooks<M>,
    {
        for event in self.hooks.epoch_end(model, epoch, step)? {
            self.log(event)?;
        }
        Ok(())
    }

    /// A pass over the whole validation split, shown on the dashboard too.
    fn full_validation<M>(&self, components: &mut TrainingComponents<M>, model: &M, epoch: usize, step: usize) -> Result<()>
    where
        M: LearnerModel + TrainStep<Input = B> + InferenceStep<Input = B>,
        <M as InferenceStep>::Output: StepReport,
    {
        let valid_indices: Vec<usize> = (0..self.valid.len()).collect();
        let valid_batches = valid_indices.chunks(self.config.batch_size).count();
        components.event_processor.process_valid(LearnerEvent::StartSplit { epoch_number: epoch, total_items: valid_batches })?;
        let mut tally = Tally::default();
        let plain_device = self.device.clone().without_autodiff();
        for (i, chunk) in valid_indices.chunks(self.config.batch_size).enumerate() {
            let output = InferenceStep::step(model, self.valid.batch(chunk, &plain_device));
            tally.add(&output);
            let progress = Progress::new(i + 1, valid_batches, Some("batches".to_string()));
            components.event_processor.process_valid(LearnerEvent::ProcessedItem(TrainingItem::new(output, progress, Some(i + 1), None)))?;
        }
        components.event_processor.process_valid(LearnerEvent::EndSplit(epoch))?;
        let mut event = MetricEvent::new(step, epoch, "val").with("full", true);
        tally.fill(&mut event);
        self.log(event)
    }
}
