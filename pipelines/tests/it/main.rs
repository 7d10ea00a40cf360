//! The pipelines' integration tests, one binary (one link of Burn instead of one per file).

mod common;
mod common_http;
#[path = "../../../gpt/tests/it/common/mod.rs"]
mod gpt_common;

mod device_collective;
mod distributed;
mod eval_tasks;
mod finetune_classifier;
mod finetune_instruction;
mod fineweb_shards;
mod fuzz_parsers;
mod hellaswag;
mod instruction_data;
mod instruction_responses;
mod llm_judge;
mod loss_and_adamw;
mod plots;
mod pretrain;
mod runs;
mod spam_data;
