//! SwiGLU, the gated activation of the Llama family's MLP: `silu(gate)·up`.

use burn::prelude::*;
use burn::tensor::activation::silu;

use crate::backend::kernels;

/// `silu(gate)·up`: on the CPU one fused pass (with its own backward when training), elsewhere
/// Burn's ops.
pub fn swiglu(gate: Tensor<3>, up: Tensor<3>) -> Tensor<3> {
    kernels::swiglu(gate, up).unwrap_or_else(|(gate, up)| silu(gate) * up)
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::ops::linear::tests::{max_rel_diff, random};

    /// The fused op and its gradients against Burn's `silu(gate)·up`, on both sides of the
    /// threading threshold, with a loss that weighs every output differently.
    #[test]
    fn fused_swiglu_and_its_gradients_match_burns_ops() {
        let device = Device::flex().autodiff();
        for rows in [3, 300] {
            let to = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &device).reshape([1, rows, 1024]);
            let gate = to(random([rows, 1024], 1).mul_scalar(3.0)).require_grad();
            let up = to(random([rows, 1024], 2)).require_grad();
            let weights = to(random([rows, 1024], 3));
            let ours = swiglu(gate.clone(), up.clone());
            let grads = (ours.clone() * weights.clone()).sum().backward();
            let burn = silu(gate.clone()) * up.clone();
            let burn_grads = (burn.clone() * weights).sum().backward();
            let flat = |t: Tensor<3>| t.reshape([rows, 1024]);
            assert!(max_rel_diff(flat(ours.inner()), flat(burn.inner())) < 1e-5, "output");
            let (d_gate, d_gate_burn) = (gate.grad(&grads).unwrap(), gate.grad(&burn_grads).unwrap());
            assert!(max_rel_diff(flat(d_gate), flat(d_gate_burn)) < 1e-5, "d gate");
            let (d_up, d_up_burn) = (up.grad(&grads).unwrap(), up.grad(&burn_grads).unwrap());
            assert!(max_rel_diff(flat(d_up), flat(d_up_burn)) < 1e-5, "d up");
        }
    }
}
