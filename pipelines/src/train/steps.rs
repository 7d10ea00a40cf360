//! The two kinds of training step every task uses, as burn-train `TrainStep`/`InferenceStep`
//! models: classification (logits of the last position, cross-entropy over classes) and causal
//! language modelling (next-token cross-entropy with ignore index -100).

use gpt::burn::module::Module;
use gpt::burn::optim::{GradientsParams, ModuleOptimizer};
use gpt::burn::prelude::*;
use gpt::burn::tensor::ExecutionError;
use gpt::burn::train::metric::ItemLazy;
use gpt::burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use gpt::burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use gpt::models::{CausalLm, Classifier, LanguageModel};

use crate::train::grad_scaler::scaled_backward;
use crate::train::loss::cross_entropy_masked;
use crate::train::optim::clip_global_norm;

/// What the training loop reads from a step's output for metrics.jsonl.
pub trait StepReport {
    /// Mean loss of the batch.
    fn loss(&self) -> f64;
    /// (correct, counted) predictions, where accuracy means something.
    fn correct(&self) -> Option<(usize, usize)>;
    /// Whether the loss is a per-token language-modelling loss (then perplexity = exp(loss) is logged).
    fn is_language_modelling(&self) -> bool {
        false
    }
    /// Tokens the step learned from, for the dashboard's tokens/s (0 where it does not apply).
    fn tokens(&self) -> usize {
        0
    }
}

/// A classification batch: token ids `[B, T]`, or the residual stream after the frozen blocks
/// (`[B, T, C]`, see [`ClassifierTraining::first_block`]); labels `[B]`.
#[derive(Clone, Debug)]
pub struct ClassificationBatch {
    pub inputs: ClassifierInput,
    pub labels: Tensor<1, Int>,
}

#[derive(Clone, Debug)]
pub enum ClassifierInput {
    Tokens(Tensor<2, Int>),
    /// Output of the frozen prefix (blocks `0..first_block`), computed once per example, and
    /// where each row is read (`Classifier::pool_positions` of its tokens).
    Prefix { hidden: Tensor<3>, positions: Option<Tensor<1, Int>> },
}

/// Cross-entropy over classes: `[B, K]` logits against `[B]` labels.
pub fn class_cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    cross_entropy_masked(logits.unsqueeze_dim(1), labels.unsqueeze_dim(1))
}

#[derive(Module, Debug)]
pub struct ClassifierTraining {
    pub classifier: Classifier,
    /// The embeddings and the blocks before this one are frozen and deterministic (no dropout):
    /// they run without gradient tracking, or come precomputed as [`ClassifierInput::Prefix`].
    /// 0 when everything goes through autodiff.
    pub first_block: usize,
    /// Global gradient-norm clipping.
    #[module(skip)]
    pub grad_clip: Option<f64>,
}

impl ClassifierTraining {
    pub fn forward_batch(&self, batch: ClassificationBatch) -> ClassificationOutput {
        let (prefix, positions) = match batch.inputs {
            ClassifierInput::Tokens(ids) if self.first_block == 0 => return self.finish(self.classifier.forward(ids), batch.labels),
            ClassifierInput::Tokens(ids) => (self.frozen_prefix(ids.clone()), self.classifier.pool_positions(&ids)),
            ClassifierInput::Prefix { hidden, positions } => (hidden, positions),
        };
        self.finish(self.classifier.forward_from(prefix, self.first_block, positions), batch.labels)
    }

    /// The frozen blocks' output, computed on the inference copy: no gradient bookkeeping, and
    /// the fused CPU kernels apply (under bf16-mixed with the frozen weights' panels packed once
    /// for every step). The result enters the autodiff graph as a constant.
    fn frozen_prefix(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let _frozen = gpt::backend::kernels::keep_frozen_panels();
        let device = ids.device();
        if !device.is_autodiff() {
            let model = &self.classifier.model;
            return model.run_blocks(model.embed_tokens(ids), 0..self.first_block);
        }
        let plain = self.classifier.model.valid();
        let x = plain.run_blocks(plain.embed_tokens(ids.inner()), 0..self.first_block);
        Tensor::from_data(x.into_data(), &device)
    }

