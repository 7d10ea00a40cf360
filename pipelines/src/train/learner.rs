//! The model with its optimizer and learning-rate schedule, stepped together: burn-train's
//! `Learner` in the open. (burn-train's keeps its optimizer state private, and only its own loops
//! can checkpoint it: this one hands its records to [`Checkpoints`](super::checkpoint::Checkpoints).)

use gpt::burn::lr_scheduler::LrSchedulerRecord;
use gpt::burn::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use gpt::burn::module::Module;
use gpt::burn::optim::{GradientsParams, ModuleOptimizer, OptimizerRecord};
use gpt::burn::prelude::Device;
use gpt::burn::store::ModuleRecord;
use gpt::burn::train::{TrainOutput, TrainStep};

pub struct Learner<M> {
    pub model: M,
    optimizer: ModuleOptimizer,
    scheduler: ModuleLrScheduler,
    /// The learning rate of the latest optimizer step.
    lr: ModuleLearningRate,
}

/// The three records of a checkpoint.
pub struct LearnerRecords {
    pub model: ModuleRecord,
    pub optimizer: OptimizerRecord,
    pub scheduler: LrSchedulerRecord,
}

impl<M: TrainStep + Module> Learner<M> {
    /// The model moved to the training `device`.
    pub fn new(model: M, optimizer: ModuleOptimizer, scheduler: impl Into<ModuleLrScheduler>, device: &Device) -> Self {
        Self { model: model.fork(device), optimizer, scheduler: scheduler.into(), lr: 0.0.into() }
    }

    /// Forward and backward on one batch.
    pub fn train_step(&self, batch: M::Input) -> TrainOutput<M::Output> {
        self.model.step(batch)
    }

    /// The schedule's next learning rate, then one optimizer step with it.
    pub fn optimizer_step(&mut self, grads: GradientsParams) {
        self.lr = self.scheduler.step();
        self.model = self.model.clone().optimize(&mut self.optimizer, self.lr.clone(), grads);
    }

    pub fn lr(&self) -> ModuleLearningRate {
        self.lr.clone()
    }

    pub fn records(&self) -> LearnerRecords {
        LearnerRecords { model: self.model.clone().into_record(), optimizer: self.optimizer.to_record(), scheduler: self.scheduler.to_record() }
    }

    pub fn load(self, records: LearnerRecords) -> Self {
        Self {
            model: self.model.load_record(records.model),
            optimizer: self.optimizer.load_record(records.optimizer),
            scheduler: self.scheduler.load_record(records.scheduler),
            lr: self.lr,
        }
    }
}
