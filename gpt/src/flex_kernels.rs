//! Matrix products for decoding on the Flex (CPU) backend, as a Burn backend extension.
//!
//! Generating one token multiplies a handful of rows (one per sequence) by every weight matrix:
//! the time is spent streaming ~500 MB of GPT-2 weights from memory, not in arithmetic. The general
//! GEMM Flex uses is built for large products and reaches about two thirds of the memory bandwidth
//! there (and stays on one thread below ~7 M multiply-adds). These kernels read each weight once,
//! in order, split across rayon's threads. Everything else (training, prefill of long prompts,
//! other backends) goes through Burn's own ops.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::module::{LoraAdapter, Param};
use burn::nn::{Gelu, Linear};
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

/// Up to this many rows the streaming kernels beat Flex's GEMM (measured on a 2-core AVX2 EPYC:
/// even at 16 rows they are ~2× faster; past that, GEMM's register blocking wins).
pub const MAX_ROWS: usize = 16;

/// Parallel tasks get at least this many weight rows (fewer is not worth a thread hop).
const ROWS_PER_TASK_MIN: usize = 64;
/// Vocabulary rows per parallel task of the output head.
const VOCAB_ROWS_PER_TASK: usize = 2048;

/// The contiguous f32 values of a plain (non-autodiff) Flex tensor, or `None`.
fn flex_f32<const D: usize>(tensor: &Tensor<D>) -> Option<FlexTensor> {
    if tensor.device().is_autodiff() || tensor.dtype() != DType::F32 {
        return None;
    }
    let flex = tensor.clone().try_into_primitive::<Flex>().ok()?;
    flex.layout().contiguous_offsets().map(|_| flex)
}

fn values(flex: &FlexTensor) -> &[f32] {
    let (start, end) = flex.layout().contiguous_offsets().expect("checked contiguous");
    &flex.storage::<f32>()[start..end]
}

/// `x @ W + b` for a Linear layer (`x`: `[B, T, d_in]`): the streaming kernel when `B * T` is at
/// most [`MAX_ROWS`] on plain Flex tensors, otherwise one 2-D matrix product over all `B·T` rows
/// (Burn's 3-D `Linear::forward` runs one product per batch row, packing the weight each time:
/// ~20 % slower for GPT-2 shapes on Flex), the fused `flex_training::linear` on Flex.
///
/// A LoRA weight (Burn's `LoraAdapter`, see `crate::lora`) is applied as `x·W + s·(x·A)·B`
/// rather than as `x·(W + s·A·B)`, which is what `Param::val` composes: the frozen `W` then needs
/// no gradient, where the composed weight's backward computes a full `[d_in, d_out]` gradient
/// only to project it onto A and B.
pub fn linear(layer: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, t, d_in] = x.dims();
    let bias = layer.bias.as_ref().map(|b| b.val());
    if b * t > MAX_ROWS {
        let x = x.reshape([b * t, d_in]);
        let y = match lora_adapter(&layer.weight) {
            Some((base, adapter)) => {
                let low_rank = x.clone().matmul(adapter.a.val()).mul_scalar(adapter.scale).matmul(adapter.b.val());
                dense(x, base, bias) + low_rank
            }
            None => dense(x, layer.weight.val(), bias),
        };
        let d_out = y.dims()[1];
        return y.reshape([b, t, d_out]);
    }
    let weight = layer.weight.val();
    let d_out = weight.dims()[1];
    let bias_flex = bias.as_ref().map(flex_f32);
    let (Some((xf, wf)), false) = (flex_f32(&x).zip(flex_f32(&weight)), matches!(bias_flex, Some(None))) else {
        return dense(x.reshape([b * t, d_in]), weight, bias).reshape([b, t, d_out]);
    };
    let bias_flex = bias_flex.flatten();
    let out = rows_times_matrix(values(&xf), values(&wf), bias_flex.as_ref().map(values), d_in, d_out);
    Tensor::from_data(TensorData::new(out, [b, t, d_out]), &x.device())
}

