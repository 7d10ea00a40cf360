//! GELU, the activation of GPT-2's MLP (tanh approximation).

use burn::nn::Gelu;
use burn::prelude::*;

use crate::backend::kernels;

/// GPT-2's `gelu_new`: on the CPU one fused pass (with its own backward when training), elsewhere
/// [`gelu_by_sigmoid`]; the layer's own `forward` for exact GELU.
pub fn gelu(act: &Gelu, x: Tensor<3>) -> Tensor<3> {
    if !act.approximate {
        return act.forward(x);
    }
    kernels::gelu_tanh(x).unwrap_or_else(gelu_by_sigmoid)
}

/// The same GELU from Burn ops that autodiff differentiates: `x · sigmoid(2u)` needs one fused
/// sigmoid (with its own backward) where `gelu_approximate` spends a `powf` and a `tanh`.
pub fn gelu_by_sigmoid(x: Tensor<3>) -> Tensor<3> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4;
    let inner = x.clone().square().mul_scalar(0.044715).add_scalar(1.0);
    let z = (x.clone() * inner).mul_scalar(TWO_SQRT_2_OVER_PI);
    x * burn::tensor::activation::sigmoid(z)
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::ops::linear::tests::{max_rel_diff, random};

    fn random_ad(shape: [usize; 2], seed: u64, device: &Device) -> Tensor<2> {
        device.seed(seed);
        Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 3.0), device)
    }

    fn max_abs(a: Tensor<2>, b: Tensor<2>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn gelu_by_sigmoid_matches_burn_with_gradients() {
        let device = Device::flex().autodiff();
        let x = Tensor::<3>::from_data(random([1, 4096], 7).mul_scalar(3.0).reshape([1, 1, 4096]).into_data(), &device).require_grad();
        let ours = gelu_by_sigmoid(x.clone());
        let burns = burn::tensor::activation::gelu_approximate(x.clone());
        let (a, b) = (ours.clone().inner().reshape([1, 4096]), burns.clone().inner().reshape([1, 4096]));
        assert!(max_rel_diff(a, b) < 1e-6);
        let (ga, gb) = (x.grad(&ours.sum().backward()).unwrap(), x.grad(&burns.sum().backward()).unwrap());
        assert!(max_rel_diff(ga.reshape([1, 4096]), gb.reshape([1, 4096])) < 1e-5);
    }

    #[test]
    fn fused_gelu_matches_burn() {
        for len in [5, 3072, 3 << 16] {
            let x = random([1, len], 6).mul_scalar(3.0).reshape([1, 1, len]);
            let fast = gelu(&Gelu::new_approximate(), x.clone()).reshape([1, len]);
            let reference = burn::tensor::activation::gelu_approximate(x).reshape([1, len]);
            let diff = max_rel_diff(fast, reference);
            assert!(diff < 1e-6, "{len} elements: relative diff {diff}");
        }
    }

    #[test]
    fn fused_gelu_matches_the_composed_one_with_gradients() {
        let device = Device::flex().autodiff();
        // Wide enough to span several parallel chunks, with values where the curve bends.
        let x = random_ad([3, 20_011], 11, &device).require_grad();
        let weights = random_ad([3, 20_011], 12, &device);
        let ours = kernels::gelu_tanh(x.clone()).unwrap_or_else(|_| panic!("not fused"));
        let reference = gelu_by_sigmoid(x.clone().unsqueeze::<3>()).squeeze_dim::<2>(0);
        let diff = max_abs(ours.clone(), reference.clone());
        assert!(diff < 1e-5, "forward differs by {diff}");
        // Plain tensors get the same forward (the decoding path).
        let plain = Tensor::<2>::from_data(x.clone().into_data(), &Device::flex());
        let forward = kernels::gelu_tanh(plain).unwrap_or_else(|_| panic!("not fused"));
        assert_eq!(forward.into_data(), ours.clone().into_data(), "plain and tracked forward");
        let g_ours = x.grad(&(ours * weights.clone()).sum().backward()).expect("gradient");
        let g_ref = x.grad(&(reference * weights).sum().backward()).expect("gradient");
        let diff = max_abs(g_ours, g_ref);
        assert!(diff < 1e-4, "gradient differs by {diff}");
    }
}
