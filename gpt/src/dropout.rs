//! Dropout, with a fast mask on the CPU backend.
//!
//! Burn's `Dropout::forward` draws one Bernoulli sample per element through its general random
//! distribution code (a ChaCha generator and a float comparison per element, on one thread), then
//! multiplies twice (by the mask, then by `1/keep`). GPT-2 training drops out the attention weights
//! (`B·H·T·T`) and three activations per block: at B4×T256 that is 57 M samples a step, ~5 % of a
//! 124M training step on a 2-core CPU. Here the mask is drawn in parallel with a small counter-based
//! generator seeded from the device's own random stream (so `device.seed(..)` still makes runs
//! reproducible), already scaled (`0` or `1/keep`), and applied with one multiplication, which is
//! also what the backward pass multiplies the gradient by. Other backends keep Burn's dropout,
//! which draws on the device.

use burn::nn::Dropout;
use burn::prelude::*;

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
    #[cfg(feature = "flex")]
    if let Some(mask) = flex_mask(layer, x.shape().num_elements(), &x.device()) {
        let mask = Tensor::<D>::from_data(TensorData::new(mask, x.shape()), &x.device());
        return x * mask;
    }
    layer.forward(x)
}

/// The scaled keep-mask (`0` or `1/keep` per element) `forward` multiplies a tensor of `n`
/// values on `device` by, on Flex; also for ops that apply dropout inside themselves
/// (`flex_training::causal_attention`). `None` when the layer is inactive or not on Flex.
#[cfg(feature = "flex")]
pub fn flex_mask(layer: &Dropout, n: usize, device: &Device) -> Option<Vec<f32>> {
    if !active_on(layer, device) || !crate::device::is_flex(device) {
        return None;
    }
    let seed = draw_seed(&device.clone().without_autodiff());
    Some(scaled_keep_mask(n, 1.0 - layer.prob, seed))
}

/// A 64-bit seed from the device's random stream: two uniform floats' bits, mixed.
#[cfg(feature = "flex")]
fn draw_seed(device: &Device) -> u64 {
    let draws = Tensor::<1>::random([2], burn::tensor::Distribution::Default, device).into_data();
    let bits: Vec<u64> = draws.iter::<f32>().map(|v| u64::from(v.to_bits())).collect();
    splitmix64(bits.iter().fold(0x9E37_79B9_7F4A_7C15, |acc, b| splitmix64(acc ^ b)))
}

/// Elements per parallel task; each task's generator is seeded from (seed, task index), so the mask
/// does not depend on how many threads draw it.
const CHUNK: usize = 1 << 14;

/// `n` values, each `1 / keep` with probability `keep` and `0` otherwise.
pub fn scaled_keep_mask(n: usize, keep: f64, seed: u64) -> Vec<f32> {
    use rayon::prelude::*;
    let scale = (1.0 / keep) as f32;
    // P(u32 < threshold) = threshold / 2^32 = keep (to 2^-32).
    let threshold = (keep * 4_294_967_296.0).round().min(u32::MAX as f64) as u64;
    let mut mask = vec![0f32; n];
    mask.par_chunks_mut(CHUNK).enumerate().for_each(|(task, chunk)| {
        let mut state = splitmix64(seed ^ splitmix64(task as u64));
        for pair in chunk.chunks_mut(2) {
            // Two 32-bit draws per 64-bit output.
            let r = wyrand(&mut state);
            for (value, draw) in pair.iter_mut().zip([r & 0xFFFF_FFFF, r >> 32]) {
                *value = if draw < threshold { scale } else { 0.0 };
            }
        }
    });
    mask
}

/// SplitMix64's finaliser: a bijective mix of 64 bits (seeds the per-task generators).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// wyrand (Wang Yi's generator): one 64-bit multiply per output, passes BigCrush and PractRand.
fn wyrand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0xA076_1D64_78BD_642F);
    let t = u128::from(*state) * u128::from(*state ^ 0xE703_7ED1_A0B4_28DB);
    ((t >> 64) ^ t) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_keeps_the_right_fraction_scaled() {
        for keep in [0.9, 0.5, 0.25] {
            let n = 1_000_003; // odd, and not a multiple of the chunk size
            let mask = scaled_keep_mask(n, keep, 7);
            let scale = (1.0 / keep) as f32;
            assert!(mask.iter().all(|&v| v == 0.0 || v == scale));
            let kept = mask.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
            // Binomial standard deviation sqrt(keep(1-keep)/n) ≤ 5e-4: 6 sigma is 3e-3.
            assert!((kept - keep).abs() < 3e-3, "keep {keep}: kept {kept}");
            // The expectation is preserved: mean of the mask ≈ 1.
            let mean = mask.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            assert!((mean - 1.0).abs() < 0.02, "keep {keep}: mean {mean}");
        }
    }

    #[test]
    fn the_mask_depends_on_the_seed_only() {
        let a = scaled_keep_mask(100_000, 0.9, 1);
        assert_eq!(a, scaled_keep_mask(100_000, 0.9, 1));
        let b = scaled_keep_mask(100_000, 0.9, 2);
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        // Two independent masks differ where exactly one drops: 2·0.9·0.1 = 18 %.
        assert!((15_000..21_000).contains(&differ), "{differ}");
        // Neighbouring chunks are not copies of each other.
        assert_ne!(a[..CHUNK], a[CHUNK..2 * CHUNK]);
    }

    #[cfg(feature = "flex")]
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

        // Inactive: no autodiff, or evaluation mode, or p = 0.
        let plain = Tensor::<2>::ones([4, 4], &Device::flex());
        assert_eq!(forward(&layer, plain.clone()).into_data(), plain.into_data());
    }
}
