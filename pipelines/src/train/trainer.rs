//! The one training loop of llmfs: epochs of batches in a data order that is a function of
//! (seed, epoch), so a run resumes mid-epoch exactly; evaluation every N steps on K batches;
//! checkpoints every N steps and every epoch; dropout seeded per step; every event in
//! `metrics.jsonl`. What to do after a batch or an epoch is [`decisions`](super::decisions)'
//! pure function; burn-train supplies the parts: the optimizer and LR schedule stepping, the
//! checkpoint records and the terminal dashboard.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use gpt::burn::optim::GradientsAccumulator;
use gpt::burn::prelude::*;
use gpt::burn::train::{InferenceStep, Interrupter, LearnerModel, TrainStep};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::distributed::{Collective, GradientBuffers, average_gradients, broadcast_parameters};
use crate::runs::{MetricEvent, MetricsLog, RunDir};
use crate::train::checkpoint::{Checkpoints, Saved, TrainState};
use crate::train::dashboard::{Dashboard, DashboardMetrics, Split, plain_line};
use crate::train::decisions::{Stop, after_batch, after_epoch};
use crate::train::learner::Learner;
use crate::train::metrics::{StepStats, Tally};
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

/// Runs the job: checks and set-up, then the loop ([`Trainer::run`]), then what it left: the
/// trained model, or the error that stopped it. `metrics` are the dashboard's.
pub fn train<M, B>(model: M, job: TrainJob<B>, metrics: DashboardMetrics, hooks: impl TrainHooks<M>) -> Result<TrainOutcome<M>>
where
    M: LearnerModel + TrainStep<Input = B> + InferenceStep<Input = B>,
    <M as TrainStep>::Output: StepReport,
    <M as InferenceStep>::Output: StepReport,
{
    job.config.validate()?;
    if job.train.len() < job.config.batch_size && job.config.drop_last {
        bail!("{} training examples make no batch of {}", job.train.len(), job.config.batch_size);
    }
    // Data-parallel: every rank trains on its share of each global batch; rank 0 alone writes.
    let world = crate::distributed::current();
    let leader = world.rank() == 0;
    if world.world_size() > 1 && !job.config.drop_last {
        bail!("data-parallel training drops the last, smaller batch of each epoch (every rank needs a batch)");
    }
    job.run.check_space(model.num_params())?;
    let precision = job.config.precision.apply(&job.device)?;
    if job.config.precision != Precision::F32 && leader {
        eprintln!("--precision {}: matrix products on the {} path", job.config.precision, precision.path());
    }
    if leader {
        job.run.record_in_run_json("matmul", serde_json::json!(precision.path()))?;
        if world.world_size() > 1 || world.device_group().is_some() {
            let how = if world.device_group().is_some() { "on the devices (NCCL)" } else { "through host memory" };
            job.run.record_in_run_json("gradients_averaged", serde_json::json!(how))?;
        }
    }
    let dir = job.run.checkpoints();
    let resume_from = if job.resume { latest_complete_checkpoint(&dir)? } else { None };
    if job.resume && resume_from.is_none() {
        // Killed before its first checkpoint: nothing was kept, so resuming is starting over (and
        // dropping whatever the killed run logged).
        eprintln!("--resume: no complete checkpoint in {} yet: the run starts from the beginning", dir.display());
    }
    // What the logs keep on resume: events up to the checkpoint's step (none before the first).
    let keep_through_step = job.resume.then(|| resume_from.map_or(0, |s| s.at.step));
    let scheduler = Scheduler::new(job.config.optim.schedule, job.config.optim.lr, job.config.total_steps(job.train.len()));
    let mut learner = Learner::new(model, job.config.optim.optimizer(), scheduler, &job.device).with_loss_scaler(job.config.precision.loss_scaler());
    // Stopped by the dashboard's stop key, or by a checkpoint that could not be written.
    let interrupter = Interrupter::new();
    let checkpoints = Checkpoints::new(&dir, &interrupter);
    if let Some(saved) = resume_from {
        learner = checkpoints.restore(learner, saved)?;
    }
    // Same seed, same model, but not bit for bit across machines: rank 0's weights everywhere.
    learner.model = broadcast_parameters(learner.model, world.as_ref(), 0)?;
    let metrics_log = if leader { Some(MetricsLog::open(&job.run.metrics(), keep_through_step)?) } else { None };
    if leader {
        hooks.start(keep_through_step)?;
    }
    let dashboard = Dashboard::open(job.dashboard && leader, metrics, &interrupter, job.config.epochs);
    let mut trainer = Trainer {
        config: job.config,
        device: job.device,
        train: job.train,
        valid: job.valid,
        learner,
        checkpoints,
        metrics_log,
        dashboard,
        plain: !job.dashboard && leader,
        interrupter,
        hooks,
        world,
        inf_loss_at_step: inf_loss_at_step()?,
        allreduce_s: None,
        gradient_buffers: GradientBuffers::default(),
    };
    let result = trainer.run(resume_from.map_or(TrainState { step: 0, epoch: 1, batch: 0 }, |s| s.at));
    let Trainer { learner, checkpoints, dashboard, interrupter, .. } = trainer;
    // The dashboard leaves the terminal before anything else prints; the last checkpoint's files
    // are on disk before the run counts as done.
    drop((dashboard, checkpoints));
    if let Some(error) = interrupter.error() {
        bail!("training failed: {error}");
    }
    let (steps, stop) = result.context("training stopped")?;
    Ok(TrainOutcome { model: learner.model.valid(), steps, interrupted: stop.is_some_and(Stop::leaves_run_unfinished) })
}

