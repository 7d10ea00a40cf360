//! llmfs pipelines: data → training → evaluation. So far: the training losses shared by every
//! task (the data sets, the burn-train learner and the evaluations build on them).

pub mod train;

/// The model crate, re-exported so that users of the pipelines need one dependency.
pub use gpt;
