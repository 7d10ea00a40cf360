//! The model with its optimizer and learning-rate schedule, stepped together: burn-train's
//! `Learner` in the open. (burn-train's keeps its optimizer state private, and only its own loops
//! can checkpoint it: this one hands its records to [`Checkpoints`](super::checkpoint::Checkpoints).)
//! With f16-mixed's loss scaler, as torch's `scaler.scale(loss).backward()` / `scaler.step` /
//! `scaler.update()`.

use gpt::burn::lr_scheduler::LrSchedulerRecord;
use gpt::burn::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use gpt::burn::module::Module;
use gpt::burn::optim::{GradientsParams, ModuleOptimizer, OptimizerRecord};
use gpt::burn::prelude::Device;
use gpt::burn::store::ModuleRecord;
use gpt::burn::train::{TrainOutput, TrainStep};

use crate::train::grad_scaler::{GradScaler, GradScalerState, with_loss_scale};

pub struct Learner<M> {
    pub model: M,
    optimizer: ModuleOptimizer,
    scheduler: ModuleLrScheduler,
    /// The learning rate of the latest optimizer step.
    lr: ModuleLearningRate,
    /// f16-mixed's dynamic loss scaling (none: the loss is not scaled).
    scaler: Option<GradScaler>,
}

/// The three records of a checkpoint.
pub struct LearnerRecords {
    pub model: ModuleRecord,
    pub optimizer: OptimizerRecord,
    pub scheduler: LrSchedulerRecord,
    /// The loss scaler's, where there is one (and where the checkpoint had one: older ones do not).
    pub loss_scaler: Option<GradScalerState>,
}

impl<M: TrainStep + Module> Learner<M> {
    /// The model moved to the training `device`.
    pub fn new(model: M, optimizer: ModuleOptimizer, scheduler: impl Into<ModuleLrScheduler>, device: &Device) -> Self {
        Self { model: model.fork(device), optimizer, scheduler: scheduler.into(), lr: 0.0.into(), scaler: None }
    }

    /// Scales the loss with `scaler` from now on (`Precision::loss_scaler`).
    pub fn with_loss_scaler(self, scaler: Option<GradScaler>) -> Self {
        Self { scaler, ..self }
    }

    /// What the loss is multiplied by before backward (`None`: nothing, there is no scaler).
    pub fn loss_scale(&self) -> Option<f32> {
        self.scaler.as_ref().map(GradScaler::scale)
    }

    /// Forward and backward on one batch, the loss times `loss_scale` for backward (the
    /// gradients come out scaled; [`Learner::optimizer_step`] unscales them by
    /// [`Learner::loss_scale`]).
    pub fn train_step(&self, batch: M::Input, loss_scale: f32) -> TrainOutput<M::Output> {
        with_loss_scale(loss_scale, || self.model.step(batch))
    }

    /// The schedule's next learning rate, then one optimizer step with it on `grads` (scaled by
    /// [`Learner::loss_scale`]; every rank's the same). With a loss scaler the gradients are
    /// unscaled first, and a step whose gradients are not all finite is skipped: the model and
    /// AdamW (its moments and its step count) stay as they were, as torch's `scaler.step` leaves
    /// them. The schedule moves on either way, as in torch's loops, where the LR scheduler steps
    /// regardless: a skipped step is still one of the run's steps. Returns whether the optimizer
    /// stepped.
    pub fn optimizer_step(&mut self, grads: GradientsParams) -> bool {
        self.lr = self.scheduler.step();
        let grads = match &mut self.scaler {
            Some(scaler) => {
                let (grads, finite) = scaler.unscale(&self.model, grads);
                scaler.update(!finite);
                if !finite {
                    return false;
                }
                grads
            }
            None => grads,
        };
        self.model = self.model.clone().optimize(&mut self.optimizer, self.lr.clone(), grads);
        true
    }

    pub fn lr(&self) -> ModuleLearningRate {
        self.lr.clone()
    }

    pub fn records(&self) -> LearnerRecords {
        LearnerRecords {
            model: self.model.clone().into_record(),
            optimizer: self.optimizer.to_record(),
            scheduler: self.scheduler.to_record(),
            loss_scaler: self.scaler.as_ref().map(GradScaler::state),
        }
    }

    /// The learner as `records` left it. A scaler whose checkpoint has no state for it (a
    /// checkpoint from before loss scaling, or of a run at another precision) starts afresh.
    pub fn load(self, records: LearnerRecords) -> Self {
        let mut scaler = self.scaler;
        if let (Some(scaler), Some(state)) = (&mut scaler, records.loss_scaler) {
            scaler.load_state(state);
        }
        Self {
            model: self.model.load_record(records.model),
            optimizer: self.optimizer.load_record(records.optimizer),
            scheduler: self.scheduler.load_record(records.scheduler),
            lr: self.lr,
            scaler,
        }
    }
}
