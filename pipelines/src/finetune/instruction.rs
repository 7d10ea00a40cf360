//! Instruction fine-tuning (*Build a LLM From Scratch*, ch. 7): Alpaca-style records in the
//! prompt format of DESIGN.md, or conversations rendered with the model's chat template
//! ([`crate::data::chat`]), on any model family, tokenised with the model's tokenizer, batches
//! padded with its end of sequence (GPT-2's `<|endoftext|>`) and targets masked with -100
//! (optionally the prompt too: chat data learns only the assistant turns by default), the
//! language-modelling step of the one training loop, and after every epoch the model's response
//! to the first validation example in `samples.jsonl`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use gpt::burn::prelude::*;
use gpt::models::CausalLm;
use serde_json::json;

use gpt::text::ChatTemplate;

use crate::data::chat::ChatRendering;
use crate::data::conversation::{InstructionData, load_instruction_data, write_chat_splits};
use crate::data::instruction::{
    CollateConfig, InstructionDataset, Splits, encode, format_input, length_grouped_batches, split_records, write_splits,
};
use crate::eval::hellaswag::default_batch_size;
use crate::eval::responses::extract_response;
use crate::eval::tasks::hook::EvalTasks;
use crate::finetune::language_model::{LanguageModelJob, LanguageModelReport, SampleHook, load_for_training, train_language_model};
use crate::runs::ModelRef;
use crate::train::steps::LmBatch;
use crate::train::trainer::{BatchSource, TrainConfig};