/// `x·W + b` (`x`: `[N, d_in]`): the fused product on Flex, Burn's ops elsewhere.
fn dense(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    crate::flex_training::linear(&x, &weight, bias.as_ref()).unwrap_or_else(|| {
        let y = x.matmul(weight);
        match bias {
            Some(bias) => y + bias.unsqueeze(),
            None => y,
        }
    })
}

/// The frozen base weight and the adapter of a LoRA weight whose factors have the base's dtype
/// (otherwise `Param::val`'s composition, which casts, is used).
fn lora_adapter(weight: &Param<Tensor<2>>) -> Option<(Tensor<2>, &LoraAdapter)> {
    let adapter = weight.reparameterization::<LoraAdapter>()?;
    let base = weight.base();
    (base.dtype() == adapter.a.val().dtype()).then_some((base, adapter))
}

/// GPT-2's `gelu_new`: on Flex tensors one fused pass (`flex_training::gelu_tanh`, with its own
/// backward when training), elsewhere `gelu_by_sigmoid`; the layer's own `forward` for exact GELU.
pub fn gelu(act: &Gelu, x: Tensor<3>) -> Tensor<3> {
    if !act.approximate {
        return act.forward(x);
    }
    crate::flex_training::gelu_tanh(x).unwrap_or_else(gelu_by_sigmoid)
}

/// The same GELU from Burn ops that autodiff differentiates: `x · sigmoid(2u)` needs one fused
/// sigmoid (with its own backward) where `gelu_approximate` spends a `powf` and a `tanh` (on the
/// CPU a third of a GPT-2 block's forward time).
pub fn gelu_by_sigmoid(x: Tensor<3>) -> Tensor<3> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4;
    let inner = x.clone().square().mul_scalar(0.044715).add_scalar(1.0);
    let z = (x.clone() * inner).mul_scalar(TWO_SQRT_2_OVER_PI);
    x * burn::tensor::activation::sigmoid(z)
}

/// `e^x` to ~1 ulp (Cephes' `expf`: Cody-Waite range reduction and a degree-6 polynomial), in
/// plain arithmetic (rounding by the 1.5·2²³ trick, the power of two built from bits) so that
/// loops over it vectorise on every target. Inputs are clamped to [-87, 88].
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let k = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5.000_000_1e-1;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// `x @ E^T` for the output head tied to the embedding `E` (`x`: `[rows, C]`, `E`: `[V, C]`).
pub fn tied_head(x: Tensor<2>, embedding: Tensor<2>) -> Tensor<2> {
    let [rows, c] = x.dims();
    let vocab = embedding.dims()[0];
    if rows <= MAX_ROWS
        && let (Some(xf), Some(ef)) = (flex_f32(&x), flex_f32(&embedding))
    {
        let out = rows_times_transposed(values(&xf), values(&ef), c, vocab);
        return Tensor::from_data(TensorData::new(out, [rows, vocab]), &x.device());
    }
    crate::flex_training::times_transposed(&x, &embedding).unwrap_or_else(|| x.matmul(embedding.transpose()))
}

/// `(0..tasks).map(f)` on rayon's pool, or on the calling thread when the pool has one thread:
/// handing each product to a sleeping worker and back costs tens of microseconds, which adds up
/// over the ~50 products of a decoding step.
fn par_map<T: Send>(tasks: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    if tasks <= 1 || rayon::current_num_threads() <= 1 {
        (0..tasks).map(f).collect()
    } else {
        (0..tasks).into_par_iter().map(f).collect()
    }
}

/// `out[m, :] = x[m, :] @ w + bias` with `w` `[k, n]` row-major. The weight rows are split into
/// one contiguous range per thread, so that every thread streams memory strictly in order (the
/// hardware prefetcher's best case); the per-thread partial sums are added at the end.
fn rows_times_matrix(x: &[f32], w: &[f32], bias: Option<&[f32]>, k: usize, n: usize) -> Vec<f32> {
    let m = x.len() / k;
    let tasks = rayon::current_num_threads().clamp(1, k.div_ceil(ROWS_PER_TASK_MIN));
    let rows_per_task = k.div_ceil(tasks).next_multiple_of(4);
    let partials: Vec<Vec<f32>> = par_map(k.div_ceil(rows_per_task), |task| {
        let (k0, k1) = (task * rows_per_task, ((task + 1) * rows_per_task).min(k));
        let mut acc = vec![0.0f32; m * n];
        accumulate_rows(x, w, &mut acc, k, n, k0, k1);
        acc
    });
    let sum = partials.into_iter().reduce(|mut a, b| {
        a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
        a
    });
    let mut out = sum.unwrap_or_else(|| vec![0.0; m * n]);
    if let Some(bias) = bias {
        for row in out.chunks_exact_mut(n) {
            row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
        }
    }
    out
}

