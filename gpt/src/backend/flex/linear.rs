//! The matrix products of the model's Linear layers and tied output head on Flex, as one op with
//! its own backward, calling the GEMM Flex itself uses (the `gemm` crate) directly.
//!
//! Burn 0.22.1 composes `x·W + b` from a matmul and a broadcast add, and backward from two
//! matmuls of transposed views, a sum over rows and the add's backward. Every matmul output is a
//! `FlexTensor::empty`, which zero-fills a byte vector and then, because a `Vec<u8>` is only
//! byte-aligned, copies it whole into a 16-byte-aligned buffer (cubecl's `Bytes::from_bytes_vec`):
//! two passes over memory before the GEMM writes a value, for every activation, every gradient and
//! the 200 MB of logits of a 124M step. Here the outputs are written once: the bias is put into
//! the output rows and the GEMM adds `x·W` to them, gradients go straight into fresh buffers, and
//! no gradient is computed for a frozen input.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;

use super::tensor::{FlexInput, contiguous, flex_from, record, slice};
use super::gemm::{Matrix, gemm_into};

/// `x·W + b`: `x` `[N, K]`, `weight` `[K, M]` (Burn's `Linear` layout, f32, or bf16 for
/// inference), `bias` `[M]`. `None` when the tensors are not on Flex (the caller then uses
/// Burn's ops).
pub fn linear(x: &Tensor<2>, weight: &Tensor<2>, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    product(x, weight, false, bias)
}

/// `x·Eᵀ`: `x` `[N, C]`, `embedding` `[V, C]`; the output head tied to the token embedding.
pub fn times_transposed(x: &Tensor<2>, embedding: &Tensor<2>) -> Option<Tensor<2>> {
    product(x, embedding, true, None)
}

fn product(x: &Tensor<2>, weight: &Tensor<2>, transposed: bool, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    if weight.dtype() == burn::tensor::DType::BF16 {
        return super::bf16_weights::product(x, weight, transposed, bias);
    }
    let (x_in, w_in) = (FlexInput::of(x)?, FlexInput::of(weight)?);
    let b_in = match bias {
        Some(bias) => Some(FlexInput::of(bias)?),
        None => None,
    };
    let (xf, wf) = (x_in.raw(), w_in.raw());
    let w = Matrix::of(&wf);
    let w = if transposed { w.t() } else { w };
    let x_m = Matrix::of(&xf);
    if x_m.cols != w.rows || b_in.as_ref().is_some_and(|b| b.raw().layout().shape().to_vec() != [w.cols]) {
        return None; // a shape error: Burn's ops report it
    }
    let bias_values = b_in.as_ref().map(|b| contiguous(b.raw()));
    // A weight outside autodiff (inference, a frozen prefix) changes between products only if
    // someone replaces it: its bf16 panels can be packed once.
    let frozen = match &w_in {
        FlexInput::Plain(weight) => Some(weight),
        FlexInput::Tracked(_) => None,
    };
    let out = multiply_weight(x_m, w, frozen, bias_values.as_ref().map(slice));
    let out = flex_from(out, vec![x_m.rows, w.cols]);
    let (Some(x_t), Some(w_t)) = (x_in.tracked(), w_in.tracked()) else {
        return Some(Tensor::from_primitive::<Flex>(out));
    };
    let state = ProductState { x: xf, weight: wf, transposed };
    let output = match b_in.and_then(FlexInput::tracked) {
        Some(b_t) => record(ProductBackward, [x_t.node(), w_t.node(), b_t.node()], state, out),
        None => record(ProductBackward, [x_t.node(), w_t.node()], state, out),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(output))
}

