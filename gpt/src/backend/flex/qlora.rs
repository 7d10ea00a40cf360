//! QLoRA's layer as one op on Flex: `x·Wᵀ + b + s·(x·A)·B` with `W` an NF4 weight (frozen,
//! `[out, in]`) and the LoRA factors `A` `[in, r]`, `B` `[r, out]` trained, or `x·Wᵀ + b` alone
//! for a quantized layer without an adapter. Forward dequantizes inside the product
//! ([`super::nf4`]); backward gives `x` the gradient `g·W + s·(g·Bᵀ)·Aᵀ` through the quantized
//! weight, and `A`, `B` and a bias theirs, as the fused LoRA layer ([`super::linear::lora_linear`]).

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;

use super::gemm::{Matrix, gemm_into};
use super::nf4::{nf4_times, nf4_times_transposed};
use super::tensor::{FlexInput, TrackedTensor, contiguous, flex_from, record, slice};
use crate::quant::Nf4Matrix;

/// `x·Wᵀ + b` (`x` `[N, in]`, `bias` `[out]`) with `W` an NF4 `[out, in]` matrix. `None` when the
/// tensors are not f32 on Flex or the shapes do not match (the caller then dequantizes and uses
/// Burn's ops, which report a shape error).
pub fn nf4_linear(x: &Tensor<2>, weight: &Arc<Nf4Matrix>, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    layer(x, weight, bias, None)
}

/// `x·Wᵀ + b + s·(x·A)·B` (`A` `[in, r]`, `B` `[r, out]`) with `W` an NF4 `[out, in]` matrix:
/// QLoRA's layer. `None` as for [`nf4_linear`].
pub fn qlora_linear(x: &Tensor<2>, weight: &Arc<Nf4Matrix>, bias: Option<&Tensor<1>>, a: &Tensor<2>, b: &Tensor<2>, scale: f64) -> Option<Tensor<2>> {
    layer(x, weight, bias, Some((a, b, scale)))
}

fn layer(x: &Tensor<2>, weight: &Arc<Nf4Matrix>, bias: Option<&Tensor<1>>, adapter: Option<(&Tensor<2>, &Tensor<2>, f64)>) -> Option<Tensor<2>> {
    let (k, m) = (weight.cols(), weight.rows());
    let x_in = FlexInput::of(x)?;
    let bias_in = match bias {
        Some(bias) => Some(FlexInput::of(bias)?),
        None => None,
    };
    let adapter_in = match adapter {
        Some((a, b, scale)) => Some((FlexInput::of(a)?, FlexInput::of(b)?, scale as f32)),
        None => None,
    };
    let xf = x_in.values();
    let n = xf.layout().shape()[0];
    let (a_shape, b_shape) = match &adapter_in {
        Some((a, b, _)) => (a.raw().layout().shape().to_vec(), b.raw().layout().shape().to_vec()),
        None => (vec![k, 0], vec![0, m]),
    };
    let rank = a_shape[1];
    if xf.layout().shape().to_vec() != [n, k] || a_shape != [k, rank] || b_shape != [rank, m] || bias_in.as_ref().is_some_and(|b| b.raw().layout().shape().to_vec() != [m]) {
        return None;
    }
    let bias_values = bias_in.as_ref().map(|b| contiguous(b.raw()));
    let mut out = nf4_times_transposed(slice(&xf), n, weight, bias_values.as_ref().map(slice));
    // s·(x·A), kept for B's gradient, and its product by B added into the output.
    let adapter_values = adapter_in.as_ref().map(|(a, b, scale)| {
        let (af, bf) = (a.raw(), b.raw());
        let mut xa = multiply(Matrix::of(&xf), Matrix::of(&af));
        xa.iter_mut().for_each(|v| *v *= scale);
        // SAFETY: `out` holds n·m values; xa is n·r, B is r·m.
        unsafe { gemm_into(out.as_mut_ptr(), m, Matrix::rows_of(&xa, n, rank, rank), Matrix::of(&bf), true, true) };
        Adapter { a: af, b: bf, xa: flex_from(xa, vec![n, rank]), scale: *scale }
    });
    let out = flex_from(out, vec![n, m]);
    let Some(x_t) = x_in.tracked() else {
        return Some(Tensor::from_primitive::<Flex>(out));
    };
    let bias_t: Option<TrackedTensor> = bias_in.and_then(FlexInput::tracked);
    let state = QloraState { x: xf, weight: Arc::clone(weight), adapter: adapter_values, has_bias: bias_t.is_some() };
    let output = match (adapter_in, bias_t) {
        (Some((a, b, _)), bias_t) => {
            let (a_t, b_t) = (a.tracked()?, b.tracked()?);
            match bias_t {
                Some(bias_t) => record(QloraBackward, [x_t.node(), a_t.node(), b_t.node(), bias_t.node()], state, out),
                None => record(QloraBackward, [x_t.node(), a_t.node(), b_t.node()], state, out),
            }
        }
        (None, Some(bias_t)) => record(QloraBackward, [x_t.node(), bias_t.node()], state, out),
        (None, None) => record(QloraBackward, [x_t.node()], state, out),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(output))
}