    fn finish(&self, logits: Tensor<2>, labels: Tensor<1, Int>) -> ClassificationOutput {
        let loss = class_cross_entropy(logits.clone(), labels.clone());
        ClassificationOutput::new(loss, logits, labels)
    }
}

/// `optimize` with the global-norm clipping of the model, shared by both step kinds.
fn clipped_step<M: Module>(model: M, optim: &mut ModuleOptimizer, lr: ModuleLearningRate, grads: GradientsParams, clip: Option<f64>) -> M {
    let grads = match clip {
        Some(max_norm) => clip_global_norm(&model, grads, max_norm).0,
        None => grads,
    };
    optim.step(lr, model, grads)
}

impl TrainStep for ClassifierTraining {
    type Input = ClassificationBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ClassificationBatch) -> TrainOutput<ClassificationOutput> {
        let out = self.forward_batch(batch);
        TrainOutput::new(self, scaled_backward(&out.loss), out)
    }

    fn optimize(self, optim: &mut ModuleOptimizer, lr: ModuleLearningRate, grads: GradientsParams) -> Self {
        let clip = self.grad_clip;
        clipped_step(self, optim, lr, grads, clip)
    }
}

impl InferenceStep for ClassifierTraining {
    type Input = ClassificationBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ClassificationBatch) -> ClassificationOutput {
        self.forward_batch(batch)
    }
}

impl StepReport for ClassificationOutput {
    fn loss(&self) -> f64 {
        self.loss.clone().into_scalar::<f32>() as f64
    }

    fn correct(&self) -> Option<(usize, usize)> {
        let predicted = self.output.clone().argmax(1).squeeze_dim::<1>(1);
        let correct = predicted.equal(self.targets.clone()).int().sum().into_scalar::<i64>();
        Some((correct as usize, self.targets.dims()[0]))
    }
}

/// A language-modelling batch: inputs `[B, T]` and next-token targets `[B, T]` (-100 = ignored).
#[derive(Clone, Debug)]
pub struct LmBatch {
    pub inputs: Tensor<2, Int>,
    pub targets: Tensor<2, Int>,
}

/// The output of a language-modelling step: the mean loss over the counted targets.
#[derive(Debug)]
pub struct LmOutput {
    pub loss: Tensor<1>,
    /// Number of targets that count (not -100).
    pub tokens: usize,
}

impl ItemLazy for LmOutput {
    fn sync(self) -> Result<Self, ExecutionError> {
        Ok(Self { loss: self.loss.without_autodiff(), tokens: self.tokens })
    }
}

impl StepReport for LmOutput {
    fn loss(&self) -> f64 {
        self.loss.clone().into_scalar::<f32>() as f64
    }

    fn correct(&self) -> Option<(usize, usize)> {
        None
    }

    fn is_language_modelling(&self) -> bool {
        true
    }

    fn tokens(&self) -> usize {
        self.tokens
    }
}

#[derive(Module, Debug)]
pub struct LanguageModelTraining {
    /// A model of any family (GPT-2, Llama, Qwen ...).
    pub model: LanguageModel,
    #[module(skip)]
    pub grad_clip: Option<f64>,
}

impl LanguageModelTraining {
    pub fn forward_batch(&self, batch: LmBatch) -> LmOutput {
        let tokens = batch.targets.clone().not_equal_elem(crate::train::IGNORE_INDEX).int().sum().into_scalar::<i64>() as usize;
        let loss = cross_entropy_masked(self.model.logits(batch.inputs), batch.targets);
        LmOutput { loss, tokens }
    }
}

impl TrainStep for LanguageModelTraining {
    type Input = LmBatch;
    type Output = LmOutput;

    fn step(&self, batch: LmBatch) -> TrainOutput<LmOutput> {
        let out = self.forward_batch(batch);
        TrainOutput::new(self, scaled_backward(&out.loss), out)
    }

    fn optimize(self, optim: &mut ModuleOptimizer, lr: ModuleLearningRate, grads: GradientsParams) -> Self {
        let clip = self.grad_clip;
        clipped_step(self, optim, lr, grads, clip)
    }
}

impl InferenceStep for LanguageModelTraining {
    type Input = LmBatch;
    type Output = LmOutput;

    fn step(&self, batch: LmBatch) -> LmOutput {
        self.forward_batch(batch)
    }
}
