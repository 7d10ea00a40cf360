//! Fine-tuning tasks built on the one training loop.

pub mod classifier;
pub mod instruction;
pub mod language_model;
pub mod lora;

pub use classifier::{ClassifierData, ClassifierFinetune, ClassifierReport, finetune_classifier};
pub use language_model::{LanguageModelJob, LanguageModelReport, SampleHook, load_for_training, train_language_model};
pub use instruction::{InstructionFinetune, finetune_instruction};
pub use lora::LoraFinetune;
