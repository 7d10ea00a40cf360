//! Instruction fine-tuning (*Build a LLM From Scratch*, ch. 7): Alpaca-style records in the
//! prompt format of DESIGN.md on any model family, tokenised with the model's tokenizer, batches
//! padded with its end of sequence (GPT-2's `<|endoftext|>`) and targets masked with -100
//! (optionally the prompt too), the language-modelling step of the one training loop, and after
//! every epoch the model's response to the first validation instruction in `samples.jsonl`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use gpt::burn::prelude::*;
use gpt::models::CausalLm;
use serde_json::json;

use crate::data::instruction::{
    CollateConfig, InstructionDataset, InstructionRecord, encode, format_input, length_grouped_batches, load_records, split_records, write_splits,
};
use crate::eval::responses::extract_response;
use crate::finetune::language_model::{LanguageModelJob, LanguageModelReport, SampleHook, load_for_training, train_language_model};
use crate::runs::ModelRef;
use crate::train::steps::LmBatch;
use crate::train::trainer::{BatchSource, TrainConfig};

/// Everything `llmfs finetune instruct` takes besides the shared training settings in `lm`.
#[derive(Debug, Clone)]
pub struct InstructionFinetune {
    pub lm: LanguageModelJob,
    /// The records: a local JSON file or an http(s) URL (downloaded once into `cache_dir`).
    pub data: String,
    pub cache_dir: PathBuf,
    /// Shuffle the records (seeded) before the 85 / 10 / 5 split instead of keeping file order.
    pub shuffle: bool,
    pub collate: CollateConfig,
    /// Batch examples of similar length together (less padding, same examples per epoch).
    pub group_by_length: bool,
    /// New tokens of the per-epoch sample response.
    pub sample_tokens: usize,
}

/// Batches of tokenised records.
struct InstructionBatches {
    data: InstructionDataset,
    collate: CollateConfig,
    group_by_length: bool,
}

impl BatchSource<LmBatch> for InstructionBatches {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn batch(&self, indices: &[usize], device: &Device) -> LmBatch {
        self.data.collate(indices, &self.collate).to_lm_batch(device)
    }

    fn tokens(&self, indices: &[usize]) -> usize {
        indices.iter().map(|&i| self.data.token_ids[i].len()).sum()
    }

    fn epoch_order(&self, config: &TrainConfig, epoch: usize) -> Vec<usize> {
        if !self.group_by_length {
            return config.order(self.len(), epoch);
        }
        // The loop cuts the order into consecutive batches: the one short batch goes last,
        // where `drop_last` drops it, so that every other batch stays as grouped.
        let mut batches = length_grouped_batches(&self.data.lengths(), config.seed, epoch, config.batch_size, false);
        if let Some(short) = batches.iter().position(|b| b.len() < config.batch_size) {
            let batch = batches.remove(short);
            batches.push(batch);
        }
        batches.concat()
    }
}

/// Fine-tunes on the records' train split, validates on the validation split, keeps the three
/// splits in `RUN_DIR/data/` (the test split is what `llmfs generate-responses` answers).
pub fn finetune_instruction(job: &InstructionFinetune) -> Result<LanguageModelReport> {
    let loaded = load_records(&job.data, &job.cache_dir)?;
    let splits = split_records(loaded.records, job.shuffle, job.lm.train.seed);
    if splits.train.len() < job.lm.train.batch_size || splits.validation.is_empty() {
        bail!(
            "{} has too few records: {} train / {} validation after the 85/10/5 split (batch size {})",
            loaded.path.display(),
            splits.train.len(),
            splits.validation.len(),
            job.lm.train.batch_size
        );
    }
    let model = load_for_training(&job.lm)?;
    let tokenizer = ModelRef::resolve(&job.lm.model).tokenizer()?;
    let context = model.context_length();
    let mut collate = job.collate.clone();
    // Positions past the context do not exist: cut there at the latest.
    collate.allowed_max_length = Some(collate.allowed_max_length.map_or(context, |max| max.min(context)));

    let sample_prompt = format_input(&splits.validation[0]);
    let source = |records: &[InstructionRecord], split: &str| -> Result<Arc<dyn BatchSource<LmBatch>>> {
        let data = InstructionDataset::new(records, &tokenizer).with_context(|| format!("{}, {split} split", loaded.path.display()))?;
        Ok(Arc::new(InstructionBatches { data, collate: collate.clone(), group_by_length: job.group_by_length }))
    };
    let (train_data, valid_data) = (source(&splits.train, "train")?, source(&splits.validation, "validation")?);
    eprintln!(
        "{}: {} train / {} validation / {} test records from {}{}",
        job.lm.model,
        splits.train.len(),
        splits.validation.len(),
        splits.test.len(),
        loaded.path.display(),
        if collate.mask_prompt { " (prompt masked in the loss)" } else { "" }
    );
    let mut lm = job.lm.clone();
    lm.details = json!({
        "data": job.data, "records": loaded.path, "shuffle": job.shuffle, "collate": collate,
        "group_by_length": job.group_by_length, "splits": { "train": splits.train.len(), "validation": splits.validation.len(), "test": splits.test.len() },
        "prompt_format": "alpaca", "end_token": tokenizer.eot(),
    });
    let prompt_ids = encode(&tokenizer, &sample_prompt)?;
    let hooks = SampleHook::new(lm.run_dir.join("samples.jsonl"), &sample_prompt, prompt_ids, tokenizer, job.sample_tokens, extract_response, !lm.dashboard);
    train_language_model(&lm, model, train_data, valid_data, hooks, |run| {
        let dir = run.join("data");
        write_splits(&dir, &splits).with_context(|| format!("writing the splits to {}", dir.display()))
    })
}
