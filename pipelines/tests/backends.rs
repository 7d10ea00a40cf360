//! Every backend-parity test in one binary: the model's logits, hidden states, greedy tokens with
//! and without the KV cache, generation, the classifiers, the Llama family, the masked loss and
//! AdamW against the fixtures' PyTorch numbers, and the gradients NCCL averages between GPUs.
//! Built for a GPU machine without a Rust toolchain, where one binary travels better than five
//! (each links LLVM's NVPTX back end): scripts/gpu-check.sh builds it with `--features cuda` and
//! runs it with `LLMFS_TEST_DEVICE=cuda`. The tests live in the crates' `tests/it/` binaries and
//! run from there in the normal suite (`test = false` here keeps them from running twice).

#[path = "../../gpt/tests/it/common/mod.rs"]
mod common;
use common as gpt_common;

#[path = "../../gpt/tests/it/attention_mask.rs"]
mod attention_mask;
#[path = "../../gpt/tests/it/classifier.rs"]
mod classifier;
#[path = "it/device_collective.rs"]
mod device_collective;
#[path = "../../gpt/tests/it/generation.rs"]
mod generation;
#[path = "../../gpt/tests/it/llama.rs"]
mod llama;
#[path = "it/loss_and_adamw.rs"]
mod loss_and_adamw;
#[path = "mixed_precision/training.rs"]
mod mixed_precision;
#[path = "../../gpt/tests/it/parity.rs"]
mod parity;