/// A LoRA layer `x·W + b + s·(x·A)·B` (`A` `[K, r]`, `B` `[r, M]`, `W` frozen) as one op: the
/// low-rank product adds into the output the dense GEMM wrote, and backward adds `s·(g·Bᵀ)·Aᵀ`
/// into the input gradient `g·Wᵀ`, where Burn's ops would make five graph nodes, two transposed
/// copies and two extra passes (an add) over every output and every input gradient. `None` when
/// the tensors are not f32 on Flex, or when the base weight trains (then Burn's ops).
pub fn lora_linear(x: &Tensor<2>, weight: &Tensor<2>, bias: Option<&Tensor<1>>, a: &Tensor<2>, b: &Tensor<2>, scale: f64) -> Option<Tensor<2>> {
    if weight.is_require_grad() {
        return None;
    }
    let (x_in, a_in, b_in) = (FlexInput::of(x)?, FlexInput::of(a)?, FlexInput::of(b)?);
    // The frozen base: f32, or bf16 (kept so under bf16-mixed: `super::bf16_weights`).
    let wf = match weight.dtype() {
        burn::tensor::DType::BF16 => super::bf16_weights::frozen_bf16(weight)?,
        _ => FlexInput::of(weight)?.raw(),
    };
    let bias_in = match bias {
        Some(bias) => Some(FlexInput::of(bias)?),
        None => None,
    };
    let (xf, af, bf) = (x_in.raw(), a_in.raw(), b_in.raw());
    let (x_m, a_m, b_m) = (Matrix::of(&xf), Matrix::of(&af), Matrix::of(&bf));
    let [w_rows, w_cols] = weight.dims();
    let (n, k, m, r) = (x_m.rows, x_m.cols, w_cols, a_m.cols);
    if w_rows != k || a_m.rows != k || b_m.rows != r || b_m.cols != m || bias_in.as_ref().is_some_and(|b| b.raw().layout().shape().to_vec() != [m]) {
        return None; // a shape error: Burn's ops report it
    }
    // s·(x·A), kept for B's gradient.
    let mut xa = multiply(x_m, a_m, None);
    xa.iter_mut().for_each(|v| *v *= scale as f32);
    let bias_values = bias_in.as_ref().map(|b| contiguous(b.raw()));
    let mut out = frozen_times(x_m, &wf, bias_values.as_ref().map(slice));
    // SAFETY: `out` holds n·m values; xa is n·r, B is r·m.
    unsafe { gemm_into(out.as_mut_ptr(), m, Matrix::rows_of(&xa, n, r, r), b_m, true, true) };
    let out = flex_from(out, vec![n, m]);
    let (Some(x_t), Some(a_t), Some(b_t)) = (x_in.tracked(), a_in.tracked(), b_in.tracked()) else {
        return Some(Tensor::from_primitive::<Flex>(out));
    };
    let state = LoraState { x: xf, weight: wf, a: af, b: bf, xa: flex_from(xa, vec![n, r]), scale: scale as f32 };
    let output = match bias_in.and_then(FlexInput::tracked) {
        Some(bias_t) => record(LoraBackward, [x_t.node(), a_t.node(), b_t.node(), bias_t.node()], state, out),
        None => record(LoraBackward, [x_t.node(), a_t.node(), b_t.node()], state, out),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(output))
}

#[derive(Debug)]
struct LoraBackward;

/// What the backward of a LoRA layer reads: the inputs as stored and `s·(x·A)`.
#[derive(Debug, Clone)]
struct LoraState {
    x: FlexTensor,
    weight: FlexTensor,
    a: FlexTensor,
    b: FlexTensor,
    xa: FlexTensor,
    scale: f32,
}

