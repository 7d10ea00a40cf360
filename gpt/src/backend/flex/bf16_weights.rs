//! Products with bf16 weight matrices (`--dtype bf16`) for more rows than the streaming kernels
//! take (prompts, batches): the weight is widened to f32 one slab of rows at a time and handed
//! to the GEMM, so no f32 copy of the model is ever made and the sums are f32 sums of the stored
//! values, as the streaming kernels' are. Inference only: an autodiff input hands back `None`.

use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::DType;
use half::slice::HalfFloatSliceExt;

use super::gemm::{Matrix, gemm_into};
use super::tensor::{FlexInput, contiguous, flex_from, slice, slice_bf16};

/// About this many weight values are widened per GEMM call (4 MiB of f32: the slab stays in L2/L3
/// while the GEMM reads it, and the GEMM calls are still large).
const SLAB_VALUES: usize = 1 << 20;

/// `x·W + b` (`W` `[K, M]` bf16) or, when `transposed`, `x·Eᵀ` (`E` `[V, C]` bf16, the tied head),
/// with `x` and `b` plain f32 Flex tensors; else `None`.
pub(super) fn product(x: &Tensor<2>, weight: &Tensor<2>, transposed: bool, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    if weight.dtype() != DType::BF16 || weight.device().is_autodiff() || x.device().is_autodiff() {
        return None;
    }
    let Some(FlexInput::Plain(xf)) = FlexInput::of(x) else { return None };
    let wf = contiguous(weight.clone().try_into_primitive::<Flex>().ok()?);
    let bias = match bias {
        Some(bias) => match FlexInput::of(bias)? {
            FlexInput::Plain(b) => Some(contiguous(b)),
            FlexInput::Tracked(_) => return None,
        },
        None => None,
    };
    let (x_m, w) = (Matrix::of(&xf), slice_bf16(&wf));
    let [rows, cols] = weight.dims();
    let (k, n) = if transposed { (cols, rows) } else { (rows, cols) };
    if x_m.cols != k || bias.as_ref().is_some_and(|b| b.layout().shape().to_vec() != [n]) {
        return None; // a shape error: Burn's ops report it
    }
    let out = if transposed { times_transposed(x_m, w, n, k) } else { times_matrix(x_m, w, k, n, bias.as_ref().map(slice)) };
    Some(Tensor::from_primitive::<Flex>(flex_from(out, vec![x_m.rows, n])))
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
    let slab = (SLAB_VALUES / n.max(1)).clamp(1, k);
    let mut widened = vec![0.0f32; slab * n];
    for k0 in (0..k).step_by(slab) {
        let rows = slab.min(k - k0);
        let part = &mut widened[..rows * n];
        w[k0 * n..(k0 + rows) * n].convert_to_f32_slice(part);
        // x's columns k0..k0 + rows.
        // SAFETY: the view stays inside x (k0 + rows ≤ k = x.cols).
        let x_part = Matrix { ptr: unsafe { x.ptr.offset(k0 as isize * x.col_stride) }, cols: rows, ..x };
        // SAFETY: `out` has room for m·n values; the first slab writes every one (or adds to the
        // bias rows), the others add to them, so all are set after the first.
        unsafe {
            gemm_into(out.as_mut_ptr(), n, x_part, Matrix::rows_of(part, rows, n, n), bias.is_some() || k0 > 0, true);
            out.set_len(m * n);
        }
    }
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
    let slab = (SLAB_VALUES / k).clamp(1, n.max(1));
    let mut widened = vec![0.0f32; slab * k];
    for v0 in (0..n).step_by(slab) {
        let rows = slab.min(n - v0);
        let part = &mut widened[..rows * k];
        e[v0 * k..(v0 + rows) * k].convert_to_f32_slice(part);
        // SAFETY: columns v0..v0 + rows of the m × n output, rows n apart, are inside `out`.
        unsafe { gemm_into(out.as_mut_ptr().add(v0), n, x, Matrix::rows_of(part, rows, k, k).t(), false, true) };
    }
    out
}