#[derive(Debug)]
struct QloraBackward;

/// What the backward reads: `x`, the quantized weight (shared, never copied), and the adapter.
#[derive(Debug, Clone)]
struct QloraState {
    x: FlexTensor,
    weight: Arc<Nf4Matrix>,
    adapter: Option<Adapter>,
    has_bias: bool,
}

/// The LoRA factors as stored and `s·(x·A)`.
#[derive(Debug, Clone)]
struct Adapter {
    a: FlexTensor,
    b: FlexTensor,
    xa: FlexTensor,
    scale: f32,
}

/// Parents `[x]`, `[x, bias]`, `[x, A, B]` or `[x, A, B, bias]` (the quantized `W` is none).
impl<const N: usize> Backward<Flex, N> for QloraBackward {
    type State = QloraState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let QloraState { x, weight, adapter, has_bias } = ops.state;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let g = Matrix::of(&grad);
        let parent = |i: usize| ops.parents.get(i).cloned().flatten();
        let x_node = parent(0);
        let (a_node, b_node) = if adapter.is_some() { (parent(1), parent(2)) } else { (None, None) };
        let bias_node = has_bias.then(|| parent(if adapter.is_some() { 3 } else { 1 })).flatten();
        // s·(g·Bᵀ) `[N, r]`: what flows back into x·A.
        let gb = adapter.as_ref().filter(|_| x_node.is_some() || a_node.is_some()).map(|adapter| {
            let mut gb = multiply(g, Matrix::of(&adapter.b).t());
            gb.iter_mut().for_each(|v| *v *= adapter.scale);
            gb
        });
        if let Some(node) = x_node {
            // dx = g·W (+ s·(g·Bᵀ)·Aᵀ, added into the same buffer).
            let mut dx = nf4_times(slice(&grad), g.rows, &weight);
            if let (Some(adapter), Some(gb)) = (&adapter, &gb) {
                let a = Matrix::of(&adapter.a);
                // SAFETY: dx holds g.rows·K values; gb is g.rows·r, Aᵀ is r·K.
                unsafe { gemm_into(dx.as_mut_ptr(), a.rows, Matrix::rows_of(gb, g.rows, a.cols, a.cols), a.t(), true, true) };
            }
            grads.register::<Flex>(node.id, flex_from(dx, vec![g.rows, weight.cols()]));
        }
        if let (Some(node), Some(adapter), Some(gb)) = (a_node, &adapter, &gb) {
            // dA = xᵀ·s·(g·Bᵀ)
            let a = Matrix::of(&adapter.a);
            let da = multiply(Matrix::of(&x).t(), Matrix::rows_of(gb, g.rows, a.cols, a.cols));
            grads.register::<Flex>(node.id, flex_from(da, vec![a.rows, a.cols]));
        }
        if let (Some(node), Some(adapter)) = (b_node, &adapter) {
            // dB = (s·x·A)ᵀ·g
            let xa = Matrix::of(&adapter.xa);
            grads.register::<Flex>(node.id, flex_from(multiply(xa.t(), g), vec![xa.cols, g.cols]));
        }
        if let Some(node) = bias_node {
            let mut sums = vec![0.0f32; g.cols];
            for row in slice(&grad).chunks_exact(g.cols) {
                sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
            }
            grads.register::<Flex>(node.id, flex_from(sums, vec![g.cols]));
        }
    }
}

