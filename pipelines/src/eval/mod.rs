//! Evaluation: classifiers (their predictions and metrics), HellaSwag, perplexity, lm-eval-harness's
//! loglikelihood tasks, model responses to instruction data,
//! an LLM judge that scores them, and reference-based text metrics (ROUGE, BLEU, chrF).

pub mod classifier;
pub mod hellaswag;
pub mod judge;
pub mod loglikelihood;
pub mod metrics;
pub mod perplexity;
pub mod responses;
pub mod tasks;
pub mod text_metrics;
