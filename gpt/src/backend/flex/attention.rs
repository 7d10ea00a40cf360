//! Causal self-attention on Flex as one op with its own backward: from the fused q/k/v
//! projection `[B, T, 3C]` to the merged heads `[B, T, C]`, one task per (sequence, head).
//!
//! Burn's ops would split the heads (views), multiply `q·kᵀ` over the whole `T×T` square, mask,
//! softmax, drop out, multiply by `v`, and copy the heads back together; backward, the four
//! matmuls again over the full square (each output zero-filled and copied once more by
//! `FlexTensor::empty`), the slices' gradients as three zero tensors of `[B, T, 3C]` that are then
//! added up. Here every product is done in row blocks that stop at the diagonal (the future
//! keys' scores are never computed: ~40 % fewer multiply-adds at T = 256), the products read
//! q, k, v and write the outputs and the gradient of `qkv` in place through strides, and the
//! softmax, dropout and their backward are one pass per row.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use rayon::prelude::*;

use super::tensor::{FlexInput, contiguous, flex_from, record, slice};
use super::training::{max_and_inverse_sum, softmax_backward, softmax_times};
use super::gemm::{Matrix, gemm_into};
use super::parallel::SharedOut;

/// Query rows per block of the products: large enough for the GEMM to run at full speed, small
/// enough that the skipped upper triangle is most of what lies above the diagonal.
const BLOCK: usize = 64;

/// `softmax(q·kᵀ/√hd + causal mask) · v` for every head of `qkv` (`[B, T, 3C]`: q | k | v, head
/// `h` at columns `h·hd..(h+1)·hd` of each third), heads merged back into `[B, T, C]`.
/// `keep_mask` (`B·H·T·T` values, each `0` or `1/keep`) is the attention dropout, applied to
/// the weights before they multiply `v`. `None` unless `qkv` is f32 on Flex. Without autodiff
/// (a prefill: the whole prompt at once) the blocked products beat Burn's attention kernel,
/// which computes the full square one dot product at a time.
pub fn causal_attention(qkv: &Tensor<3>, n_head: usize, keep_mask: Option<Vec<f32>>) -> Option<Tensor<3>> {
    let [b, t, c3] = qkv.dims();
    let input = FlexInput::of(qkv)?;
    if n_head == 0 || c3 % (3 * n_head) != 0 || keep_mask.as_ref().is_some_and(|m| m.len() != b * n_head * t * t) {
        return None;
    }
    let shape = Dims { batch: b, time: t, heads: n_head, head_dim: c3 / 3 / n_head };
    let tracked = match input {
        FlexInput::Tracked(tracked) => tracked,
        FlexInput::Plain(flex) => {
            let (out, _weights) = forward(&shape, slice(&contiguous(flex)), keep_mask.as_deref());
            return Some(Tensor::from_primitive::<Flex>(flex_from(out, vec![b, t, c3 / 3])));
        }
    };
    let qkv_values = contiguous(tracked.primitive().clone());
    let keep_mask = keep_mask.map(Arc::new);
    let (out, weights) = forward(&shape, slice(&qkv_values), keep_mask.as_deref().map(Vec::as_slice));
    let out = flex_from(out, vec![b, t, c3 / 3]);
    let state = AttentionState { shape, qkv: qkv_values, weights: Arc::new(weights), keep_mask };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(record(AttentionBackward, [tracked.node()], state, out)))
}

