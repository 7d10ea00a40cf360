pub mod download;
pub mod generate;
pub mod logits;
