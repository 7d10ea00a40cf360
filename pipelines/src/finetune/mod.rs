//! Fine-tuning tasks built on the one training loop.

pub mod classifier;
pub mod instruction;
pub mod language_model;
pub mod lora;

pub use classifier::{ClassifierData, ClassifierFinetune, ClassifierReport, finetune_classifier};
pub use language_model::{LanguageModelJob, LanguageModelReport, SampleHook, load_for_training, train_language_model};
pub use instruction::{InstructionFinetune, finetune_instruction};
pub use lora::LoraFinetune;

/// Fine-tuning without LoRA updates every weight in place: a checkpoint whose weights are stored
/// 4-bit (bitsandbytes) has no full-precision weights to update, so it is refused before training
/// rather than trained with its quantized weights silently frozen.
fn ensure_full_weights(model: &gpt::models::LanguageModel, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !gpt::quant::is_quantized(model),
        "{name}: the weights are stored 4-bit (bitsandbytes); fine-tuning them is not supported: fine-tune the unquantized model (--lora-rank R --quantize nf4 for QLoRA)"
    );
    Ok(())
}

/// A run resumes with the world size it started with: every rank's share of a global batch, and
/// so the data order, depends on it.
fn check_world_size(run: &crate::runs::RunDir, resume: bool, world_size: usize) -> anyhow::Result<()> {
    if !resume {
        return Ok(());
    }
    let started_with = run.read_run_json()?["config"]["world_size"].as_u64().unwrap_or(1) as usize;
    anyhow::ensure!(
        started_with == world_size,
        "--resume: the run started on {started_with} rank(s) and resumes on {world_size}: resume it with `mpirun -np {started_with}` (its data order depends on the world size)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use gpt::burn::prelude::Device;
    use gpt::quant::Nf4Options;

    #[test]
    fn a_model_with_quantized_weights_is_refused_for_full_fine_tuning() {
        let model = gpt::hf::load_language_model("random:tiny", &Device::default(), 0).unwrap();
        super::ensure_full_weights(&model, "random:tiny").unwrap();
        let quantized = gpt::lora::quantize_model(model, Nf4Options::default()).unwrap();
        let error = super::ensure_full_weights(&quantized, "some-bnb-4bit").unwrap_err().to_string();
        assert!(error.starts_with("some-bnb-4bit: the weights are stored 4-bit") && error.contains("--quantize nf4"), "{error}");
    }
}