/// Parents `[x, A, B]` or `[x, A, B, bias]` (the frozen `W` is none).
impl<const N: usize> Backward<Flex, N> for LoraBackward {
    type State = LoraState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let LoraState { x, weight, a, b, xa, scale } = ops.state;
        let grad = grads.consume::<Flex>(&ops.node);
        let g = Matrix::of(&grad);
        let (x_m, a_m, b_m, xa_m) = (Matrix::of(&x), Matrix::of(&a), Matrix::of(&b), Matrix::of(&xa));
        let w_rows = weight.layout().shape()[0];
        let [x_node, a_node, b_node, bias_node] = [0, 1, 2, 3].map(|i| ops.parents.get(i).cloned().flatten());
        // s·(g·Bᵀ) `[N, r]`: what flows back into x·A.
        let gb = (x_node.is_some() || a_node.is_some()).then(|| {
            let mut gb = multiply(g, b_m.t(), None);
            gb.iter_mut().for_each(|v| *v *= scale);
            gb
        });
        if let (Some(node), Some(gb)) = (x_node, &gb) {
            // dx = g·Wᵀ + s·(g·Bᵀ)·Aᵀ, the second product added into the first's buffer.
            let mut dx = frozen_times_transposed(g, &weight);
            // SAFETY: dx holds g.rows·K values; gb is g.rows·r, Aᵀ is r·K.
            unsafe { gemm_into(dx.as_mut_ptr(), w_rows, Matrix::rows_of(gb, g.rows, a_m.cols, a_m.cols), a_m.t(), true, true) };
            grads.register::<Flex>(node.id, flex_from(dx, vec![g.rows, w_rows]));
        }
        if let (Some(node), Some(gb)) = (a_node, &gb) {
            // dA = xᵀ·s·(g·Bᵀ)
            let gb_m = Matrix::rows_of(gb, g.rows, a_m.cols, a_m.cols);
            grads.register::<Flex>(node.id, flex_from(multiply(x_m.t(), gb_m, None), vec![a_m.rows, a_m.cols]));
        }
        if let Some(node) = b_node {
            // dB = (s·x·A)ᵀ·g
            grads.register::<Flex>(node.id, flex_from(multiply(xa_m.t(), g, None), vec![b_m.rows, b_m.cols]));
        }
        if let Some(node) = bias_node {
            grads.register::<Flex>(node.id, flex_from(column_sums(g), vec![g.cols]));
        }
    }
}

#[derive(Debug)]
struct ProductBackward;

/// The inputs of `x·W (+ b)`, as stored (`transposed`: the product used `weightᵀ`).
#[derive(Debug, Clone)]
struct ProductState {
    x: FlexTensor,
    weight: FlexTensor,
    transposed: bool,
}

/// Parents `[x, weight]` or `[x, weight, bias]`.
impl<const N: usize> Backward<Flex, N> for ProductBackward {
    type State = ProductState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let ProductState { x, weight, transposed } = ops.state;
        let grad = grads.consume::<Flex>(&ops.node);
        let g = Matrix::of(&grad);
        let (x_m, w) = (Matrix::of(&x), Matrix::of(&weight));
        let [x_node, w_node, b_node] = [0, 1, 2].map(|i| ops.parents.get(i).cloned().flatten());
        if let Some(node) = x_node {
            // dx = g·Wᵀ, with W the matrix the product used.
            let w_used_t = if transposed { w } else { w.t() };
            grads.register::<Flex>(node.id, flex_from(multiply(g, w_used_t, None), vec![g.rows, w_used_t.cols]));
        }
        if let Some(node) = w_node {
            // dW = xᵀ·g, or its transpose (gᵀ·x) when the stored weight is Wᵀ.
            let (lhs, rhs) = if transposed { (g.t(), x_m) } else { (x_m.t(), g) };
            grads.register::<Flex>(node.id, flex_from(multiply(lhs, rhs, None), vec![lhs.rows, rhs.cols]));
        }
        if let Some(node) = b_node {
            grads.register::<Flex>(node.id, flex_from(column_sums(g), vec![g.cols]));
        }
    }
}

/// `x·W (+ bias)` for a frozen weight `W` `[K, M]` kept in f32 or in bf16 (contiguous).
fn frozen_times(x: Matrix, weight: &FlexTensor, bias: Option<&[f32]>) -> Vec<f32> {
    match weight.dtype() {
        burn::tensor::DType::BF16 => super::bf16_weights::weight_times(x, weight, bias),
        _ => multiply(x, Matrix::of(weight), bias),
    }
}