fn accumulate_rows(x: &[f32], w: &[f32], acc: &mut [f32], k: usize, n: usize, k0: usize, k1: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { accumulate_rows_avx2(x, w, acc, k, n, k0, k1) };
    }
    accumulate_rows_portable(x, w, acc, k, n, k0, k1)
}

/// The same with explicit 256-bit FMAs, on eight weight rows at a time taken from eight
/// segments of the range far apart: one core keeps more cache-line loads in flight on eight
/// distant streams than on one (on a 2-core EPYC: ~15 vs ~12 GB/s).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_rows_avx2(x: &[f32], w: &[f32], acc: &mut [f32], k: usize, n: usize, k0: usize, k1: usize) {
    use std::arch::x86_64::*;
    const STREAMS: usize = 8;
    // 8 rows × 256 floats = 8 KB of weights, plus 1 KB of accumulators per batch row: L1.
    const COLUMNS: usize = 256;
    let segment = (k1 - k0) / STREAMS;
    let vec_end = n / 8 * 8;
    for i in k0..k0 + segment {
        let row_index: [usize; STREAMS] = std::array::from_fn(|s| i + s * segment);
        let rows: [&[f32]; STREAMS] = std::array::from_fn(|s| &w[row_index[s] * n..(row_index[s] + 1) * n]);
        // Columns in blocks of COLUMNS: with several batch rows, the eight weight-row pieces are
        // read from memory for the first batch row and from L1 for the others (whole rows, 72 KB
        // for n = 2304, would only fit L2).
        for j0 in (0..vec_end).step_by(COLUMNS) {
            let j1 = (j0 + COLUMNS).min(vec_end);
            for (mi, out) in acc.chunks_exact_mut(n).enumerate() {
                let xs: [f32; STREAMS] = std::array::from_fn(|s| x[mi * k + row_index[s]]);
                // SAFETY: every access covers j..j + 8 with j + 8 <= j1 <= vec_end <= n, inside
                // `out` and each of the rows (all of length n).
                unsafe {
                    let a: [__m256; STREAMS] = std::array::from_fn(|s| _mm256_set1_ps(xs[s]));
                    for j in (j0..j1).step_by(8) {
                        let mut y = _mm256_loadu_ps(out.as_ptr().add(j));
                        for (row, ar) in rows.iter().zip(&a) {
                            y = _mm256_fmadd_ps(*ar, _mm256_loadu_ps(row.as_ptr().add(j)), y);
                        }
                        _mm256_storeu_ps(out.as_mut_ptr().add(j), y);
                    }
                }
            }
        }
        for (mi, out) in acc.chunks_exact_mut(n).enumerate() {
            let xs: [f32; STREAMS] = std::array::from_fn(|s| x[mi * k + row_index[s]]);
            for j in vec_end..n {
                out[j] += (0..STREAMS).map(|s| xs[s] * rows[s][j]).sum::<f32>();
            }
        }
    }
    accumulate_rows_portable(x, w, acc, k, n, k0 + STREAMS * segment, k1)
}