/// Everything `llmfs finetune instruct` takes besides the shared training settings in `lm`.
#[derive(Debug, Clone)]
pub struct InstructionFinetune {
    pub lm: LanguageModelJob,
    /// The records (Alpaca records or conversations): a local file or an http(s) URL
    /// (downloaded once into `cache_dir`).
    pub data: String,
    pub cache_dir: PathBuf,
    /// Shuffle the records (seeded) before the 85 / 10 / 5 split instead of keeping file order.
    pub shuffle: bool,
    /// `mask_prompt`: learn only the responses (Alpaca) or assistant turns (chat).
    pub collate: CollateConfig,
    /// Chat data: learn only the assistant turns (`Some(true)`) or every token (`Some(false)`);
    /// `None`: the data's default, assistant turns for chat, `collate.mask_prompt` for Alpaca.
    pub train_on_assistant: Option<bool>,
    /// A chat template (its source and where it came from) instead of the model's.
    pub chat_template: Option<(String, String)>,
    /// Batch examples of similar length together (less padding, same examples per epoch).
    pub group_by_length: bool,
    /// New tokens of the per-epoch sample response.
    pub sample_tokens: usize,
    /// Benchmark tasks scored during training (`--eval-tasks`).
    pub eval_tasks: EvalTasks,
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

/// The splits of either kind of data.
enum DataSplits {
    Alpaca(Splits<Vec<crate::data::instruction::InstructionRecord>>),
    Chat(Splits<Vec<crate::data::conversation::Conversation>>),
}

impl DataSplits {
    fn lens(&self) -> [usize; 3] {
        match self {
            Self::Alpaca(s) => s.as_array().map(Vec::len),
            Self::Chat(s) => s.as_array().map(Vec::len),
        }
    }
}

/// Fine-tunes on the records' train split, validates on the validation split, keeps the three
/// splits in `RUN_DIR/data/` (the test split is what `llmfs generate-responses` answers).
pub fn finetune_instruction(job: &InstructionFinetune) -> Result<LanguageModelReport> {
    let (path, data) = load_instruction_data(&job.data, &job.cache_dir)?;
    let (shuffle, seed) = (job.shuffle, job.lm.train.seed);
    let splits = match data {
        InstructionData::Alpaca(records) => DataSplits::Alpaca(split_records(records, shuffle, seed)),
        InstructionData::Chat(conversations) => DataSplits::Chat(split_records(conversations, shuffle, seed)),
    };
    let [train_len, validation_len, test_len] = splits.lens();
    if train_len < job.lm.train.batch_size || validation_len == 0 {
        bail!(
            "{} has too few records: {train_len} train / {validation_len} validation after the 85/10/5 split (batch size {})",
            path.display(),
            job.lm.train.batch_size
        );
    }
    let model = load_for_training(&job.lm)?;
    let tokenizer = ModelRef::resolve(&job.lm.model).tokenizer()?;
    let context = model.context_length();
    let mut collate = job.collate.clone();
    // Positions past the context do not exist: cut there at the latest.
    collate.allowed_max_length = Some(collate.allowed_max_length.map_or(context, |max| max.min(context)));
    let is_chat = matches!(splits, DataSplits::Chat(_));
    collate.mask_prompt = job.train_on_assistant.unwrap_or(collate.mask_prompt || is_chat);

    let template = match &job.chat_template {
        Some((source, origin)) => {
            let (bos, eos) = tokenizer.special_token_texts();
            Some((ChatTemplate::new(source.clone(), bos, eos, origin)?, origin.clone()))
        }
        None => None,
    };
    let rendering = ChatRendering::new(&tokenizer, template)?;
    let batches = |data: InstructionDataset| -> Arc<dyn BatchSource<LmBatch>> {
        Arc::new(InstructionBatches { data, collate: collate.clone(), group_by_length: job.group_by_length })
    };
    let context = |split: &str| format!("{}, {split} split", path.display());
    let (train_data, valid_data, (sample_prompt, prompt_ids)) = match &splits {
        DataSplits::Alpaca(s) => {
            let tokenize = |records: &[_], split: &str| InstructionDataset::new(records, &tokenizer).with_context(|| context(split));
            let prompt = format_input(&s.validation[0]);
            let ids = encode(&tokenizer, &prompt)?;
            (batches(tokenize(&s.train, "train")?), batches(tokenize(&s.validation, "validation")?), (prompt, ids))
        }
        DataSplits::Chat(s) => {
            let tokenize = |conversations: &[_], split: &str| {
                InstructionDataset::tokenize(conversations, &tokenizer, |c| rendering.tokenize(c, &tokenizer)).with_context(|| context(split))
            };
            let prompt = rendering.prompt(&s.validation[0], &tokenizer).context("the sample prompt")?;
            (batches(tokenize(&s.train, "train")?), batches(tokenize(&s.validation, "validation")?), prompt)
        }
    };
    let masked = match (collate.mask_prompt, is_chat) {
        (true, true) => " (only the assistant turns in the loss)",
        (true, false) => " (prompt masked in the loss)",
        _ => "",
    };
    // Data-parallel: rank 0 alone reports and writes.
    let leader = crate::distributed::current().rank() == 0;
    if leader {
        eprintln!(
            "{}: {train_len} train / {validation_len} validation / {test_len} test {} from {}{masked}",
            job.lm.model,
            if is_chat { "conversations" } else { "records" },
            path.display(),
        );
        if is_chat {
            eprintln!("conversations rendered with {}", rendering.origin);
        }
    }
    let mut lm = job.lm.clone();
    lm.details = json!({
        "data": job.data, "records": path, "shuffle": job.shuffle, "collate": collate,
        "group_by_length": job.group_by_length, "splits": { "train": train_len, "validation": validation_len, "test": test_len },
        "prompt_format": if is_chat { "chat" } else { "alpaca" }, "end_token": tokenizer.eot(),
        "chat_template": if is_chat { Some(&rendering.origin) } else { None },
        "train_on": if collate.mask_prompt { "assistant" } else { "all" }, "eval_tasks": job.eval_tasks.describe(),
    });
    let tasks = job.eval_tasks.hook(tokenizer.clone(), default_batch_size(&lm.device), !lm.dashboard);
    let samples = SampleHook::new(lm.run_dir.join("samples.jsonl"), &sample_prompt, prompt_ids, tokenizer, job.sample_tokens, extract_response, !lm.dashboard);
    let report = train_language_model(&lm, model, train_data, valid_data, (samples, tasks), |run| {
        let dir = run.join("data");
        match &splits {
            DataSplits::Alpaca(s) => write_splits(&dir, s),
            DataSplits::Chat(s) => write_chat_splits(&dir, s),
        }
        .with_context(|| format!("writing the splits to {}", dir.display()))
    })?;
    // A model trained with --chat-template keeps it (chat_template.jinja wins over the base's),
    // so that chat, serve, generate-responses and an export render as training did. GPT-2's
    // compiled-in tokenizer and adapter-only runs have no such file: the flag is given again.
    if let Some((source, _)) = &job.chat_template
        && leader
        && report.model_dir.join(gpt::text::hf_tokenizer::TOKENIZER_FILE).is_file()
    {
        let file = report.model_dir.join(gpt::text::hf_tokenizer::CHAT_TEMPLATE_FILE);
        gpt::io::write_atomic(&file, source.as_bytes()).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(report)
}
