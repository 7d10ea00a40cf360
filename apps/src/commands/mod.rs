pub mod classify;
pub mod download;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod logits;
pub mod plot;
pub mod prepare;