/// `a·b`, row-major `[a.rows, b.cols]`, each value written once by the GEMM.
fn multiply(a: Matrix, b: Matrix) -> Vec<f32> {
    let (m, n) = (a.rows, b.cols);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: `out` has room for m·n values, all of which the GEMM writes without reading them.
    unsafe {
        gemm_into(out.as_mut_ptr(), n, a, b, false, true);
        out.set_len(m * n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_values::tensor as random;

    fn assert_close<const D: usize>(what: &str, ours: Tensor<D>, burn: Tensor<D>) {
        let (a, b) = (ours.into_data().try_to_vec::<f32>().unwrap(), burn.into_data().try_to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len(), "{what}: length");
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-5 * scale, "{what}: max diff {worst} (max |value| {scale})");
    }

    /// A quantized `[out, in]` weight and its dequantized values as a Burn `[in, out]` tensor
    /// (what a Linear layer would hold).
    fn weight(d_in: usize, d_out: usize, device: &Device) -> (Arc<Nf4Matrix>, Tensor<2>) {
        let w = random([d_in, d_out], 2, 0.2, &Device::flex()).into_data().try_to_vec::<f32>().unwrap();
        let q = Nf4Matrix::from_linear_weight("w", &w, [d_in, d_out]).unwrap().double_quantized();
        let dequantized = Tensor::<2>::from_data(TensorData::new(q.dequantize(), [d_out, d_in]), device).transpose();
        (Arc::new(q), dequantized)
    }

    /// The QLoRA layer against Burn's ops on the dequantized weight: the output and the gradients
    /// of x, A, B and a trainable bias (a loss weighing each output differently), for a few rows
    /// (the streaming product) and many (the panels), none for the frozen weight.
    #[test]
    fn qlora_layer_and_its_gradients_match_burn_on_the_dequantized_weight() {
        let device = Device::flex().autodiff();
        for (n, k, m, r) in [(5, 64, 40, 2), (70, 192, 130, 8), (9, 37, 23, 3)] {
            let (w, w_dequantized) = weight(k, m, &device);
            let x = random([n, k], 1, 1.0, &device).require_grad();
            let b = random([m], 3, 1.0, &device).require_grad();
            let (a, up) = (random([k, r], 4, 1.0, &device).require_grad(), random([r, m], 5, 1.0, &device).require_grad());
            let weights = random([n, m], 6, 1.0, &device);

            let ours = qlora_linear(&x, &w, Some(&b), &a, &up, 0.5).expect("f32 on Flex");
            let grads = (ours.clone() * weights.clone()).sum().backward();
            let burn = x.clone().matmul(w_dequantized.clone()) + b.clone().unsqueeze::<2>() + x.clone().matmul(a.clone()).mul_scalar(0.5).matmul(up.clone());
            let burn_grads = (burn.clone() * weights).sum().backward();
            assert_close("output", ours, burn);
            assert_close("dx", x.grad(&grads).unwrap(), x.grad(&burn_grads).unwrap());
            assert_close("dA", a.grad(&grads).unwrap(), a.grad(&burn_grads).unwrap());
            assert_close("dB", up.grad(&grads).unwrap(), up.grad(&burn_grads).unwrap());
            assert_close("db", b.grad(&grads).unwrap(), b.grad(&burn_grads).unwrap());
        }
    }

    /// Without an adapter: the input and bias gradients through the quantized weight; without a
    /// bias; on a plain device; and shapes that do not fit are handed back.
    #[test]
    fn quantized_layer_without_adapter() {
        let device = Device::flex().autodiff();
        let (w, w_dequantized) = weight(128, 48, &device);
        let x = random([20, 128], 7, 1.0, &device).require_grad();
        let b = random([48], 8, 1.0, &device).require_grad();
        let weights = random([20, 48], 9, 1.0, &device);
        let ours = nf4_linear(&x, &w, Some(&b)).unwrap();
        let grads = (ours.clone() * weights.clone()).sum().backward();
        let burn = x.clone().matmul(w_dequantized.clone()) + b.clone().unsqueeze::<2>();
        let burn_grads = (burn.clone() * weights.clone()).sum().backward();
        assert_close("output", ours, burn);
        assert_close("dx", x.grad(&grads).unwrap(), x.grad(&burn_grads).unwrap());
        assert_close("db", b.grad(&grads).unwrap(), b.grad(&burn_grads).unwrap());

        let grads = (nf4_linear(&x, &w, None).unwrap() * weights.clone()).sum().backward();
        let burn_grads = (x.clone().matmul(w_dequantized.clone()) * weights).sum().backward();
        assert_close("dx without bias", x.grad(&grads).unwrap(), x.grad(&burn_grads).unwrap());

        let plain = Device::flex();
        let (x, w_plain) = (random([3, 128], 10, 1.0, &plain), Tensor::<2>::from_data(w_dequantized.into_data(), &plain));
        assert_close("plain", nf4_linear(&x, &w, None).unwrap(), x.clone().matmul(w_plain));
        assert!(nf4_linear(&random([3, 64], 11, 1.0, &plain), &w, None).is_none(), "x [3, 64] by a [48, 128] weight");
    }
}