/// `acc[m, :] += Σ_{i in k0..k1} x[m, i] · w[i, :]`, four weight rows at a time so that each pass
/// over `acc` (in L1/L2) does four multiply-adds per element. Plain loops the compiler vectorises.
#[inline(always)]
fn accumulate_rows_portable(x: &[f32], w: &[f32], acc: &mut [f32], k: usize, n: usize, k0: usize, k1: usize) {
    let row = |i: usize| &w[i * n..(i + 1) * n];
    let mut i = k0;
    while i + 4 <= k1 {
        let (r0, r1, r2, r3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
        for (mi, out) in acc.chunks_exact_mut(n).enumerate() {
            let xs = &x[mi * k + i..mi * k + i + 4];
            let (a0, a1, a2, a3) = (xs[0], xs[1], xs[2], xs[3]);
            for j in 0..n {
                out[j] += a0 * r0[j] + a1 * r1[j] + a2 * r2[j] + a3 * r3[j];
            }
        }
        i += 4;
    }
    for i in i..k1 {
        let r = row(i);
        for (mi, out) in acc.chunks_exact_mut(n).enumerate() {
            let a = x[mi * k + i];
            out.iter_mut().zip(r).for_each(|(y, &wv)| *y += a * wv);
        }
    }
}

/// `out[m, v] = x[m, :] · e[v, :]` with `e` `[vocab, c]` row-major: one pass over `e`.
fn rows_times_transposed(x: &[f32], e: &[f32], c: usize, vocab: usize) -> Vec<f32> {
    let m = x.len() / c;
    let blocks: Vec<Vec<f32>> = par_map(vocab.div_ceil(VOCAB_ROWS_PER_TASK), |block| {
        let v0 = block * VOCAB_ROWS_PER_TASK;
        let rows = VOCAB_ROWS_PER_TASK.min(vocab - v0);
        let mut out = vec![0.0f32; rows * m];
        dot_rows(x, &e[v0 * c..(v0 + rows) * c], &mut out, c);
        out
    });
    // blocks hold [v, m]; the result is [m, vocab].
    let mut out = vec![0.0f32; m * vocab];
    for (block, values) in blocks.iter().enumerate() {
        let v0 = block * VOCAB_ROWS_PER_TASK;
        for (dv, per_row) in values.chunks_exact(m).enumerate() {
            for (mi, &value) in per_row.iter().enumerate() {
                out[mi * vocab + v0 + dv] = value;
            }
        }
    }
    out
}

fn dot_rows(x: &[f32], e: &[f32], out: &mut [f32], c: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { dot_rows_avx2(x, e, out, c) };
    }
    dot_rows_portable(x, e, out, c)
}

/// The same with explicit 256-bit FMAs (the compiler vectorises the portable loop at 128 bits
/// only), on four rows of `e` at a time taken from four segments far apart: interleaving four
/// distant memory streams keeps more loads in flight (~15 vs ~11 GB/s on one core).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_rows_avx2(x: &[f32], e: &[f32], out: &mut [f32], c: usize) {
    const STREAMS: usize = 4;
    let m = x.len() / c;
    let segment = e.len() / c / STREAMS;
    for i in 0..segment {
        let row_index: [usize; STREAMS] = std::array::from_fn(|s| i + s * segment);
        let rows: [&[f32]; STREAMS] = std::array::from_fn(|s| &e[row_index[s] * c..(row_index[s] + 1) * c]);
        // Two rows of x at a time (8 accumulators): each loaded piece of the vocabulary rows
        // serves both, 6 loads per 8 multiply-adds instead of 5 per 4; an odd last row alone.
        // The sum of every dot product runs in the same order either way.
        let mut mi = 0;
        while mi < m {
            let x_row = |p: usize| &x[(mi + p) * c..][..c];
            let store = |p: usize, s: usize, v: f32| out[row_index[s] * m + mi + p] = v;
            // SAFETY: the CPU supports the features (this function's own); every row has length c.
            if mi + 2 <= m {
                unsafe { dot_block::<2, STREAMS>([x_row(0), x_row(1)], &rows, store) };
                mi += 2;
            } else {
                unsafe { dot_block::<1, STREAMS>([x_row(0)], &rows, store) };
                mi += 1;
            }
        }
    }
    // The rows left over when their number is not a multiple of the streams.
    let done = STREAMS * segment;
    dot_rows_portable(x, &e[done * c..], &mut out[done * m..], c);
}

