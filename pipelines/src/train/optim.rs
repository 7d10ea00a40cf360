//! AdamW, learning-rate schedules and global-norm gradient clipping, as GPT-2 training uses them.

use gpt::burn::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use gpt::burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use gpt::burn::optim::{GradientsParams, ModuleOptimizer};
use gpt::burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::adamw::FusedAdamW;

/// Parameters that get no weight decay unless `decay_all`: biases, norms and embeddings (matched
/// on Burn parameter paths: GPT-2's `classifier.model.h.0.ln_1.gamma`, `wte`, `wpe`; the Llama
/// family's `model.layers.0.input_layernorm.gamma`, `q_norm`, `model.norm`, `embed_tokens`).
const NO_DECAY: [&str; 6] =
    [r"\.bias$", r"\.ln_(1|2|f)\.", r"(^|\.)wte\.", r"(^|\.)wpe\.", r"norm\.gamma$", r"(^|\.)embed_tokens\."];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decay every parameter (PyTorch's `AdamW(model.parameters())`, what the book does) instead
    /// of only the 2-D weights.
    pub decay_all: bool,
    pub schedule: LrSchedule,
    /// Clip the GLOBAL gradient norm to this (GPT-2/nanoGPT use 1.0).
    pub grad_clip: Option<f64>,
}

impl Default for OptimConfig {
    /// The book's fine-tuning settings: AdamW(lr 5e-5, weight decay 0.1), constant LR, no clipping.
    fn default() -> Self {
        Self {
            lr: 5e-5,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decay_all: false,
            schedule: LrSchedule::Constant,
            grad_clip: None,
        }
    }
}

/// How the learning rate moves over optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LrSchedule {
    Constant,
    /// Linear warmup from lr/warmup to lr over `warmup_steps`, then cosine decay to
    /// `min_lr_ratio · lr` at the last step (nanoGPT's `get_lr`).
    WarmupCosine { warmup_steps: usize, min_lr_ratio: f64 },
}

impl LrSchedule {
    /// The learning rate of optimizer step `step` (0-based) of `total_steps`.
    pub fn lr_at(self, peak: f64, step: usize, total_steps: usize) -> f64 {
        match self {
            Self::Constant => peak,
            Self::WarmupCosine { warmup_steps, min_lr_ratio } => {
                if step < warmup_steps {
                    return peak * (step + 1) as f64 / warmup_steps as f64;
                }
                let min_lr = peak * min_lr_ratio;
                let decay_steps = total_steps.saturating_sub(warmup_steps).max(1);
                let progress = ((step - warmup_steps) as f64 / decay_steps as f64).min(1.0);
                min_lr + 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * (peak - min_lr)
            }
        }
    }
}

/// A Burn scheduler over [`LrSchedule`]; its state (the step) is saved with checkpoints, so a
/// resumed run continues the same curve.
#[derive(Debug, Clone)]
pub struct Scheduler {
    schedule: LrSchedule,
    peak: f64,
    total_steps: usize,
    step: usize,
}

impl Scheduler {
    pub fn new(schedule: LrSchedule, peak: f64, total_steps: usize) -> Self {
        Self { schedule, peak, total_steps, step: 0 }
    }
}

impl LrScheduler for Scheduler {
    fn step(&mut self) -> f64 {
        let lr = self.schedule.lr_at(self.peak, self.step, self.total_steps);
        self.step += 1;
        lr
    }

    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("step", self.step as i64)
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(step) = record.scalar::<i64>("step") {
            self.step = step.max(0) as usize;
        }
    }
}

impl OptimConfig {
    fn adamw(&self, weight_decay: f64) -> FusedAdamW {
        FusedAdamW::new(self.beta1 as f32, self.beta2 as f32, self.eps as f32, weight_decay as f32)
    }

    /// AdamW with decoupled weight decay on the 2-D weights only (everything with `decay_all`).
    pub fn optimizer(&self) -> ModuleOptimizer {
        let optimizer = ModuleOptimizer::from(self.adamw(self.weight_decay));
        if self.decay_all {
            return optimizer;
        }
        let no_decay = ParamGroup::from_any_regexes(NO_DECAY.to_vec()).expect("the no-decay patterns are valid regexes");
        optimizer.with_group(no_decay, self.adamw(0.0), None)
    }
}

/// Scales `grads` so that their global L2 norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping. Burn's own clipping works
/// tensor by tensor, which is not what GPT-2 training means by clipping.
pub fn clip_global_norm<M: Module>(model: &M, mut grads: GradientsParams, max_norm: f64) -> (GradientsParams, f64) {
    let norm = global_norm(model, &grads);
    if norm > max_norm {
        grads = scale_gradients(model, grads, max_norm / (norm + 1e-6));
    }
    (grads, norm)
}

/// Every gradient times `factor` (gradient accumulation averages its micro-batches with this).
pub fn scale_gradients<M: Module>(model: &M, mut grads: GradientsParams, factor: f64) -> GradientsParams {
    struct Scale<'a>(&'a mut GradientsParams, f64);
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.0.remove::<D>(param.id) {
                self.0.register(param.id, g.mul_scalar(self.1));
            }
        }
    }
    model.visit(&mut Scale(&mut grads, factor));
    grads
}

/// The global L2 norm of the gradients (each parameter once).
pub fn global_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    struct SumSquares<'a>(&'a GradientsParams, Option<Tensor<1>>);
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(param.id) {
                let s = g.square().sum();
                self.1 = Some(match self.1.take() {
                    Some(acc) => acc + s,
                    None => s,
                });
            }
        }
    }
    let mut visitor = SumSquares(grads, None);
    model.visit(&mut visitor);
    visitor.1.map_or(0.0, |s| s.into_scalar::<f32>() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_like_nanogpt() {
        let s = LrSchedule::WarmupCosine { warmup_steps: 10, min_lr_ratio: 0.1 };
        assert!((s.lr_at(6e-4, 0, 100) - 6e-5).abs() < 1e-12);
        assert!((s.lr_at(6e-4, 9, 100) - 6e-4).abs() < 1e-12);
        assert!((s.lr_at(6e-4, 10, 100) - 6e-4).abs() < 1e-12);
        assert!((s.lr_at(6e-4, 55, 100) - (0.6e-4 + 0.5 * 5.4e-4)).abs() < 1e-9, "half way");
        assert!((s.lr_at(6e-4, 100, 100) - 6e-5).abs() < 1e-12);
        assert_eq!(LrSchedule::Constant.lr_at(5e-5, 1234, 10), 5e-5);
    }

    #[test]
    fn the_scheduler_resumes_where_it_stopped() {
        let schedule = LrSchedule::WarmupCosine { warmup_steps: 3, min_lr_ratio: 0.0 };
        let mut a = Scheduler::new(schedule, 1e-3, 20);
        let first: Vec<f64> = (0..7).map(|_| a.step()).collect();
        let mut b = Scheduler::new(schedule, 1e-3, 20);
        b.load_record(a.to_record());
        let mut c = Scheduler::new(schedule, 1e-3, 20);
        let all: Vec<f64> = (0..10).map(|_| c.step()).collect();
        assert_eq!(first, all[..7]);
        assert_eq!((0..3).map(|_| b.step()).collect::<Vec<_>>(), all[7..]);
    }
}