/// The newest checkpoint whose three record files are all on disk.
fn latest_complete_checkpoint(dir: &std::path::Path) -> Result<Option<Saved>> {
    let Some(states) = Saved::load_all(dir)? else {
        return Ok(None);
    };
    Ok(states.into_iter().rev().find(|s| {
        ["model", "optim", "scheduler"].iter().all(|name| dir.join(format!("{name}-{}.bpk", s.at.step)).is_file())
    }))
}

/// A test hook (the f16-mixed tests): `LLMFS_TEST_INF_LOSS_AT_STEP=N` multiplies the loss of
/// optimizer step N (from 1) by infinity before backward, the overflow the loss scaler must catch:
/// on the last rank only, where every rank of a data-parallel run must still skip the step.
const INF_LOSS_AT_STEP: &str = "LLMFS_TEST_INF_LOSS_AT_STEP";

fn inf_loss_at_step() -> Result<Option<usize>> {
    match std::env::var(INF_LOSS_AT_STEP) {
        Ok(step) => step.parse().map(Some).with_context(|| format!("{INF_LOSS_AT_STEP}={step:?}: not a step number")),
        Err(_) => Ok(None),
    }
}

/// What the loop works with.
struct Trainer<M, B, H> {
    config: TrainConfig,
    device: Device,
    train: Arc<dyn BatchSource<B>>,
    valid: Arc<dyn BatchSource<B>>,
    learner: Learner<M>,
    checkpoints: Checkpoints,
    /// Rank 0's: the other ranks write nothing.
    metrics_log: Option<MetricsLog>,
    dashboard: Dashboard,
    /// Each event as a line on stderr (there is no dashboard).
    plain: bool,
    interrupter: Interrupter,
    hooks: H,
    /// The ranks of a data-parallel run (one process: a world of one).
    world: Arc<dyn Collective>,
    /// The step whose loss [`INF_LOSS_AT_STEP`] makes infinite.
    inf_loss_at_step: Option<usize>,
    /// Seconds the last optimizer step spent averaging the gradients over the ranks (gathering,
    /// all-reducing and scattering them), for its batch's event: the collective's share of a step.
    allreduce_s: Option<f64>,
    /// Where the gradients are gathered for the all-reduce, kept between steps.
    gradient_buffers: GradientBuffers,
}

/// Gradients of the batches since the last optimizer step.
struct Pending<M> {
    grads: GradientsAccumulator<M>,
    batches: usize,
}

