//! Matrix products for decoding on the Flex (CPU) backend.
//!
//! Generating one token multiplies a handful of rows (one per sequence) by every weight matrix:
//! the time is spent streaming ~500 MB of GPT-2 weights from memory, not in arithmetic. The general
//! GEMM Flex uses is built for large products and reaches about two thirds of the memory bandwidth
//! there (and stays on one thread below ~7 M multiply-adds). These kernels read each weight once,
//! in order, split across rayon's threads. Larger products take the fused GEMM ([`super::linear`]).

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;

use half::bf16;

use super::parallel::par_map;
use super::tensor::{slice, slice_bf16};
use crate::backend::STREAMING_MAX_ROWS;

/// Parallel tasks get at least this many weight rows (fewer is not worth a thread hop).
const ROWS_PER_TASK_MIN: usize = 64;
/// Vocabulary rows per parallel task of the output head.
const VOCAB_ROWS_PER_TASK: usize = 2048;

/// A plain (non-autodiff) contiguous Flex tensor of `dtype`, or `None`.
fn plain<const D: usize>(tensor: &Tensor<D>, dtype: DType) -> Option<FlexTensor> {
    if tensor.device().is_autodiff() || tensor.dtype() != dtype {
        return None;
    }
    let flex = tensor.clone().try_into_primitive::<Flex>().ok()?;
    flex.layout().contiguous_offsets().map(|_| flex)
}

/// A weight matrix as the streaming kernels read it: f32, or bf16 (`--dtype bf16`).
enum PlainWeight {
    F32(FlexTensor),
    Bf16(FlexTensor),
}

impl PlainWeight {
    fn of(weight: &Tensor<2>) -> Option<Self> {
        plain(weight, DType::F32).map(Self::F32).or_else(|| plain(weight, DType::BF16).map(Self::Bf16))
    }
}

/// `x·W + b` (`x`: `[rows, d_in]`, `W`: `[d_in, d_out]`, f32 or bf16) by the streaming kernel,
/// when there are at most [`STREAMING_MAX_ROWS`] rows and every input is a plain Flex tensor
/// (`x` and `b` f32); else `None`.
pub fn streaming_linear(x: &Tensor<2>, weight: &Tensor<2>, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    let [rows, d_in] = x.dims();
    let d_out = weight.dims()[1];
    if rows > STREAMING_MAX_ROWS {
        return None;
    }
    let (xf, wf) = (plain(x, DType::F32)?, PlainWeight::of(weight)?);
    let bias = match bias {
        Some(bias) => Some(plain(bias, DType::F32)?),
        None => None,
    };
    let x_device = x.device();
    let (x, bias) = (slice(&xf), bias.as_ref().map(slice));
    let out = match &wf {
        PlainWeight::F32(w) => rows_times_matrix(x, slice(w), bias, d_in, d_out),
        PlainWeight::Bf16(w) => rows_times_matrix(x, slice_bf16(w), bias, d_in, d_out),
    };
    Some(Tensor::from_data(TensorData::new(out, [rows, d_out]), &x_device))
}

/// `x·Eᵀ` (`x`: `[rows, C]`, `E`: `[V, C]`, f32 or bf16, the tied output head) by the streaming
/// kernel, under the same conditions as [`streaming_linear`]; else `None`.
pub fn streaming_times_transposed(x: &Tensor<2>, embedding: &Tensor<2>) -> Option<Tensor<2>> {
    let [rows, c] = x.dims();
    let vocab = embedding.dims()[0];
    if rows > STREAMING_MAX_ROWS {
        return None;
    }
    let (xf, ef) = (plain(x, DType::F32)?, PlainWeight::of(embedding)?);
    let out = match &ef {
        PlainWeight::F32(e) => rows_times_transposed(slice(&xf), slice(e), c, vocab),
        PlainWeight::Bf16(e) => rows_times_transposed(slice(&xf), slice_bf16(e), c, vocab),
    };
    Some(Tensor::from_data(TensorData::new(out, [rows, vocab]), &x.device()))
}

/// A weight value the streaming kernels read: f32, or bf16 widened to f32 as it is loaded, so
/// that the activations and the sums stay f32 while half the bytes stream from memory.
trait WeightElement: Copy + Send + Sync {
    fn widen(self) -> f32;
    /// Eight consecutive values as f32 lanes.
    ///
    /// # Safety
    /// `ptr..ptr + 8` is readable; the CPU has AVX2 (callers are compiled for it and inline this).
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(ptr: *const Self) -> std::arch::x86_64::__m256;
}

