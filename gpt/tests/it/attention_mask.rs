//! The padding mask of attention on the backend under test (`LLMFS_TEST_DEVICE`): the model's
//! attention (`ops::attention::causal`) against a plain-Rust product, for a prefill with right
//! padding and a cached step with left padding. And on LibTorch, why the models do not hand the
//! mask to Burn's fused `attention` there: burn-tch 0.22.1 (without autodiff) passes it straight to
//! torch's `scaled_dot_product_attention`, whose boolean mask means "may attend", the opposite of
//! Burn's "masked out".

use crate::common::*;
use gpt::burn::nn::DropoutConfig;
use gpt::burn::prelude::*;
use gpt::burn::tensor::module::attention;
use gpt::burn::tensor::ops::AttentionModuleOptions;

const B: usize = 2;
const H: usize = 2;
const D: usize = 8;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `softmax(q·kᵀ/√d)·v` over the keys `blocked` leaves (`blocked[b][i][j]`: query `i` of row `b`
/// may not see key `j`), `q` `[B, H, T, D]`, `k`/`v` `[B, H, S, D]`, all row-major.
fn reference(q: &[f32], k: &[f32], v: &[f32], t: usize, s: usize, blocked: impl Fn(usize, usize, usize) -> bool) -> Vec<f32> {
    let mut out = vec![0.0f32; B * H * t * D];
    for b in 0..B {
        for h in 0..H {
            for i in 0..t {
                let qi = &q[((b * H + h) * t + i) * D..][..D];
                let scores: Vec<f64> = (0..s)
                    .map(|j| {
                        if blocked(b, i, j) {
                            return f64::NEG_INFINITY;
                        }
                        let kj = &k[((b * H + h) * s + j) * D..][..D];
                        qi.iter().zip(kj).map(|(a, c)| (*a as f64) * (*c as f64)).sum::<f64>() / (D as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for (j, w) in weights.iter().enumerate() {
                    let vj = &v[((b * H + h) * s + j) * D..][..D];
                    for (o, x) in out[((b * H + h) * t + i) * D..][..D].iter_mut().zip(vj) {
                        *o += (w / total * *x as f64) as f32;
                    }
                }
            }
        }
    }
    out
}

fn tensor(values: &[f32], t: usize, device: &Device) -> Tensor<4> {
    Tensor::<1>::from_floats(values, device).reshape([B, H, t, D])
}

/// The `[B, 1, T, S]` mask of `blocked(b, i, j)`.
fn mask(t: usize, s: usize, blocked: impl Fn(usize, usize, usize) -> bool, device: &Device) -> Tensor<4, Bool> {
    let bits: Vec<bool> = (0..B).flat_map(|b| (0..t).flat_map(move |i| (0..s).map(move |j| (b, i, j)))).map(|(b, i, j)| blocked(b, i, j)).collect();
    Tensor::<1, Bool>::from_data(TensorData::new(bits, [B * t * s]), device).reshape([B, 1, t, s])
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn the_padding_mask_hides_the_padded_keys() {
    let device = device();
    let no_dropout = DropoutConfig::new(0.0).init();
    let tolerance = 1e-5 * tolerance_scale() as f32;
    // A prefill, T = S = 4, row 0 padded on the right (its key 3 is padding).
    let (t, s) = (4, 4);
    let padding = |b: usize, _i: usize, j: usize| b == 0 && j == 3;
    let (q, k, v) = (values(B * H * t * D, 1), values(B * H * s * D, 2), values(B * H * s * D, 3));
    let got = gpt::ops::attention::causal(tensor(&q, t, &device), tensor(&k, s, &device), tensor(&v, s, &device), Some(mask(t, s, padding, &device)), &no_dropout);
    let got = got.into_data().try_to_vec::<f32>().unwrap();
    let want = reference(&q, &k, &v, t, s, |b, i, j| padding(b, i, j) || j > i);
    assert!(max_diff(&got, &want) < tolerance, "prefill: {} off", max_diff(&got, &want));

    // A cached step: T = 2 new queries at positions 3 and 4 over S = 5 keys, row 1 padded on
    // the left (its key 0 is padding).
    let (t, s) = (2, 5);
    let padding = |b: usize, _i: usize, j: usize| b == 1 && j == 0;
    let (q, k, v) = (values(B * H * t * D, 4), values(B * H * s * D, 5), values(B * H * s * D, 6));
    let got = gpt::ops::attention::causal(tensor(&q, t, &device), tensor(&k, s, &device), tensor(&v, s, &device), Some(mask(t, s, padding, &device)), &no_dropout);
    let got = got.into_data().try_to_vec::<f32>().unwrap();
    let want = reference(&q, &k, &v, t, s, |b, i, j| padding(b, i, j) || j > s - t + i);
    assert!(max_diff(&got, &want) < tolerance, "cached step: {} off", max_diff(&got, &want));
}

/// On LibTorch only: Burn's fused attention reads the mask inverted (burn-tch 0.22.1). When this
/// fails, Burn has fixed it, and the fused path of `ops::attention::causal` (Flex only today) may
/// be opened to LibTorch.
#[test]
fn burn_tch_reads_the_fused_attention_mask_inverted() {
    if !device_spec().is_tch() {
        return;
    }
    let device = device();
    assert!(gpt::backend::is_libtorch(&device), "{device:?}");
    // No causal part, and every query keeps a key either way round.
    let (t, s) = (3, 4);
    let blocked = |b: usize, _i: usize, j: usize| if b == 0 { j == 1 } else { j == 0 || j == 3 };
    let (q, k, v) = (values(B * H * t * D, 7), values(B * H * s * D, 8), values(B * H * s * D, 9));
    let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
    let fused = attention(tensor(&q, t, &device), tensor(&k, s, &device), tensor(&v, s, &device), Some(mask(t, s, blocked, &device).expand([B, H, t, s])), None, options);
    let fused = fused.into_data().try_to_vec::<f32>().unwrap();
    let as_burn_means = reference(&q, &k, &v, t, s, blocked);
    let inverted = reference(&q, &k, &v, t, s, |b, i, j| !blocked(b, i, j));
    assert!(max_diff(&fused, &inverted) < 1e-5, "burn-tch's fused attention no longer reads the mask inverted");
    assert!(max_diff(&fused, &as_burn_means) > 1e-2);
}