/// `g·Wᵀ` for the same weight.
fn frozen_times_transposed(g: Matrix, weight: &FlexTensor) -> Vec<f32> {
    match weight.dtype() {
        burn::tensor::DType::BF16 => super::bf16_weights::weight_times_transposed(g, weight),
        _ => multiply(g, Matrix::of(weight).t(), None),
    }
}

/// `a·b` (+ `bias` on every row), row-major `[a.rows, b.cols]`, each value written once.
fn multiply(a: Matrix, b: Matrix, bias: Option<&[f32]>) -> Vec<f32> {
    multiply_weight(a, b, None, bias)
}

/// [`multiply`], `b` viewing `frozen` when that is a weight no gradient changes (its bf16 panels
/// are then kept between products: [`super::bf16::gemm_frozen_into`]).
fn multiply_weight(a: Matrix, b: Matrix, frozen: Option<&FlexTensor>, bias: Option<&[f32]>) -> Vec<f32> {
    let (m, n) = (a.rows, b.cols);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    if let Some(bias) = bias {
        for _ in 0..m {
            out.extend_from_slice(bias);
        }
    }
    // SAFETY: `out` has room for m·n values; without a bias the GEMM writes every one without
    // reading it, with one it adds to the bias rows, so all are set after it.
    unsafe {
        let accumulate = bias.is_some();
        if !frozen.is_some_and(|weight| super::bf16::gemm_frozen_into(out.as_mut_ptr(), n, a, weight, b, accumulate)) {
            gemm_into(out.as_mut_ptr(), n, a, b, accumulate, true);
        }
        out.set_len(m * n);
    }
    out
}