impl WeightElement for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(ptr: *const Self) -> std::arch::x86_64::__m256 {
        // SAFETY: as the caller promises.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(ptr) }
    }
}

impl WeightElement for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(ptr: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // A bf16 is the top half of the f32 it stands for: zero-extend to 32 bits, shift up.
        // SAFETY: as the caller promises (8 values of 2 bytes).
        unsafe { _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(ptr.cast())), 16)) }
    }
}

/// `out[m, :] = x[m, :] @ w + bias` with `w` `[k, n]` row-major. The weight rows are split into
/// one contiguous range per thread, so that every thread streams memory strictly in order (the
/// hardware prefetcher's best case); the per-thread partial sums are added at the end.
fn rows_times_matrix<E: WeightElement>(x: &[f32], w: &[E], bias: Option<&[f32]>, k: usize, n: usize) -> Vec<f32> {
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

fn accumulate_rows<E: WeightElement>(x: &[f32], w: &[E], acc: &mut [f32], k: usize, n: usize, k0: usize, k1: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { accumulate_rows_avx2(x, w, acc, k, n, k0, k1) };
    }
    accumulate_rows_portable(x, w, acc, k, n, k0, k1)
}

/// The same with explicit 256-bit FMAs, on eight weight rows at a time taken from eight
/// segments of the range far apart: one core keeps more cache-line loads in flight on eight
/// distant streams than on one (README, "Speed").
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_rows_avx2<E: WeightElement>(x: &[f32], w: &[E], acc: &mut [f32], k: usize, n: usize, k0: usize, k1: usize) {
    use std::arch::x86_64::*;
    const STREAMS: usize = 8;
    // 8 rows × 256 floats = 8 KB of weights, plus 1 KB of accumulators per batch row: L1.
    const COLUMNS: usize = 256;
    let segment = (k1 - k0) / STREAMS;
    let vec_end = n / 8 * 8;
    for i in k0..k0 + segment {
        let row_index: [usize; STREAMS] = std::array::from_fn(|s| i + s * segment);
        let rows: [&[E]; STREAMS] = std::array::from_fn(|s| &w[row_index[s] * n..(row_index[s] + 1) * n]);
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
                            y = _mm256_fmadd_ps(*ar, E::load8(row.as_ptr().add(j)), y);
                        }
                        _mm256_storeu_ps(out.as_mut_ptr().add(j), y);
                    }
                }
            }
        }
        for (mi, out) in acc.chunks_exact_mut(n).enumerate() {
            let xs: [f32; STREAMS] = std::array::from_fn(|s| x[mi * k + row_index[s]]);
            for j in vec_end..n {
                out[j] += (0..STREAMS).map(|s| xs[s] * rows[s][j].widen()).sum::<f32>();
            }
        }
    }
    accumulate_rows_portable(x, w, acc, k, n, k0 + STREAMS * segment, k1)
}

