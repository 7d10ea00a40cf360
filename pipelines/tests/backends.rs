//! Every backend-parity test in one binary: the model's logits, hidden states, greedy tokens with
//! and without the KV cache, generation, the classifier, the masked loss and AdamW against the
//! fixture's PyTorch numbers. Built for a GPU machine without a Rust toolchain, where one binary
//! travels better than five (each links LLVM's NVPTX back end): scripts/gpu-check.sh builds it
//! with `--features cuda` and runs it with `LLMFS_TEST_DEVICE=cuda`. The tests live in their own
//! files and run from there in the normal suite (`test = false` here keeps them from running twice).

#[path = "../../gpt/tests/classifier.rs"]
mod classifier;
#[path = "../../gpt/tests/generation.rs"]
mod generation;
#[path = "loss_and_adamw.rs"]
mod loss_and_adamw;
#[path = "../../gpt/tests/parity.rs"]
mod parity;
