//! Products with bf16 weight matrices (`--dtype bf16`, and the frozen base of LoRA and QLoRA under
//! `--precision bf16-mixed`) for more rows than the streaming kernels take (prompts, batches,
//! training): the weight is widened to f32 one slab of rows at a time and handed to the GEMM, so
//! no f32 copy of the model is ever made and the sums are f32 sums of the stored values, as the
//! streaming kernels' are. Where the products are bf16 (`--precision bf16-mixed`) the GEMM packs
//! the stored values straight into its panels instead, with no slab. The weight never trains (a
//! bf16 weight that needs a gradient hands back `None`); under autodiff the input's gradient `g·Wᵀ`
//! is the same product.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::DType;
use std::cell::RefCell;

use rayon::prelude::*;

use super::bf16::gemm_bf16_weight_into;
use super::gemm::{Matrix, gemm_into};
use super::linear::column_sums;
use super::tensor::{FlexInput, contiguous, flex_from, record, slice, slice_bf16};

/// About this many weight values are widened per GEMM call (16 MiB of f32: few enough GEMM calls
/// for a training batch's products, each a round trip through rayon's pool).
const SLAB_VALUES: usize = 1 << 22;

thread_local! {
    /// Each thread's slab, kept between products: a fresh one was zeroed and page-faulted by the
    /// OS at every product (2.5× the f32 weight's time for `[128, 2048]·[2048, 8192]` with its
    /// gradient).
    static SLAB: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `f` on this thread's slab of `len` values (their contents left from before), or on a fresh
/// one when the slab is in use (a product inside a product).
fn with_slab<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SLAB.with(|slab| match slab.try_borrow_mut() {
        Ok(mut slab) => {
            if slab.len() < len {
                *slab = vec![0.0; len];
            }
            f(&mut slab[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// The values of a bf16 Flex weight that takes no gradient, contiguous, on a plain or an autodiff
/// device.
pub(super) fn frozen_bf16(weight: &Tensor<2>) -> Option<FlexTensor> {
    if weight.dtype() != DType::BF16 || weight.is_require_grad() || weight.device().without_autodiff() != Device::flex() {
        return None;
    }
    let flex = if weight.device().is_autodiff() {
        weight.clone().try_into_primitive::<Autodiff<Flex>>().ok()?.primitive().clone()
    } else {
        weight.clone().try_into_primitive::<Flex>().ok()?
    };
    Some(contiguous(flex))
}

/// `x·W + b` (`W` `[K, M]` bf16) or, when `transposed`, `x·Eᵀ` (`E` `[V, C]` bf16, the tied head),
/// with `x` and `b` f32 Flex tensors, tracked or not; else `None`.
pub(super) fn product(x: &Tensor<2>, weight: &Tensor<2>, transposed: bool, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    let wf = frozen_bf16(weight)?;
    let x_in = FlexInput::of(x)?;
    let b_in = match bias {
        Some(bias) => Some(FlexInput::of(bias)?),
        None => None,
    };
    let xf = x_in.raw();
    let x_m = Matrix::of(&xf);
    let [rows, cols] = weight.dims();
    let (k, n) = if transposed { (cols, rows) } else { (rows, cols) };
    let bias_values = b_in.as_ref().map(|b| contiguous(b.raw()));
    if x_m.cols != k || bias_values.as_ref().is_some_and(|b| b.layout().shape().to_vec() != [n]) {
        return None; // a shape error: Burn's ops report it
    }
    let out = if transposed { weight_times_transposed(x_m, &wf) } else { weight_times(x_m, &wf, bias_values.as_ref().map(slice)) };
    let out = flex_from(out, vec![x_m.rows, n]);
    let Some(x_t) = x_in.tracked() else {
        return Some(Tensor::from_primitive::<Flex>(out));
    };
    let state = FrozenState { weight: wf, transposed };
    let output = match b_in.and_then(FlexInput::tracked) {
        Some(b_t) => record(FrozenBackward, [x_t.node(), b_t.node()], state, out),
        None => record(FrozenBackward, [x_t.node()], state, out),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(output))
}

#[derive(Debug)]
struct FrozenBackward;

/// The bf16 weight as stored, and whether the product used its transpose.
#[derive(Debug, Clone)]
struct FrozenState {
    weight: FlexTensor,
    transposed: bool,
}

/// Parents `[x]` or `[x, bias]` (the frozen weight is none).
impl<const N: usize> Backward<Flex, N> for FrozenBackward {
    type State = FrozenState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let FrozenState { weight, transposed } = ops.state;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let g = Matrix::of(&grad);
        let [x_node, b_node] = [0, 1].map(|i| ops.parents.get(i).cloned().flatten());
        if let Some(node) = x_node {
            // dx = g·Wᵀ for x·W, g·E for x·Eᵀ: `[N, cols]` or `[N, rows]` of the stored weight.
            let dx = if transposed { weight_times(g, &weight, None) } else { weight_times_transposed(g, &weight) };
            let [rows, cols] = [weight.layout().shape()[0], weight.layout().shape()[1]];
            grads.register::<Flex>(node.id, flex_from(dx, vec![g.rows, if transposed { cols } else { rows }]));
        }
        if let Some(node) = b_node {
            grads.register::<Flex>(node.id, flex_from(column_sums(g), vec![g.cols]));
        }
    }
}

/// `to` = `from` widened to f32, on rayon's threads: on one, a training step's slabs (every frozen
/// weight twice, forward and backward) kept the other thread waiting for a third of the step.
fn widen(from: &[half::bf16], to: &mut [f32]) {
    const CHUNK: usize = 1 << 14;
    // A bf16 is the top half of its f32: a shift the compiler vectorises (half's slice
    // conversion did not, here).
    to.par_chunks_mut(CHUNK).zip(from.par_chunks(CHUNK)).for_each(|(to, from)| {
        to.iter_mut().zip(from).for_each(|(t, f)| *t = f32::from_bits((f.to_bits() as u32) << 16));
    });
}

/// `x·W (+ bias)` for a contiguous bf16 weight `W` `[K, M]`.
pub(super) fn weight_times(x: Matrix, weight: &FlexTensor, bias: Option<&[f32]>) -> Vec<f32> {
    let shape = weight.layout().shape();
    times_matrix(x, slice_bf16(weight), shape[0], shape[1], bias)
}

/// `x·Wᵀ` for a contiguous bf16 weight `W` `[N, K]`: the tied head's `x·Eᵀ`, a gradient's `g·Wᵀ`.
pub(super) fn weight_times_transposed(x: Matrix, weight: &FlexTensor) -> Vec<f32> {
    let shape = weight.layout().shape();
    times_transposed(x, slice_bf16(weight), shape[0], shape[1])
}

/// `x·W + b` with `W` `[k, n]` row-major: slabs of rows of `W` (of k), each product added into
/// the output.
fn times_matrix(x: Matrix, w: &[half::bf16], k: usize, n: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let m = x.rows;
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    if let Some(bias) = bias {
        (0..m).for_each(|_| out.extend_from_slice(bias));
    }
    if k == 0 {
        out.resize(m * n, 0.0);
        return out;
    }
    // SAFETY: `out` has room for m·n values, written (or added to the bias rows) by the product;
    // the views are inside x and w.
    if unsafe { gemm_bf16_weight_into(out.as_mut_ptr(), n, x, Matrix::rows_of(w, k, n, n), bias.is_some(), true) } {
        // SAFETY: every value is set.
        unsafe { out.set_len(m * n) };
        return out;
    }
    let slab = (SLAB_VALUES / n.max(1)).clamp(1, k);
    with_slab(slab * n, |widened| {
        for k0 in (0..k).step_by(slab) {
            let rows = slab.min(k - k0);
            let part = &mut widened[..rows * n];
            widen(&w[k0 * n..(k0 + rows) * n], part);
            // x's columns k0..k0 + rows.
            // SAFETY: the view stays inside x (k0 + rows ≤ k = x.cols).
            let x_part = Matrix { ptr: unsafe { x.ptr.offset(k0 as isize * x.col_stride) }, cols: rows, ..x };
            // SAFETY: `out` has room for m·n values; the first slab writes every one (or adds to
            // the bias rows), the others add to them, so all are set after the first.
            unsafe {
                gemm_into(out.as_mut_ptr(), n, x_part, Matrix::rows_of(part, rows, n, n), bias.is_some() || k0 > 0, true);
                out.set_len(m * n);
            }
        }
    });
    out
}

/// `x·Eᵀ` with `E` `[n, k]` row-major (a vocabulary of n rows): slabs of rows of `E`, each
/// product writing its own columns of the output.
fn times_transposed(x: Matrix, e: &[half::bf16], n: usize, k: usize) -> Vec<f32> {
    let m = x.rows;
    let mut out = vec![0.0f32; m * n];
    if k == 0 {
        return out;
    }
    // SAFETY: `out` holds m·n values; the views are inside x and e.
    if unsafe { gemm_bf16_weight_into(out.as_mut_ptr(), n, x, Matrix::rows_of(e, n, k, k).t(), false, true) } {
        return out;
    }
    let slab = (SLAB_VALUES / k).clamp(1, n.max(1));
    with_slab(slab * k, |widened| {
        for v0 in (0..n).step_by(slab) {
            let rows = slab.min(n - v0);
            let part = &mut widened[..rows * k];
            widen(&e[v0 * k..(v0 + rows) * k], part);
            // SAFETY: columns v0..v0 + rows of the m × n output, rows n apart, are inside `out`.
            unsafe { gemm_into(out.as_mut_ptr().add(v0), n, x, Matrix::rows_of(part, rows, k, k).t(), false, true) };
        }
    });
    out
}
