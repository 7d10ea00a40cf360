//! QLoRA (Dettmers et al. 2023): the targeted projections' weights quantized to NF4 and frozen,
//! LoRA factors on top (`crate::quant::QloraAdapter`); and `--quantize nf4|int8` for inference,
//! every block projection quantized without adapters. Embeddings, norms, biases and the output
//! head stay as they are.
//!
//! The factors have LoRA's names, shapes and seeded init, so a QLoRA model's adapters save, load
//! and merge as LoRA's do; they are trained against the quantized base, which is the dequantized
//! base that an unquantized model loading them should hold to reproduce the run exactly.

use burn::module::Module;

use super::{AdapterInit, LoraConfig, LoraTargets, peft_name};
use crate::error::Result;
use crate::io::fill_params_matching;
use crate::models::{Classifier, LanguageModel};
use crate::quant::{Nf4Options, Quantization, quantize_as, quantize_with_adapters};

impl LoraConfig {
    /// [`Self::apply`] with the targeted weights quantized to NF4 first: the same factors (same
    /// seeded `A`, `B` = 0), on a frozen NF4 base whose f32 copy is freed.
    pub fn apply_quantized<M: Module>(&self, module: M, seed: u64, nf4: Nf4Options) -> Result<M> {
        super::ensure_plain_weights(&module)?;
        let mut init = AdapterInit { seed, std: 1.0 / self.rank as f64 };
        let module = quantize_with_adapters(module, self.param_group(), nf4, self.rank, self.alpha / self.rank as f64)?;
        fill_params_matching(module, &mut init, |name| matches!(peft_name(name), Some((_, true))))
    }

    /// [`Self::apply_to`] with QLoRA's quantized base.
    pub fn apply_quantized_to(&self, model: LanguageModel, seed: u64, nf4: Nf4Options) -> Result<LanguageModel> {
        self.for_model(&model)?.apply_quantized(model, seed, nf4)
    }

    /// [`Self::apply_to_classifier`] with QLoRA's quantized base (the head is not quantized).
    pub fn apply_quantized_to_classifier(&self, classifier: Classifier, seed: u64, nf4: Nf4Options) -> Result<Classifier> {
        let lora = self.for_model(&classifier.model)?;
        let mut adapted = lora.apply_quantized(classifier, seed, nf4)?;
        adapted.score = adapted.score.clone().set_require_grad(true);
        Ok(adapted)
    }
}

/// `--quantize nf4` for inference: every block projection (both families' names) as NF4.
pub fn quantize_model<M: Module>(module: M, nf4: Nf4Options) -> Result<M> {
    quantize_model_as(module, Quantization::Nf4(nf4))
}

/// `--quantize nf4|int8` for inference: every block projection (both families' names) in
/// `scheme`.
pub fn quantize_model_as<M: Module>(module: M, scheme: Quantization) -> Result<M> {
    let every = LoraConfig::new(1, 1.0, LoraTargets::default())?;
    quantize_as(module, every.param_group(), scheme)
}
