//! LoRA fine-tuning settings shared by every fine-tuning task (`--lora-rank`, `--lora-alpha`,
//! `--lora-targets`, `--merge`): the adapters themselves are `gpt::lora`.

use gpt::LoraConfig;
use gpt::models::LanguageModel;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct LoraFinetune {
    pub config: LoraConfig,
    /// Also write the adapters folded into a plain HF-layout model under `RUN_DIR/model`.
    pub merge: bool,
}

impl LoraFinetune {
    /// The settings with the targets `model`'s family has (see [`LoraConfig::for_model`]).
    pub fn for_model(&self, model: &LanguageModel) -> gpt::Result<Self> {
        Ok(Self { config: self.config.for_model(model)?, merge: self.merge })
    }

    /// What run.json records.
    pub fn describe(&self) -> serde_json::Value {
        json!({ "rank": self.config.rank, "alpha": self.config.alpha, "targets": self.config.targets.modules(), "merge": self.merge })
    }

    /// One line for the start of a run.
    pub fn summary(&self) -> String {
        format!("LoRA r={} alpha={} on {}", self.config.rank, self.config.alpha, self.config.targets)
    }
}
