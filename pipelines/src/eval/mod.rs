//! Evaluation: classifiers (their predictions and metrics), HellaSwag, perplexity, model responses to instruction data,
//! and an LLM judge that scores them.

pub mod classifier;
pub mod hellaswag;
pub mod judge;
pub mod metrics;
pub mod perplexity;
pub mod responses;