/// `acc[m, :] += Σ_{i in k0..k1} x[m, i] · w[i, :]`, four weight rows at a time so that each pass
/// over `acc` (in L1/L2) does four multiply-adds per element. Plain loops the compiler vectorises.
#[inline(always)]
fn accumulate_rows_portable<E: WeightElement>(x: &[f32], w: &[E], acc: &mut [f32], k: usize, n: usize, k0: usize, k1: usize) {
    let row = |i: usize| &w[i * n..(i + 1) * n];
    let mut i = k0;
    while i + 4 <= k1 {
        let (r0, r1, r2, r3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
        for (mi, out) in acc.chunks_exact_mut(n).enumerate() {
            let xs = &x[mi * k + i..mi * k + i + 4];
            let (a0, a1, a2, a3) = (xs[0], xs[1], xs[2], xs[3]);
            for j in 0..n {
                out[j] += a0 * r0[j].widen() + a1 * r1[j].widen() + a2 * r2[j].widen() + a3 * r3[j].widen();
            }
        }
        i += 4;
    }
    for i in i..k1 {
        let r = row(i);
        for (mi, out) in acc.chunks_exact_mut(n).enumerate() {
            let a = x[mi * k + i];
            out.iter_mut().zip(r).for_each(|(y, &wv)| *y += a * wv.widen());
        }
    }
}

/// `out[m, v] = x[m, :] · e[v, :]` with `e` `[vocab, c]` row-major: one pass over `e`.
fn rows_times_transposed<E: WeightElement>(x: &[f32], e: &[E], c: usize, vocab: usize) -> Vec<f32> {
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

fn dot_rows<E: WeightElement>(x: &[f32], e: &[E], out: &mut [f32], c: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { dot_rows_avx2(x, e, out, c) };
    }
    dot_rows_portable(x, e, out, c)
}

/// The same with explicit 256-bit FMAs (the compiler vectorises the portable loop at 128 bits
/// only), on four rows of `e` at a time taken from four segments far apart: interleaving four
/// distant memory streams keeps more loads in flight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_rows_avx2<E: WeightElement>(x: &[f32], e: &[E], out: &mut [f32], c: usize) {
    const STREAMS: usize = 4;
    let m = x.len() / c;
    let segment = e.len() / c / STREAMS;
    for i in 0..segment {
        let row_index: [usize; STREAMS] = std::array::from_fn(|s| i + s * segment);
        let rows: [&[E]; STREAMS] = std::array::from_fn(|s| &e[row_index[s] * c..(row_index[s] + 1) * c]);
        // Two rows of x at a time (8 accumulators): each loaded piece of the vocabulary rows
        // serves both, 6 loads per 8 multiply-adds instead of 5 per 4; an odd last row alone.
        // The sum of every dot product runs in the same order either way.
        let mut mi = 0;
        while mi < m {
            let x_row = |p: usize| &x[(mi + p) * c..][..c];
            let store = |p: usize, s: usize, v: f32| out[row_index[s] * m + mi + p] = v;
            // SAFETY: the CPU supports the features (this function's own); every row has length c.
            if mi + 2 <= m {
                unsafe { dot_block::<E, 2, STREAMS>([x_row(0), x_row(1)], &rows, store) };
                mi += 2;
            } else {
                unsafe { dot_block::<E, 1, STREAMS>([x_row(0)], &rows, store) };
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
unsafe fn dot_block<E: WeightElement, const R: usize, const S: usize>(xs: [&[f32]; R], rows: &[&[E]; S], mut store: impl FnMut(usize, usize, f32)) {
    use std::arch::x86_64::*;
    let c = xs[0].len();
    let vec_end = c / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); S]; R];
    for b in (0..vec_end).step_by(8) {
        // SAFETY: every load covers b..b + 8 with b + 8 <= vec_end <= c, inside each row.
        unsafe {
            let xv: [__m256; R] = std::array::from_fn(|p| _mm256_loadu_ps(xs[p].as_ptr().add(b)));
            for (s, row) in rows.iter().enumerate() {
                let ev = E::load8(row.as_ptr().add(b));
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
            let tail: f32 = xs[p][vec_end..].iter().zip(&rows[s][vec_end..]).map(|(a, b)| a * b.widen()).sum();
            let total = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
            store(p, s, total + tail);
        }
    }
}

/// For every row of `e`, its dot product with every row of `x` (`out`: `[rows of e, rows of x]`).
/// Independent partial sums (4 × 8 lanes) let the compiler use vector registers and overlap
/// loads, without reordering a floating-point reduction it may not reorder.
#[inline(always)]
fn dot_rows_portable<E: WeightElement>(x: &[f32], e: &[E], out: &mut [f32], c: usize) {
    let m = x.len() / c;
    for (row, dots) in e.chunks_exact(c).zip(out.chunks_exact_mut(m)) {
        for (mi, dot) in dots.iter_mut().enumerate() {
            let xs = &x[mi * c..(mi + 1) * c];
            let mut lanes = [[0.0f32; 8]; 4];
            let (x_blocks, e_blocks) = (xs.chunks_exact(32), row.chunks_exact(32));
            let tail: f32 = x_blocks.remainder().iter().zip(e_blocks.remainder()).map(|(a, b)| a * b.widen()).sum();
            for (a, b) in x_blocks.zip(e_blocks) {
                for (part, lane) in lanes.iter_mut().enumerate() {
                    for l in 0..8 {
                        lane[l] += a[part * 8 + l] * b[part * 8 + l].widen();
                    }
                }
            }
            // A short reduction tree: a sequential 32-term sum would be a long dependency chain.
            let v: [f32; 8] = std::array::from_fn(|l| (lanes[0][l] + lanes[1][l]) + (lanes[2][l] + lanes[3][l]));
            *dot = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])) + tail;
        }
    }
}
