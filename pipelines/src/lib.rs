//! llmfs pipelines: data → training → evaluation.

pub mod bench;
pub mod data;
pub mod distributed;
pub mod download;
pub mod eval;
pub mod finetune;
pub mod plots;
pub mod pretrain;
pub mod retry;
pub mod runs;
pub mod track;
pub mod train;

/// The model crate, re-exported so that users of the pipelines need one dependency.
pub use gpt;
