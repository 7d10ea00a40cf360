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

/// `x·W + b`: `x` `[N, K]`, `weight` `[K, M]` (Burn's `Linear` layout), `bias` `[M]`. `None` when
/// the tensors are not f32 on Flex (the caller then uses Burn's ops).
pub fn linear(x: &Tensor<2>, weight: &Tensor<2>, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    product(x, weight, false, bias)
}

/// `x·Eᵀ`: `x` `[N, C]`, `embedding` `[V, C]`; the output head tied to the token embedding.
pub fn times_transposed(x: &Tensor<2>, embedding: &Tensor<2>) -> Option<Tensor<2>> {
    product(x, embedding, true, None)
}

fn product(x: &Tensor<2>, weight: &Tensor<2>, transposed: bool, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
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
    let out = multiply(x_m, w, bias_values.as_ref().map(slice));
    let out = flex_from(out, vec![x_m.rows, w.cols]);
    let tracked = |input: FlexInput| match input {
        FlexInput::Tracked(tracked) => Some(tracked),
        FlexInput::Plain(_) => None,
    };
    let (Some(x_t), Some(w_t)) = (tracked(x_in), tracked(w_in)) else {
        return Some(Tensor::from_primitive::<Flex>(out));
    };
    let state = ProductState { x: xf, weight: wf, transposed };
    let output = match b_in.and_then(tracked) {
        Some(b_t) => record(ProductBackward, [x_t.node(), w_t.node(), b_t.node()], state, out),
        None => record(ProductBackward, [x_t.node(), w_t.node()], state, out),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(output))
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

/// `a·b` (+ `bias` on every row), row-major `[a.rows, b.cols]`, each value written once.
fn multiply(a: Matrix, b: Matrix, bias: Option<&[f32]>) -> Vec<f32> {
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
        gemm_into(out.as_mut_ptr(), n, a, b, bias.is_some(), true);
        out.set_len(m * n);
    }
    out
}

/// `Σᵢ g[i, ·]`: the bias gradient.
fn column_sums(g: Matrix) -> Vec<f32> {
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
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let values: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        Tensor::from_data(TensorData::new(values, shape), device)
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