/// What [`causal_attention`] computes, from Burn's ops (split heads, scores, causal mask, softmax,
/// `keep_mask` `[B, H, T, T]`, weights · v, merge): the reference its tests and
/// `benches/training_ops.rs` compare against, on any backend.
pub fn causal_attention_by_burn_ops(qkv: Tensor<3>, n_head: usize, keep_mask: Option<Tensor<4>>) -> Tensor<3> {
    let [b, t, c3] = qkv.dims();
    let (c, hd) = (c3 / 3, c3 / 3 / n_head);
    let split = |z: Tensor<3>| z.reshape([b, t, n_head, hd]).swap_dims(1, 2);
    let (q, k, v) = (split(qkv.clone().narrow(2, 0, c)), split(qkv.clone().narrow(2, c, c)), split(qkv.narrow(2, 2 * c, c)));
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (hd as f64).sqrt());
    let future = Tensor::<2, Bool>::tril_mask([t, t], 0, &scores.device()).unsqueeze::<4>();
    let weights = burn::tensor::activation::softmax(scores.mask_fill(future, f32::NEG_INFINITY), 3);
    let weights = match keep_mask {
        Some(mask) => weights * mask,
        None => weights,
    };
    weights.matmul(v).swap_dims(1, 2).reshape([b, t, c])
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    time: usize,
    heads: usize,
    head_dim: usize,
}

impl Dims {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// The row blocks `[r0, r1)` of the T positions.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize)> {
        let t = self.time;
        (0..t.div_ceil(BLOCK)).map(move |i| (i * BLOCK, ((i + 1) * BLOCK).min(t)))
    }

    /// Offset of head `h`'s column `part` (0 = q, 1 = k, 2 = v) of sequence `b`, row 0, in `qkv`.
    fn qkv_offset(&self, b: usize, h: usize, part: usize) -> usize {
        b * self.time * 3 * self.width() + part * self.width() + h * self.head_dim
    }
}

#[derive(Debug)]
struct AttentionBackward;

#[derive(Debug, Clone)]
struct AttentionState {
    shape: Dims,
    qkv: FlexTensor,
    /// The attention weights (after softmax, before dropout), `[B·H, T, T]`, zero above the diagonal.
    weights: Arc<Vec<f32>>,
    keep_mask: Option<Arc<Vec<f32>>>,
}

impl Backward<Flex, 1> for AttentionBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let AttentionState { shape, qkv, weights, keep_mask } = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let grad = contiguous(grad);
            let d_qkv = backward(&shape, slice(&qkv), &weights, keep_mask.as_deref().map(Vec::as_slice), slice(&grad));
            flex_from(d_qkv, vec![shape.batch, shape.time, 3 * shape.width()])
        });
    }
}

/// The output `[B, T, C]` and the weights `[B·H, T, T]`.
fn forward(shape: &Dims, qkv: &[f32], keep_mask: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
    let Dims { time: t, heads, head_dim: hd, .. } = *shape;
    let (c, c3) = (shape.width(), 3 * shape.width());
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0.0f32; shape.batch * t * c];
    let mut weights = vec![0.0f32; shape.batch * heads * t * t];
    let out_ptr = SharedOut(out.as_mut_ptr());
    weights.par_chunks_mut(t * t).enumerate().for_each(|(task, p)| {
        let (b, h) = (task / heads, task % heads);
        let (q, k, v) = (shape.qkv_offset(b, h, 0), shape.qkv_offset(b, h, 1), shape.qkv_offset(b, h, 2));
        let mut scores = vec![0.0f32; t * t];
        let mut dropped = if keep_mask.is_some() { vec![0.0f32; t * t] } else { Vec::new() };
        for (r0, r1) in shape.blocks() {
            // scores[r0..r1, ..r1] = q[r0..r1] · k[..r1]ᵀ
            let queries = Matrix::rows_of(&qkv[q + r0 * c3..], r1 - r0, hd, c3);
            let keys = Matrix::rows_of(&qkv[k..], r1, hd, c3);
            product(scores[r0 * t..].as_mut_ptr(), t, queries, keys.t());
            for i in r0..r1 {
                let row = &scores[i * t..i * t + i + 1];
                let (max, inv_sum) = max_and_inverse_sum(row, scale);
                softmax_times(row, scale, max, inv_sum, &mut p[i * t..i * t + i + 1]);
            }
            let used = match keep_mask {
                Some(mask) => {
                    let mask = &mask[task * t * t..(task + 1) * t * t];
                    for i in r0..r1 {
                        let span = i * t..i * t + r1;
                        dropped[span.clone()].iter_mut().zip(&p[span.clone()]).zip(&mask[span]).for_each(|((d, &w), &m)| *d = w * m);
                    }
                    &dropped[..]
                }
                None => &*p,
            };
            // out[r0..r1, head] = used[r0..r1, ..r1] · v[..r1]
            let lhs = Matrix::rows_of(&used[r0 * t..], r1 - r0, r1, t);
            let values = Matrix::rows_of(&qkv[v..], r1, hd, c3);
            // SAFETY: the rows r0..r1 of this head's columns, inside `out`.
            let dst = out_ptr.at((b * t + r0) * c + h * hd);
            product(dst, c, lhs, values);
        }
    });
    (out, weights)
}