/// The dot products of `R` rows of x with `S` vocabulary rows (all of one length), each handed to
/// `store(x row, vocabulary row, value)`: 8-lane partial sums, then the lanes in a fixed order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_block<const R: usize, const S: usize>(xs: [&[f32]; R], rows: &[&[f32]; S], mut store: impl FnMut(usize, usize, f32)) {
    use std::arch::x86_64::*;
    let c = xs[0].len();
    let vec_end = c / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); S]; R];
    for b in (0..vec_end).step_by(8) {
        // SAFETY: every load covers b..b + 8 with b + 8 <= vec_end <= c, inside each row.
        unsafe {
            let xv: [__m256; R] = std::array::from_fn(|p| _mm256_loadu_ps(xs[p].as_ptr().add(b)));
            for (s, row) in rows.iter().enumerate() {
                let ev = _mm256_loadu_ps(row.as_ptr().add(b));
                for p in 0..R {
                    acc[p][s] = _mm256_fmadd_ps(xv[p], ev, acc[p][s]);
                }
            }
        }
    }
    for (p, per_row) in acc.iter().enumerate() {
        for (s, sum) in per_row.iter().enumerate() {
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *sum) };
            let tail: f32 = xs[p][vec_end..].iter().zip(&rows[s][vec_end..]).map(|(a, b)| a * b).sum();
            let total = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
            store(p, s, total + tail);
        }
    }
}

