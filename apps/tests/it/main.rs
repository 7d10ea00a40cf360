//! The `llmfs` binary's integration tests, one test binary: each test runs the real `llmfs`.

mod common;
#[path = "../../../pipelines/tests/it/common_http/mod.rs"]
mod common_http;

mod bad_input;
mod bench_suite;
mod cli;
mod data_sources;
mod distributed;
mod crash_resume;
mod disk_full;
mod eval_tasks;
mod eval_text;
mod export;
mod finetune;
mod hellaswag;
mod hub;
mod instruct_eval;
mod llama_training;
mod lm_training;
mod monitor;
mod perplexity;
mod plot;
mod precision;
mod prepare;
mod prepare_fineweb;
mod qlora;
mod serve;
mod tracking;