/// The gradient of `qkv`, `[B, T, 3C]`, from the output's `grad` (`[B, T, C]`).
fn backward(shape: &Dims, qkv: &[f32], weights: &[f32], keep_mask: Option<&[f32]>, grad: &[f32]) -> Vec<f32> {
    let Dims { time: t, heads, head_dim: hd, .. } = *shape;
    let (c, c3) = (shape.width(), 3 * shape.width());
    let scale = 1.0 / (hd as f32).sqrt();
    let mut d_qkv = vec![0.0f32; shape.batch * t * c3];
    let d_ptr = SharedOut(d_qkv.as_mut_ptr());
    (0..shape.batch * heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / heads, task % heads);
        let p = &weights[task * t * t..(task + 1) * t * t];
        let mask = keep_mask.map(|m| &m[task * t * t..(task + 1) * t * t]);
        let (q, k, v) = (shape.qkv_offset(b, h, 0), shape.qkv_offset(b, h, 1), shape.qkv_offset(b, h, 2));
        let grad_rows = |r0: usize, rows: usize| Matrix::rows_of(&grad[(b * t + r0) * c + h * hd..], rows, hd, c);
        // SAFETY (for the three below): rows of this head's columns of `d_qkv`.
        let d_rows = |offset: usize, r0: usize| d_ptr.at(offset + r0 * c3);
        // The weights that multiplied v: after dropout (zero above the diagonal, as `p` is).
        let dropped: Vec<f32>;
        let used = match mask {
            Some(mask) => {
                dropped = p.iter().zip(mask).map(|(w, m)| w * m).collect();
                &dropped[..]
            }
            None => p,
        };
        // d_used[r0..r1, ..r1] = grad[r0..r1] · v[..r1]ᵀ, then the dropout and softmax backward.
        let mut d_scores = vec![0.0f32; t * t];
        let mut d_used = vec![0.0f32; t];
        for (r0, r1) in shape.blocks() {
            let values = Matrix::rows_of(&qkv[v..], r1, hd, c3);
            product(d_scores[r0 * t..].as_mut_ptr(), t, grad_rows(r0, r1 - r0), values.t());
            for i in r0..r1 {
                let row = &mut d_scores[i * t..(i + 1) * t];
                let visible = i + 1;
                d_used[..visible].copy_from_slice(&row[..visible]);
                if let Some(mask) = mask {
                    d_used[..visible].iter_mut().zip(&mask[i * t..]).for_each(|(d, &m)| *d *= m);
                }
                softmax_backward(&p[i * t..i * t + visible], &d_used[..visible], scale, &mut row[..visible]);
                row[visible..].fill(0.0); // the products below read the diagonal blocks whole
            }
        }
        for (r0, r1) in shape.blocks() {
            // d_q[r0..r1] = d_scores[r0..r1, ..r1] · k[..r1]
            let lhs = Matrix::rows_of(&d_scores[r0 * t..], r1 - r0, r1, t);
            let keys = Matrix::rows_of(&qkv[k..], r1, hd, c3);
            product(d_rows(q, r0), c3, lhs, keys);
            // d_k[r0..r1] = d_scores[r0.., r0..r1]ᵀ · q[r0..]; d_v[r0..r1] = used[r0.., r0..r1]ᵀ · grad[r0..]
            let scores_below = Matrix::rows_of(&d_scores[r0 * t + r0..], t - r0, r1 - r0, t);
            let queries = Matrix::rows_of(&qkv[q + r0 * c3..], t - r0, hd, c3);
            product(d_rows(k, r0), c3, scores_below.t(), queries);
            let used_below = Matrix::rows_of(&used[r0 * t + r0..], t - r0, r1 - r0, t);
            product(d_rows(v, r0), c3, used_below.t(), grad_rows(r0, t - r0));
        }
    });
    d_qkv
}

