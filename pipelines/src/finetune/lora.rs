//! LoRA fine-tuning settings shared by every fine-tuning task (`--lora-rank`, `--lora-alpha`,
//! `--lora-targets`, `--merge`, and QLoRA's `--quantize nf4`): the adapters themselves are
//! `gpt::lora`, the quantized base `gpt::quant`.

use gpt::LoraConfig;
use gpt::models::{Classifier, LanguageModel};
use gpt::quant::Nf4Options;
use serde_json::json;

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

    /// `model` with its adapters attached (seeded by `seed`), on a quantized base with QLoRA.
    pub fn apply(&self, model: LanguageModel, seed: u64) -> gpt::Result<LanguageModel> {
        match self.quantize {
            Some(nf4) => Ok(released(self.config.apply_quantized_to(model, seed, nf4)?)),
            None => self.config.apply_to(model, seed),
        }
    }

    /// [`Self::apply`] for a classifier (its head trains, unquantized).
    pub fn apply_to_classifier(&self, classifier: Classifier, seed: u64) -> gpt::Result<Classifier> {
        match self.quantize {
            Some(nf4) => Ok(released(self.config.apply_quantized_to_classifier(classifier, seed, nf4)?)),
            None => self.config.apply_to_classifier(classifier, seed),
        }
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