/// `Σᵢ g[i, ·]`: the bias gradient.
pub(super) fn column_sums(g: Matrix) -> Vec<f32> {
    let mut sums = vec![0.0f32; g.cols];
    if g.col_stride == 1 {
        for i in 0..g.rows {
            // SAFETY: row i has g.cols values with unit stride.
            let row = unsafe { std::slice::from_raw_parts(g.ptr.offset(i as isize * g.row_stride), g.cols) };
            sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
        }
    } else {
        for (j, s) in sums.iter_mut().enumerate() {
            *s = (0..g.rows).map(|i| g.at(i, j)).sum();
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
        super::super::test_values::tensor(shape, seed, 1.0, device)
    }

    fn assert_close<const D: usize>(what: &str, ours: Tensor<D>, burn: Tensor<D>) {
        let (a, b) = (ours.into_data().try_to_vec::<f32>().unwrap(), burn.into_data().try_to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len(), "{what}: length");
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-5 * scale, "{what}: max diff {worst} (max |value| {scale})");
    }

    /// Forward and every gradient against Burn's matmul + add, with a loss that weighs each
    /// output differently (so a transposed or misplaced gradient cannot pass), for sizes on both
    /// sides of the threading threshold.
    #[test]
    fn linear_and_its_gradients_match_burn() {
        let device = Device::flex().autodiff();
        for (n, k, m) in [(5, 3, 7), (300, 200, 260)] {
            let x = random([n, k], 1, &device).require_grad();
            let w = random([k, m], 2, &device).require_grad();
            let b = random([m], 3, &device).require_grad();
            let weights = random([n, m], 4, &device);

            let ours = linear(&x, &w, Some(&b)).expect("f32 on Flex");
            let grads = (ours.clone() * weights.clone()).sum().backward();
            let (gx, gw, gb) = (x.grad(&grads).unwrap(), w.grad(&grads).unwrap(), b.grad(&grads).unwrap());

            let burn = x.clone().matmul(w.clone()) + b.clone().unsqueeze::<2>();
            let burn_grads = (burn.clone() * weights).sum().backward();
            assert_close("output", ours, burn);
            assert_close("dx", gx, x.grad(&burn_grads).unwrap());
            assert_close("dW", gw, w.grad(&burn_grads).unwrap());
            assert_close("db", gb, b.grad(&burn_grads).unwrap());
        }
    }

    /// The fused LoRA layer against Burn's ops (`x·W + b + s·(x·A)·B`): output and the gradients
    /// of x, A, B and a trainable bias, none for the frozen W; a trainable W is left to Burn.
    #[test]
    fn lora_layer_and_its_gradients_match_burn() {
        let device = Device::flex().autodiff();
        for (n, k, m, r) in [(5, 3, 7, 2), (300, 200, 260, 8)] {
            let x = random([n, k], 1, &device).require_grad();
            let w = random([k, m], 2, &device);
            let b = random([m], 3, &device).require_grad();
            let (a, up) = (random([k, r], 4, &device).require_grad(), random([r, m], 5, &device).require_grad());
            let weights = random([n, m], 6, &device);

            let ours = lora_linear(&x, &w, Some(&b), &a, &up, 0.5).expect("f32 on Flex, W frozen");
            let grads = (ours.clone() * weights.clone()).sum().backward();
            let burn = x.clone().matmul(w.clone()) + b.clone().unsqueeze::<2>() + x.clone().matmul(a.clone()).mul_scalar(0.5).matmul(up.clone());
            let burn_grads = (burn.clone() * weights).sum().backward();
            assert_close("output", ours, burn);
            assert_close("dx", x.grad(&grads).unwrap(), x.grad(&burn_grads).unwrap());
            assert_close("dA", a.grad(&grads).unwrap(), a.grad(&burn_grads).unwrap());
            assert_close("dB", up.grad(&grads).unwrap(), up.grad(&burn_grads).unwrap());
            assert_close("db", b.grad(&grads).unwrap(), b.grad(&burn_grads).unwrap());
            assert!(w.grad(&grads).is_none());
        }
        let w = random([3, 7], 2, &device).require_grad();
        let (x, a, up) = (random([5, 3], 1, &device), random([3, 2], 4, &device), random([2, 7], 5, &device));
        assert!(lora_linear(&x, &w, None, &a, &up, 1.0).is_none(), "a trainable base takes Burn's ops");
    }

    #[test]
    fn tied_head_product_and_its_gradients_match_burn() {
        let device = Device::flex().autodiff();
        let x = random([9, 16], 5, &device).require_grad();
        let e = random([37, 16], 6, &device).require_grad();
        let weights = random([9, 37], 7, &device);
        let ours = times_transposed(&x, &e).expect("f32 on Flex");
        let grads = (ours.clone() * weights.clone()).sum().backward();
        let burn = x.clone().matmul(e.clone().transpose());
        let burn_grads = (burn.clone() * weights).sum().backward();
        assert_close("output", ours, burn);
        assert_close("dx", x.grad(&grads).unwrap(), x.grad(&burn_grads).unwrap());
        assert_close("dE", e.grad(&grads).unwrap(), e.grad(&burn_grads).unwrap());
    }

    /// A frozen weight gets no gradient and the input still does; plain tensors and strided
    /// (transposed) inputs give Burn's values.
    #[test]
    fn frozen_weights_plain_tensors_and_strided_inputs() {
        let device = Device::flex().autodiff();
        let x = random([6, 4], 8, &device).require_grad();
        let w = random([4, 5], 9, &device); // not require_grad: frozen
        let out = linear(&x, &w, None).unwrap();
        let grads = out.sum().backward();
        assert!(w.grad(&grads).is_none());
        assert_close("dx", x.grad(&grads).unwrap(), Tensor::<2>::ones([6, 5], &device).matmul(w.clone().transpose()));

        let plain = Device::flex();
        let xt = random([4, 6], 10, &plain).transpose(); // [6, 4], strided
        let w = random([4, 5], 11, &plain);
        let b = random([5], 12, &plain);
        assert_close("plain", linear(&xt, &w, Some(&b)).unwrap(), xt.clone().matmul(w.clone()) + b.unsqueeze::<2>());
    }
}
