//! Dropout, with a fast mask on the CPU backend.
//!
//! Burn's `Dropout::forward` draws one Bernoulli sample per element on one thread through its
//! general random code, then multiplies twice. On the CPU the mask is drawn in parallel on the host
//! ([`crate::backend::keep_mask`]), seeded from this thread's stream once [`seed_this_thread`] set
//! it (training does), else from the device's own random stream (so `device.seed(..)` still makes
//! runs reproducible), and applied with one multiplication, which is also what the backward pass
//! multiplies the gradient by. Other backends keep Burn's dropout.

use std::cell::Cell;

use burn::nn::Dropout;
use burn::prelude::*;

use crate::backend::is_flex;
use crate::backend::keep_mask::{scaled_keep_mask, splitmix64};

/// Whether a dropout layer would change its input (training mode, on an autodiff device, p > 0).
pub fn active<const D: usize>(layer: &Dropout, x: &Tensor<D>) -> bool {
    active_on(layer, &x.device())
}

fn active_on(layer: &Dropout, device: &Device) -> bool {
    layer.prob > 0.0 && layer.training.is_enabled() && device.is_autodiff()
}

/// `layer.forward(x)`: zeroes each element with probability `layer.prob` and scales the rest by
/// `1 / (1 - prob)`, when the layer is active.
pub fn forward<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    if !active(layer, &x) {
        return x;
    }
    if let Some(mask) = flex_mask(layer, x.shape().num_elements(), &x.device()) {
        let mask = Tensor::<D>::from_data(TensorData::new(mask, x.shape()), &x.device());
        return x * mask;
    }
    layer.forward(x)
}

/// The scaled keep-mask (`0` or `1/keep` per element) `forward` multiplies a tensor of `n`
/// values on `device` by, on Flex; also for ops that apply dropout inside themselves
/// (the CPU kernel of causal attention). `None` when the layer is inactive or not on Flex.
pub fn flex_mask(layer: &Dropout, n: usize, device: &Device) -> Option<Vec<f32>> {
    if !active_on(layer, device) || !is_flex(device) {
        return None;
    }
    let seed = draw_seed(&device.clone().without_autodiff());
    Some(scaled_keep_mask(n, 1.0 - layer.prob, seed))
}

thread_local! {
    /// The next state of this thread's mask seeds, once [`seed_this_thread`] set it.
    static THREAD_STREAM: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Seeds the dropout masks this thread draws on the CPU backend from now on. Burn keeps one random
/// stream per process (`device.seed` sets it for every thread), so ranks that are threads of one
/// process (`--devices`) would draw from it in whatever order they reach it: no run would repeat.
pub fn seed_this_thread(seed: u64) {
    THREAD_STREAM.set(Some(seed));
}

/// A 64-bit seed for one mask: the next of this thread's stream, else from the device's random
/// stream (two uniform floats' bits, mixed).
fn draw_seed(device: &Device) -> u64 {
    if let Some(state) = THREAD_STREAM.get() {
        THREAD_STREAM.set(Some(state.wrapping_add(0x9E37_79B9_7F4A_7C15)));
        return splitmix64(state);
    }
    let draws = Tensor::<1>::random([2], burn::tensor::Distribution::Default, device).into_data();
    let bits: Vec<u64> = draws.iter::<f32>().map(|v| u64::from(v.to_bits())).collect();
    splitmix64(bits.iter().fold(0x9E37_79B9_7F4A_7C15, |acc, b| splitmix64(acc ^ b)))
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    #[test]
    fn dropout_zeroes_scales_and_passes_the_gradient_through_the_same_mask() {
        use burn::nn::DropoutConfig;
        let device = Device::flex().autodiff();
        device.seed(5);
        let layer = DropoutConfig::new(0.25).init();
        let x = Tensor::<2>::ones([64, 300], &device).require_grad();
        let y = forward(&layer, x.clone());
        let grads = y.clone().sum().backward();
        let out: Vec<f32> = y.into_data().try_to_vec::<f32>().unwrap();
        let grad: Vec<f32> = x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(out, grad, "d(sum(x·mask))/dx is the mask itself");
        let kept = out.iter().filter(|&&v| v != 0.0).count() as f64 / out.len() as f64;
        assert!((kept - 0.75).abs() < 0.03, "{kept}");
        assert!(out.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));

        // Reproducible from the device seed; a second call draws a new mask.
        device.seed(5);
        let again: Vec<f32> = forward(&layer, Tensor::<2>::ones([64, 300], &device)).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(out, again);
        let next: Vec<f32> = forward(&layer, Tensor::<2>::ones([64, 300], &device)).into_data().try_to_vec::<f32>().unwrap();
        assert_ne!(out, next);

        // A thread's own stream: the same masks whatever another thread draws or seeds meanwhile.
        let masks = |seed: u64| {
            let device = device.clone();
            std::thread::spawn(move || {
                seed_this_thread(seed);
                (0..3).map(|_| forward(&DropoutConfig::new(0.25).init(), Tensor::<2>::ones([8, 50], &device)).into_data().try_to_vec::<f32>().unwrap()).collect::<Vec<_>>()
            })
        };
        let (a, b) = (masks(7), masks(7));
        device.seed(99);
        let _ = forward(&layer, Tensor::<2>::ones([64, 300], &device));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(a, b);
        assert!(a[0] != a[1] && a[1] != a[2], "each call draws a new mask");
        assert_ne!(a, masks(8).join().unwrap());

        // Inactive: no autodiff, or evaluation mode, or p = 0.
        let plain = Tensor::<2>::ones([4, 4], &Device::flex());
        assert_eq!(forward(&layer, plain.clone()).into_data(), plain.into_data());
    }
}