impl<M, B, H> Trainer<M, B, H>
where
    M: LearnerModel + TrainStep<Input = B> + InferenceStep<Input = B>,
    <M as TrainStep>::Output: StepReport,
    <M as InferenceStep>::Output: StepReport,
    H: TrainHooks<M>,
{
    /// The loop, from `at` on: epochs of batches, and after each batch and each epoch what
    /// [`after_batch`] and [`after_epoch`] decide. Returns the optimizer steps done and why the run
    /// stopped, if it stopped before its last epoch ended.
    fn run(&mut self, mut at: TrainState) -> Result<(usize, Option<Stop>)> {
        let ranks = self.world.world_size();
        // A global batch is `batch_size` examples for each rank, rank r's the r-th of them.
        let batches = self.config.batches_per_epoch(self.train.len() / ranks);
        let (global, offset) = (self.config.batch_size * ranks, self.config.batch_size * self.world.rank());
        while at.epoch <= self.config.epochs {
            let order = self.epoch_order(at.epoch)?;
            self.dashboard.start_split(Split::Train, batches);
            let mut pending = Pending { grads: GradientsAccumulator::new(), batches: 0 };
            while at.batch < batches {
                let started = Instant::now();
                let start = at.batch * global + offset;
                let indices = &order[start..(start + self.config.batch_size).min(order.len())];
                let last_of_epoch = at.batch + 1 == batches;
                // The scale of this batch's loss: it changes only at optimizer steps.
                let loss_scale = self.learner.loss_scale();
                let stats = self.forward_backward(indices, at, batches, &mut pending);
                let stepped = pending.batches == self.config.grad_accumulation || last_of_epoch;
                let mut skipped = false;
                if stepped {
                    skipped = !self.optimizer_step(&mut pending)?;
                    at.step += 1;
                }
                at.batch += 1;
                let (stats, tokens, stop) = self.global_batch(stats, self.train.tokens(indices))?;
                self.log_batch(&stats, at, batches, tokens, started, loss_scale.map(|scale| (scale, skipped)))?;

                let next = after_batch(&self.config, at.step, stepped, last_of_epoch, stop);
                if next.evaluate {
                    self.evaluate_briefly(at)?;
                }
                if stepped && self.hooks.wants_step(at.step) {
                    self.step_hooks(at)?;
                }
                if next.checkpoint {
                    self.checkpoint(at)?;
                }
                if let Some(stop) = next.stop {
                    self.dashboard.end_split(Split::Train);
                    if stop == Stop::RunComplete {
                        // The run's last epoch ends here: its hooks, not its validation pass.
                        self.epoch_hooks(&self.learner.model.valid(), at)?;
                    }
                    return Ok((at.step, Some(stop)));
                }
            }
            self.dashboard.end_split(Split::Train);
            self.end_epoch(at)?;
            at = TrainState { step: at.step, epoch: at.epoch + 1, batch: 0 };
            self.checkpoint(at)?;
            let stop = self.anyone_stops()?;
            if let Some(stop) = after_epoch(&self.config, at.step, at.epoch, stop) {
                return Ok((at.step, Some(stop)));
            }
        }
        Ok((at.step, None))
    }

    /// The source's order of `epoch`, checked to be a permutation's length.
    fn epoch_order(&self, epoch: usize) -> Result<Vec<usize>> {
        let order = self.train.epoch_order(&self.config, epoch);
        if order.len() != self.train.len() {
            bail!("the training order of epoch {epoch} has {} examples, not {}", order.len(), self.train.len());
        }
        Ok(order)
    }

    /// Forward and backward on batch `at.batch` (of `batches`), its gradients added to `pending`.
    fn forward_backward(&mut self, indices: &[usize], at: TrainState, batches: usize, pending: &mut Pending<M>) -> StepStats {
        // Dropout masks depend only on (seed, epoch, batch) and differ between ranks: a resumed
        // run draws the same.
        let rank = (self.world.rank() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let seed = self.config.seed ^ rank ^ ((at.epoch * batches + at.batch) as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        self.device.seed(seed);
        // The CPU's masks from this thread's own stream: ranks that are threads of one process
        // share the device's.
        gpt::ops::dropout::seed_this_thread(seed);
        let mut loss_scale = self.learner.loss_scale().unwrap_or(1.0);
        if self.inf_loss_at_step == Some(at.step + 1) && self.world.rank() + 1 == self.world.world_size() {
            loss_scale *= f32::INFINITY;
        }
        let output = self.learner.train_step(self.train.batch(indices, &self.device), loss_scale);
        pending.grads.accumulate(&self.learner.model, output.grads);
        pending.batches += 1;
        StepStats::of(&output.item)
    }

    /// One optimizer step on the mean of the pending gradients over the batches and the ranks:
    /// what one large batch would give (and what --grad-clip should see), not their sum. Returns
    /// whether the optimizer stepped (f16-mixed skips steps whose gradients overflowed: the mean
    /// over the ranks is every rank's, so they all skip the same).
    fn optimizer_step(&mut self, pending: &mut Pending<M>) -> Result<bool> {
        let grads = pending.grads.grads();
        let grads = if pending.batches > 1 { scale_gradients(&self.learner.model, grads, 1.0 / pending.batches as f64) } else { grads };
        let started = Instant::now();
        let grads = average_gradients(&self.learner.model, grads, self.world.as_ref(), &mut self.gradient_buffers)?;
        // On the devices the call waits for the rest of the backward pass too: its seconds would
        // not be the all-reduce's.
        if self.world.world_size() > 1 && self.world.device_group().is_none() {
            self.allreduce_s = Some(started.elapsed().as_secs_f64());
        }
        pending.batches = 0;
        Ok(self.learner.optimizer_step(grads))
    }

    /// The global batch's numbers from this rank's (the mean loss over the ranks, the sums of
    /// tokens and counts), and whether any rank's run was stopped (its dashboard's stop key, a
    /// checkpoint that could not be written): then every rank stops.
    fn global_batch(&mut self, stats: StepStats, tokens: usize) -> Result<(StepStats, usize, bool)> {
        let stop = self.interrupter.should_stop();
        if self.world.world_size() == 1 {
            return Ok((stats, tokens, stop));
        }
        let (correct, counted) = stats.correct.unwrap_or((0, 0));
        let mut sums = [stats.loss, stats.tokens as f64, correct as f64, counted as f64, tokens as f64, f64::from(u8::from(stop))];
        self.world.all_reduce_sum(&mut sums)?;
        let ranks = self.world.world_size() as f64;
        let global = StepStats {
            loss: sums[0] / ranks,
            tokens: sums[1] as usize,
            correct: stats.correct.map(|_| (sums[2] as usize, sums[3] as usize)),
            language_modelling: stats.language_modelling,
        };
        Ok((global, sums[4] as usize, sums[5] > 0.0))
    }

    /// Whether any rank's run was stopped (at an epoch's end, where no batch reduces it).
    fn anyone_stops(&self) -> Result<bool> {
        let mut stop = [f64::from(u8::from(self.interrupter.should_stop()))];
        self.world.all_reduce_sum(&mut stop)?;
        Ok(stop[0] > 0.0)
    }

    /// A checkpoint of the run at `at`, by rank 0 (every rank holds the same model).
    fn checkpoint(&mut self, at: TrainState) -> Result<()> {
        if self.world.rank() == 0 {
            self.checkpoints.save(&self.learner, at)?;
        }
        Ok(())
    }

    /// The batch just trained (`at` is past it): its event, and the dashboard's batch. With loss
    /// scaling, the scale of its loss and whether its optimizer step was skipped.
    fn log_batch(&mut self, stats: &StepStats, at: TrainState, batches: usize, tokens: usize, started: Instant, scaling: Option<(f32, bool)>) -> Result<()> {
        let mut event = MetricEvent::new(at.step, at.epoch, "train").with("batch", at.batch);
        if let Some((loss_scale, skipped)) = scaling {
            event = event.with("loss_scale", loss_scale);
            if skipped {
                event = event.with("step_skipped", true);
            }
        }
        let global_batch = self.config.batch_size * self.world.world_size();
        event.examples_seen = Some(((at.epoch - 1) * self.train.len() + at.batch * global_batch) as u64);
        event.lr = Some(self.learner.lr().base());
        event.tokens_per_s = Some(tokens as f64 / started.elapsed().as_secs_f64().max(1e-9));
        // Data-parallel: the batch's seconds and those its optimizer step spent in the all-reduce.
        if let Some(allreduce_s) = self.allreduce_s.take() {
            event = event.with("step_s", started.elapsed().as_secs_f64()).with("allreduce_s", allreduce_s);
        }
        let mut tally = Tally::default();
        tally.add(stats);
        tally.fill(&mut event);
        self.log(event)?;
        self.dashboard.batch(Split::Train, stats, at.batch, batches, Some(self.learner.lr()));
        Ok(())
    }

    /// Loss (and accuracy) on `eval_batches` batches of the training and the validation split.
    fn evaluate_briefly(&mut self, at: TrainState) -> Result<()> {
        let model = self.learner.model.valid();
        for (split, source) in [("train_eval", self.train.clone()), ("val", self.valid.clone())] {
            let mut event = MetricEvent::new(at.step, at.epoch, split);
            self.evaluate(&model, source.as_ref(), self.config.eval_batches, false)?.fill(&mut event);
            self.log(event)?;
        }
        Ok(())
    }

    /// The end of an epoch: a full validation pass (when configured), then the task's hooks.
    fn end_epoch(&mut self, at: TrainState) -> Result<()> {
        let model = self.learner.model.valid();
        if self.config.full_validation {
            let valid = self.valid.clone();
            self.dashboard.start_split(Split::Valid, valid.len().div_ceil(self.config.batch_size));
            let tally = self.evaluate(&model, valid.as_ref(), usize::MAX, true)?;
            self.dashboard.end_split(Split::Valid);
            let mut event = MetricEvent::new(at.step, at.epoch, "val").with("full", true);
            tally.fill(&mut event);
            self.log(event)?;
        }
        self.epoch_hooks(&model, at)?;
        self.dashboard.end_epoch(at.epoch);
        Ok(())
    }

    /// Mean loss/accuracy of `model` (eval mode) on the first `max_batches` global batches of
    /// `source`, in file order, each rank scoring its micro-batch of each; each batch on the
    /// dashboard's validation split when `show`.
    fn evaluate(&mut self, model: &M, source: &dyn BatchSource<B>, max_batches: usize, show: bool) -> Result<Tally> {
        let device = self.device.clone().without_autodiff();
        let indices: Vec<usize> = (0..source.len()).collect();
        let (rank, ranks) = (self.world.rank(), self.world.world_size());
        let batches = indices.chunks(self.config.batch_size).len().min(max_batches.saturating_mul(ranks));
        let mut tally = Tally::default();
        for (i, chunk) in indices.chunks(self.config.batch_size).take(batches).enumerate().filter(|(i, _)| i % ranks == rank) {
            let stats = StepStats::of(&InferenceStep::step(model, source.batch(chunk, &device)));
            tally.add(&stats);
            if show {
                self.dashboard.batch(Split::Valid, &stats, i + 1, batches, None);
            }
        }
        tally.all_reduce(self.world.as_ref())?;
        Ok(tally)
    }

    fn epoch_hooks(&mut self, model: &M, at: TrainState) -> Result<()> {
        if self.world.rank() != 0 {
            return Ok(());
        }
        for event in self.hooks.epoch_end(model, at.epoch, at.step)? {
            self.log(event)?;
        }
        Ok(())
    }

    fn step_hooks(&mut self, at: TrainState) -> Result<()> {
        if self.world.rank() != 0 {
            return Ok(());
        }
        for event in self.hooks.step_end(&self.learner.model.valid(), at.epoch, at.step)? {
            self.log(event)?;
        }
        Ok(())
    }

    /// An event to `metrics.jsonl`, and as a line on stderr when there is no dashboard.
    fn log(&mut self, event: MetricEvent) -> Result<()> {
        if self.plain {
            eprintln!("{}", plain_line(&event));
        }
        match &mut self.metrics_log {
            Some(log) => log.log(&event),
            None => Ok(()),
        }
    }
}
