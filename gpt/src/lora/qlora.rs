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
use crate::quant::{Nf4Options, QuantizeAtLoad, Quantization, Quantized, quantize_as};

impl LoraConfig {
    /// [`Self::apply`] on QLoRA's NF4 base: the same factors (same seeded `A`, `B` = 0) on the
    /// targeted weights, frozen and quantized to NF4 unless `module` holds them quantized
    /// already (quantized at load, see [`Self::quantize_at_load`], or a bitsandbytes
    /// checkpoint's stored NF4 weights).
    pub fn apply_quantized<M: Module>(&self, module: Quantized<M>, seed: u64, nf4: Nf4Options) -> Result<M> {
        super::ensure_plain_weights(module.model())?;
        let group = self.param_group();
        let mut init = AdapterInit { seed, std: 1.0 / self.rank as f64 };
        let module = module.quantize_remaining(&group, Quantization::Nf4(nf4))?.attach_with_adapters(&group, self.rank, self.alpha / self.rank as f64)?;
        fill_params_matching(module, &mut init, |name| matches!(peft_name(name), Some((_, true))))
    }

    /// [`Self::apply_to`] with QLoRA's quantized base.
    pub fn apply_quantized_to(&self, model: Quantized<LanguageModel>, seed: u64, nf4: Nf4Options) -> Result<LanguageModel> {
        self.for_model(model.model())?.apply_quantized(model, seed, nf4)
    }

    /// [`Self::apply_to_classifier`] with QLoRA's quantized base (the head is not quantized).
    pub fn apply_quantized_to_classifier(&self, classifier: Quantized<Classifier>, seed: u64, nf4: Nf4Options) -> Result<Classifier> {
        let lora = self.for_model(&classifier.model().model)?;
        let mut adapted = lora.apply_quantized(classifier, seed, nf4)?;
        adapted.score = adapted.score.clone().set_require_grad(true);
        Ok(adapted)
    }

    /// QLoRA's base quantized while the model loads (the f32 model is never held whole): the
    /// projections these adapters target, as NF4.
    pub fn quantize_at_load(&self, nf4: Nf4Options) -> QuantizeAtLoad {
        QuantizeAtLoad { scheme: Quantization::Nf4(nf4), targets: self.param_group() }
    }
}

/// `--quantize nf4` for inference: every block projection (both families' names) as NF4.
pub fn quantize_model<M: Module>(module: M, nf4: Nf4Options) -> Result<M> {
    quantize_model_as(module, Quantization::Nf4(nf4))
}

/// `--quantize nf4|int8` for inference: every block projection (both families' names) in
/// `scheme`.
pub fn quantize_model_as<M: Module>(module: M, scheme: Quantization) -> Result<M> {
    let every = every_projection(scheme);
    quantize_as(module, every.targets, scheme)
}

/// `--quantize nf4|int8` while loading, for inference: every block projection in `scheme`.
pub fn every_projection(scheme: Quantization) -> QuantizeAtLoad {
    let every = LoraConfig { rank: 1, alpha: 1.0, targets: LoraTargets::default() };
    QuantizeAtLoad { scheme, targets: every.param_group() }
}
