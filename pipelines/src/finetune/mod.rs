//! Fine-tuning tasks built on the one training loop.

pub mod classifier;

pub use classifier::{ClassifierFinetune, ClassifierReport, Prediction, classify_texts, finetune_classifier};