/// `dst = a·b` (rows `dst_row` apart), on the calling thread: the (sequence, head) tasks are the
/// parallelism.
fn product(dst: *mut f32, dst_row: usize, a: Matrix, b: Matrix) {
    // SAFETY: the callers pass views inside `qkv`, the weights, the gradient and their scratch
    // rows, and a destination with room for a.rows rows of this head's b.cols columns.
    unsafe { gemm_into(dst, dst_row, a, b, false, false) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Output and gradient against Burn's ops, with and without dropout, for T below, at and
    /// across block boundaries (so partial and several diagonal blocks are covered).
    #[test]
    fn fused_attention_matches_burns_ops_with_gradients() {
        let device = Device::flex().autodiff();
        for (b, t, n_head, hd, dropout) in [(2, 7, 3, 4, false), (1, 64, 2, 8, true), (2, 150, 2, 16, true), (1, 130, 1, 8, false)] {
            device.seed(t as u64);
            let qkv = Tensor::<3>::random([b, t, 3 * n_head * hd], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let d_out = Tensor::<3>::random([b, t, n_head * hd], Distribution::Normal(0.0, 1.0), &device);
            let mask = dropout.then(|| crate::backend::keep_mask::scaled_keep_mask(b * n_head * t * t, 0.8, 7));
            let mask_tensor = mask.clone().map(|m| Tensor::<4>::from_data(TensorData::new(m, [b, n_head, t, t]), &device));

            let ours = causal_attention(&qkv, n_head, mask).expect("fused");
            let burn = causal_attention_by_burn_ops(qkv.clone(), n_head, mask_tensor);
            let diff = (ours.clone() - burn.clone()).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-5, "[{b}, {t}, {n_head}x{hd}]: outputs differ by {diff}");
            let g_ours = qkv.grad(&(ours * d_out.clone()).sum().backward()).expect("gradient");
            let g_burn = qkv.grad(&(burn * d_out).sum().backward()).expect("gradient");
            let diff = (g_ours - g_burn).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-5, "[{b}, {t}, {n_head}x{hd}]: gradients differ by {diff}");
        }
    }

    /// Inference (a plain Flex tensor: a prompt's prefill) gives Burn's ops' output too.
    #[test]
    fn inference_matches_burns_ops() {
        let device = Device::flex();
        for (b, t, n_head, hd) in [(1, 7, 3, 4), (2, 150, 2, 16), (1, 512, 9, 64)] {
            device.seed(t as u64);
            let qkv = Tensor::<3>::random([b, t, 3 * n_head * hd], Distribution::Normal(0.0, 1.0), &device);
            let ours = causal_attention(&qkv, n_head, None).expect("f32 on Flex");
            let burn = causal_attention_by_burn_ops(qkv, n_head, None);
            let diff = (ours - burn).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-5, "[{b}, {t}, {n_head}x{hd}]: outputs differ by {diff}");
        }
    }

    #[test]
    fn bad_masks_and_shapes_are_handed_back() {
        let tracked = Tensor::<3>::zeros([1, 4, 6], &Device::flex().autodiff());
        assert!(causal_attention(&tracked, 1, Some(vec![1.0; 3])).is_none(), "a mask of the wrong size");
        assert!(causal_attention(&tracked, 4, None).is_none(), "6 columns are not 3 × 4 heads");
    }
}