/// For every row of `e`, its dot product with every row of `x` (`out`: `[rows of e, rows of x]`).
/// Independent partial sums (4 × 8 lanes) let the compiler use vector registers and overlap
/// loads, without reordering a floating-point reduction it may not reorder.
#[inline(always)]
fn dot_rows_portable(x: &[f32], e: &[f32], out: &mut [f32], c: usize) {
    let m = x.len() / c;
    for (row, dots) in e.chunks_exact(c).zip(out.chunks_exact_mut(m)) {
        for (mi, dot) in dots.iter_mut().enumerate() {
            let xs = &x[mi * c..(mi + 1) * c];
            let mut lanes = [[0.0f32; 8]; 4];
            let (x_blocks, e_blocks) = (xs.chunks_exact(32), row.chunks_exact(32));
            let tail: f32 = x_blocks.remainder().iter().zip(e_blocks.remainder()).map(|(a, b)| a * b).sum();
            for (a, b) in x_blocks.zip(e_blocks) {
                for (part, lane) in lanes.iter_mut().enumerate() {
                    for l in 0..8 {
                        lane[l] += a[part * 8 + l] * b[part * 8 + l];
                    }
                }
            }
            // A short reduction tree: a sequential 32-term sum would be a long dependency chain.
            let v: [f32; 8] = std::array::from_fn(|l| (lanes[0][l] + lanes[1][l]) + (lanes[2][l] + lanes[3][l]));
            *dot = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])) + tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;

    use super::*;

    fn random(shape: [usize; 2], seed: u64) -> Tensor<2> {
        let device = Device::flex();
        device.seed(seed);
        Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &device)
    }

    fn max_rel_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
        let (a, b): (Vec<f32>, Vec<f32>) = (a.into_data().try_into_vec().unwrap(), b.into_data().try_into_vec().unwrap());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
    }

    #[test]
    fn streaming_linear_matches_burn_for_every_row_count_and_odd_sizes() {
        for (d_in, d_out) in [(64, 192), (67, 300), (768, 3072), (3, 5)] {
            for rows in [1, 2, 3, 7, MAX_ROWS] {
                let layer = Linear {
                    weight: Param::from_tensor(random([d_in, d_out], 1)),
                    bias: Some(Param::from_tensor(random([1, d_out], 2).reshape([d_out]))),
                };
                let x = random([rows, d_in], 3);
                let fast = linear(&layer, x.clone().reshape([1, rows, d_in])).reshape([rows, d_out]);
                let reference = x.matmul(layer.weight.val()) + layer.bias.as_ref().unwrap().val().unsqueeze();
                let diff = max_rel_diff(fast, reference);
                assert!(diff < 1e-5, "{d_in}x{d_out}, {rows} rows: relative diff {diff}");
            }
        }
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
    fn exp_approx_is_accurate_to_a_few_ulp() {
        let mut worst = 0.0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let exact = (x as f64).exp();
            worst = worst.max(((exp_approx(x) as f64 - exact) / exact).abs());
        }
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(exp_approx(-1000.0), exp_approx(-87.0));
        assert!(exp_approx(1000.0).is_finite());
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
    fn streaming_head_matches_burn() {
        for (c, vocab) in [(64, 50257), (13, 4099)] {
            for rows in [1, 2, 3, 7, MAX_ROWS] {
                let x = random([rows, c], 4);
                let e = random([vocab, c], 5);
                let diff = max_rel_diff(tied_head(x.clone(), e.clone()), x.matmul(e.transpose()));
                assert!(diff < 1e-5, "c {c}, vocab {vocab}, {rows} rows: relative diff {diff}");
            }
        }
    }

    /// A LoRA layer's output and its factors' gradients, applied as `x·W + s·(x·A)·B`, against
    /// the composed weight `W + s·A·B` (what `Param::val` gives); the frozen base gets no gradient.
    #[test]
    fn lora_layers_match_the_composed_weight_with_gradients() {
        use burn::module::{Lora, Module};

        let ad = Device::flex().autodiff();
        let to_ad = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &ad);
        let bias = Tensor::<1>::from_data(random([1, 6], 4).reshape([6]).into_data(), &ad);
        let layer = Linear { weight: Param::from_tensor(to_ad(random([8, 6], 3))), bias: Some(Param::from_tensor(bias)) };
        let layer = layer.apply_lora(Lora::new(2, 4.0));
        // B starts at zero: give both factors values so that every gradient is non-trivial.
        let mut factors = crate::lora::AdapterInit { seed: 10, std: 0.5 };
        let layer = crate::weights::fill_params_matching(layer, &mut factors, |name| name.contains("lora")).unwrap();
        let x = Tensor::<3>::from_data(random([MAX_ROWS + 4, 8], 5).reshape([1, MAX_ROWS + 4, 8]).into_data(), &ad).require_grad();
        let weights = Tensor::<3>::from_data(random([MAX_ROWS + 4, 6], 6).reshape([1, MAX_ROWS + 4, 6]).into_data(), &ad);

        let ours = linear(&layer, x.clone());
        let composed = x.clone().matmul(layer.weight.val().unsqueeze()) + layer.bias.as_ref().unwrap().val().unsqueeze();
        let adapter = layer.weight.reparameterization::<LoraAdapter>().expect("a LoRA weight");
        let grads = (ours.clone() * weights.clone()).sum().backward();
        let reference = (composed.clone() * weights).sum().backward();
        let plain = |t: Tensor<3>| t.reshape([MAX_ROWS + 4, 6]);
        assert!(max_rel_diff(plain(ours), plain(composed)) < 1e-5);
        for (name, factor) in [("A", &adapter.a), ("B", &adapter.b)] {
            let (g, r) = (factor.val().grad(&grads).unwrap(), factor.val().grad(&reference).unwrap());
            assert!(max_rel_diff(g, r) < 1e-5, "d{name}");
        }
        let (g, r) = (x.grad(&grads).unwrap(), x.grad(&reference).unwrap());
        assert!(max_rel_diff(g.reshape([MAX_ROWS + 4, 8]), r.reshape([MAX_ROWS + 4, 8])) < 1e-5, "dx");
        assert!(layer.weight.base().grad(&grads).is_none(), "the frozen base has no gradient");
    }

    #[test]
    fn large_batches_and_autodiff_tensors_take_burns_path() {
        let layer = Linear { weight: Param::from_tensor(random([8, 4], 1)), bias: None };
        let x = random([MAX_ROWS + 1, 8], 2);
        let out = linear(&layer, x.clone().reshape([1, MAX_ROWS + 1, 8])).reshape([MAX_ROWS + 1, 4]);
        assert!(max_rel_diff(out, x.clone().matmul(layer.weight.val())) < 1e-6);
        let ad = Device::flex().autodiff();
        let xa = Tensor::<3>::from_data(x.slice(s![0..2, ..]).reshape([1, 2, 8]).into_data(), &ad).require_grad();
        let layer_ad = Linear { weight: Param::from_tensor(random([8, 4], 1).autodiff()), bias: None };
        let grads = linear(&layer_ad, xa.clone()).sum().backward();
        assert!(xa.grad(&grads).is_some(), "the autodiff path keeps gradients");
    }
}
