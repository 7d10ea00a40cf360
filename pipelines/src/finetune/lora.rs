//! LoRA fine-tuning settings shared by every fine-tuning task (`--lora-rank`, `--lora-alpha`,
//! `--lora-targets`, `--merge`, and QLoRA's `--quantize nf4`): the adapters themselves are
//! `gpt::lora`, the quantized base `gpt::quant`.

use gpt::LoraConfig;
use gpt::io::WeightDtype;
use gpt::models::{Classifier, LanguageModel};
use gpt::quant::{Nf4Options, QuantizeAtLoad, Quantized};
use serde_json::json;

use crate::train::Precision;

/// The dtype LoRA's and QLoRA's frozen base is loaded in: bf16 under `--precision bf16-mixed`,
/// where the products round the weights to bf16 anyway, so the base takes half the memory and the
/// products are the same (only the embedding rows looked up are rounded too, as in a model loaded
/// in bf16 for PEFT); f32 otherwise. The adapters are f32 either way.
pub fn base_dtype(precision: Precision) -> WeightDtype {
    match precision {
        Precision::Bf16Mixed => WeightDtype::Bf16,
        Precision::F32 | Precision::F16Mixed => WeightDtype::F32,
    }
}

#[derive(Debug, Clone)]
pub struct LoraFinetune {
    pub config: LoraConfig,
    /// Also write the adapters folded into a plain HF-layout model under `RUN_DIR/model`.
    pub merge: bool,
    /// QLoRA: the targeted projections' frozen weights held as NF4 (a quarter of f32's memory
    /// and less), the adapters trained against those quantized weights.
    pub quantize: Option<Nf4Options>,
}

impl LoraFinetune {
    /// The settings with the targets `model`'s family has (see [`LoraConfig::for_model`]).
    pub fn for_model(&self, model: &LanguageModel) -> gpt::Result<Self> {
        Ok(Self { config: self.config.for_model(model)?, ..self.clone() })
    }

    /// What to quantize while the model loads: QLoRA's targets as NF4 (`None` without
    /// `--quantize`), so that the f32 model is never held whole.
    pub fn quantize_at_load(&self) -> Option<QuantizeAtLoad> {
        self.quantize.map(|nf4| self.config.quantize_at_load(nf4))
    }

    /// `model` (as loaded with [`Self::quantize_at_load`]) with its adapters attached (seeded by
    /// `seed`): on a quantized base with QLoRA, which a bitsandbytes checkpoint's stored NF4
    /// weights also make.
    pub fn apply(&self, model: Quantized<LanguageModel>, seed: u64) -> gpt::Result<LanguageModel> {
        match self.base(&model) {
            Some(nf4) => Ok(released(self.config.apply_quantized_to(model, seed, nf4)?)),
            None => self.config.apply_to(model.attach()?, seed),
        }
    }

    /// [`Self::apply`] for a classifier (its head trains, unquantized).
    pub fn apply_to_classifier(&self, classifier: Quantized<Classifier>, seed: u64) -> gpt::Result<Classifier> {
        match self.base(&classifier) {
            Some(nf4) => Ok(released(self.config.apply_quantized_to_classifier(classifier, seed, nf4)?)),
            None => self.config.apply_to_classifier(classifier.attach()?, seed),
        }
    }

    /// The NF4 settings of QLoRA's base: `--quantize`'s, or bitsandbytes' as stored; `None` for
    /// plain LoRA.
    fn base<M: gpt::burn::module::Module>(&self, model: &Quantized<M>) -> Option<Nf4Options> {
        self.quantize.or(model.is_quantized().then(Nf4Options::default))
    }

    /// What run.json records (`quantize`: `null`, `"nf4"` or `"nf4-double"`).
    pub fn describe(&self) -> serde_json::Value {
        json!({
            "rank": self.config.rank, "alpha": self.config.alpha, "targets": self.config.targets.modules(), "merge": self.merge,
            "quantize": crate::runs::weights::describe(self.quantize),
        })
    }

    /// One line for the start of a run.
    pub fn summary(&self) -> String {
        let base = match self.quantize {
            None => "",
            Some(Nf4Options { double_quant: false }) => " (QLoRA: NF4 base)",
            Some(Nf4Options { double_quant: true }) => " (QLoRA: NF4 base, double-quantized)",
        };
        format!("LoRA r={} alpha={} on {}{base}", self.config.rank, self.config.alpha, self.config.targets)
    }
}

/// `model`, after giving the f32 weights its quantization freed back to the OS now: the
/// allocator would keep them for minutes, and QLoRA is for machines short of memory.
fn released<M>(model: M) -> M {
    gpt::backend::allocator::release_freed_memory();
    model
}
