//! Next-token cross-entropy with PyTorch's ignore index (-100): targets set to -100 (padding,
//! masked prompts) take no part in the loss. Burn's `CrossEntropyLoss` has no ignore index, and
//! GPT-2's padding token (50256) is also a real target, so the mask comes from the targets.

use gpt::burn::prelude::*;
use gpt::burn::tensor::activation::log_softmax;

/// Targets equal to this are ignored (PyTorch's default `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Per-position cross-entropy `[B, T]` of `logits` `[B, T, V]` against `targets` `[B, T]`,
/// 0 where the target is [`IGNORE_INDEX`].
pub fn cross_entropy_per_token(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, t, vocab] = logits.dims();
    // On the CPU one fused pass (and one backward) instead of log_softmax's half-dozen.
    let logits = match gpt::backend::kernels::cross_entropy_rows(logits.reshape([b * t, vocab]), targets.clone().reshape([b * t]), IGNORE_INDEX) {
        Ok(nll) => return nll.reshape([b, t]),
        Err(logits) => logits.reshape([b, t, vocab]),
    };
    let ignored = targets.clone().equal_elem(IGNORE_INDEX);
    // Any valid index works for ignored positions: their loss is zeroed below.
    let safe_targets = targets.mask_fill(ignored.clone(), 0);
    let log_probs = log_softmax(logits, 2);
    let nll = log_probs.gather(2, safe_targets.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2).neg();
    nll.mask_fill(ignored, 0.0)
}

/// Mean cross-entropy over the targets that are not [`IGNORE_INDEX`] (0 when all are ignored),
/// as `torch.nn.functional.cross_entropy(..., ignore_index=-100)`.
pub fn cross_entropy_masked(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let counted = targets.clone().not_equal_elem(IGNORE_INDEX).float().sum();
    cross_entropy_per_token(logits, targets).sum() / counted.clamp_min(1.0)
}
