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
    /// Sixteen consecutive values as f32 lanes.
    ///
    /// # Safety
    /// `ptr..ptr + 16` is readable; the CPU has AVX-512F (callers are compiled for it and inline this).
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(ptr: *const Self) -> std::arch::x86_64::__m512;
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
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(ptr: *const Self) -> std::arch::x86_64::__m512 {
        // SAFETY: as the caller promises.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(ptr) }
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
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(ptr: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: as the caller promises (16 values of 2 bytes).
        unsafe { _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(ptr.cast())), 16)) }
    }
}

/// The vector width a streaming kernel runs at: the loops are written once, over `LANES` f32
/// lanes, and compiled inside a function enabling the width's features.
#[cfg(target_arch = "x86_64")]
trait Lanes {
    type V: Copy;
    const LANES: usize;
    /// # Safety (all of them)
    /// The CPU has the width's features; pointers cover `LANES` values.
    unsafe fn splat(v: f32) -> Self::V;
    unsafe fn load(ptr: *const f32) -> Self::V;
    unsafe fn load_weights<E: WeightElement>(ptr: *const E) -> Self::V;
    unsafe fn store(ptr: *mut f32, v: Self::V);
    /// `a·b + c`, rounded once.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
}

#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2 {
    type V = std::arch::x86_64::__m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_loadu_ps(ptr) }
    }
    #[inline(always)]
    unsafe fn load_weights<E: WeightElement>(ptr: *const E) -> Self::V {
        unsafe { E::load8(ptr) }
    }
    #[inline(always)]
    unsafe fn store(ptr: *mut f32, v: Self::V) {
        unsafe { std::arch::x86_64::_mm256_storeu_ps(ptr, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_fmadd_ps(a, b, c) }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    type V = std::arch::x86_64::__m512;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_loadu_ps(ptr) }
    }
    #[inline(always)]
    unsafe fn load_weights<E: WeightElement>(ptr: *const E) -> Self::V {
        unsafe { E::load16(ptr) }
    }
    #[inline(always)]
    unsafe fn store(ptr: *mut f32, v: Self::V) {
        unsafe { std::arch::x86_64::_mm512_storeu_ps(ptr, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_fmadd_ps(a, b, c) }
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
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { accumulate_rows_avx512(x, w, acc, k, n, k0, k1) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { accumulate_rows_avx2(x, w, acc, k, n, k0, k1) };
        }
    }
    accumulate_rows_portable(x, w, acc, k, n, k0, k1)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn accumulate_rows_avx512<E: WeightElement>(x: &[f32], w: &[E], acc: &mut [f32], k: usize, n: usize, k0: usize, k1: usize) {
    // SAFETY: the caller checked the features.
    unsafe { accumulate_rows_streams::<Avx512, E>(x, w, acc, k, n, k0, k1) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_rows_avx2<E: WeightElement>(x: &[f32], w: &[E], acc: &mut [f32], k: usize, n: usize, k0: usize, k1: usize) {
    // SAFETY: the caller checked the features.
    unsafe { accumulate_rows_streams::<Avx2, E>(x, w, acc, k, n, k0, k1) }
}

/// The same with explicit FMAs of `L`'s width, on eight weight rows at a time taken from eight
/// segments of the range far apart: one core keeps more cache-line loads in flight on eight
/// distant streams than on one (README, "Speed"). Every output adds its eight terms one FMA after
/// the other, in the vector lanes and in the columns past them alike, so the sums do not depend
/// on the width (AVX-512's equal AVX2's bit for bit). 16 lanes widen bf16 weights with half the
/// instructions of 8, which kept the bf16 kernel from streaming at memory speed (README, "Speed").
///
/// # Safety
/// The CPU has `L`'s features, and this is inlined into a function compiled for them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn accumulate_rows_streams<L: Lanes, E: WeightElement>(x: &[f32], w: &[E], acc: &mut [f32], k: usize, n: usize, k0: usize, k1: usize) {
    const STREAMS: usize = 8;
    // 8 rows × 256 floats = 8 KB of weights, plus 1 KB of accumulators per batch row: L1.
    const COLUMNS: usize = 256;
    let segment = (k1 - k0) / STREAMS;
    let vec_end = n / L::LANES * L::LANES;
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
                // SAFETY: every access covers j..j + LANES with j + LANES <= j1 <= vec_end <= n,
                // inside `out` and each of the rows (all of length n); the features as promised.
                unsafe {
                    let a: [L::V; STREAMS] = std::array::from_fn(|s| L::splat(xs[s]));
                    for j in (j0..j1).step_by(L::LANES) {
                        let mut y = L::load(out.as_ptr().add(j));
                        for (row, ar) in rows.iter().zip(&a) {
                            y = L::fma(*ar, L::load_weights(row.as_ptr().add(j)), y);
                        }
                        L::store(out.as_mut_ptr().add(j), y);
                    }
                }
            }
        }
        for (mi, out) in acc.chunks_exact_mut(n).enumerate() {
            let xs: [f32; STREAMS] = std::array::from_fn(|s| x[mi * k + row_index[s]]);
            for j in vec_end..n {
                out[j] = (0..STREAMS).fold(out[j], |y, s| xs[s].mul_add(rows[s][j].widen(), y));
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
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { dot_rows_avx512(x, e, out, c) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { dot_rows_avx2(x, e, out, c) };
        }
    }
    dot_rows_portable(x, e, out, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_rows_avx512<E: WeightElement>(x: &[f32], e: &[E], out: &mut [f32], c: usize) {
    // SAFETY: the caller checked the features.
    unsafe { dot_rows_streams::<Avx512, E>(x, e, out, c) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_rows_avx2<E: WeightElement>(x: &[f32], e: &[E], out: &mut [f32], c: usize) {
    // SAFETY: the caller checked the features.
    unsafe { dot_rows_streams::<Avx2, E>(x, e, out, c) }
}

/// The same with explicit FMAs of `L`'s width (the compiler vectorises the portable loop at 128
/// bits only), on four rows of `e` at a time taken from four segments far apart: interleaving
/// four distant memory streams keeps more loads in flight.
///
/// # Safety
/// The CPU has `L`'s features, and this is inlined into a function compiled for them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_rows_streams<L: Lanes, E: WeightElement>(x: &[f32], e: &[E], out: &mut [f32], c: usize) {
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
            // SAFETY: the CPU has the features, as promised; every row has length c.
            if mi + 2 <= m {
                unsafe { dot_block::<L, E, 2, STREAMS>([x_row(0), x_row(1)], &rows, store) };
                mi += 2;
            } else {
                unsafe { dot_block::<L, E, 1, STREAMS>([x_row(0)], &rows, store) };
                mi += 1;
            }
        }
    }
    // The rows left over when their number is not a multiple of the streams.
    let done = STREAMS * segment;
    dot_rows_portable(x, &e[done * c..], &mut out[done * m..], c);
}

/// The dot products of `R` rows of x with `S` vocabulary rows (all of one length), each handed to
/// `store(x row, vocabulary row, value)`: `L::LANES`-lane partial sums, then the lanes in a fixed
/// order.
///
/// # Safety
/// The CPU has `L`'s features, and this is inlined into a function compiled for them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_block<L: Lanes, E: WeightElement, const R: usize, const S: usize>(xs: [&[f32]; R], rows: &[&[E]; S], mut store: impl FnMut(usize, usize, f32)) {
    let c = xs[0].len();
    let vec_end = c / L::LANES * L::LANES;
    // SAFETY (every block): the features as promised; every load covers b..b + LANES with
    // b + LANES <= vec_end <= c, inside each row.
    let mut acc = [[unsafe { L::splat(0.0) }; S]; R];
    for b in (0..vec_end).step_by(L::LANES) {
        unsafe {
            let xv: [L::V; R] = std::array::from_fn(|p| L::load(xs[p].as_ptr().add(b)));
            for (s, row) in rows.iter().enumerate() {
                let ev = L::load_weights(row.as_ptr().add(b));
                for p in 0..R {
                    acc[p][s] = L::fma(xv[p], ev, acc[p][s]);
                }
            }
        }
    }
    for (p, per_row) in acc.iter().enumerate() {
        for (s, sum) in per_row.iter().enumerate() {
            let mut lanes = [0.0f32; 16];
            // SAFETY: `lanes` holds at least LANES floats.
            unsafe { L::store(lanes.as_mut_ptr(), *sum) };
            // Lanes beyond eight are folded onto the first eight, then a short tree.
            for l in 8..L::LANES {
                lanes[l - 8] += lanes[l];
            }
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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5).collect()
    }

    /// Each output adds its terms in one order whatever the width, so AVX-512 and AVX2 agree bit
    /// for bit, in the vector lanes and in the odd columns past them (f32 and bf16 weights).
    #[test]
    fn accumulate_rows_is_the_same_at_both_widths() {
        if !(std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            eprintln!("skipped: this CPU lacks AVX-512F or AVX2/FMA");
            return;
        }
        for (m, k, n) in [(1, 64, 768), (3, 67, 300), (2, 131, 29), (1, 9, 16)] {
            let (x, w) = (values(m * k, 1), values(k * n, 2));
            let w_bf16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let run = |wide: bool, bf16_weights: bool| {
                let mut acc = values(m * n, 3);
                // SAFETY: the CPU has the features, checked above.
                unsafe {
                    match (wide, bf16_weights) {
                        (true, false) => accumulate_rows_avx512(&x, &w, &mut acc, k, n, 0, k),
                        (false, false) => accumulate_rows_avx2(&x, &w, &mut acc, k, n, 0, k),
                        (true, true) => accumulate_rows_avx512(&x, &w_bf16, &mut acc, k, n, 0, k),
                        (false, true) => accumulate_rows_avx2(&x, &w_bf16, &mut acc, k, n, 0, k),
                    }
                }
                acc
            };
            for bf16_weights in [false, true] {
                let (wide, narrow) = (run(true, bf16_weights), run(false, bf16_weights));
                let first = wide.iter().zip(&narrow).position(|(a, b)| a.to_bits() != b.to_bits());
                assert_eq!(first, None, "[{m}, {k}]·[{k}, {n}], bf16 {bf16_weights}: AVX-512 and AVX2 differ");
                // And both are the product (against f64 sums).
                let mut reference = values(m * n, 3).iter().map(|&v| v as f64).collect::<Vec<_>>();
                for (r, row) in reference.chunks_exact_mut(n).enumerate() {
                    for i in 0..k {
                        let weights = &w_bf16[i * n..(i + 1) * n];
                        for (j, y) in row.iter_mut().enumerate() {
                            let wv = if bf16_weights { weights[j].to_f32() } else { w[i * n + j] };
                            *y += x[r * k + i] as f64 * wv as f64;
                        }
                    }
                }
                let worst = wide.iter().zip(&reference).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
                assert!(worst < 1e-5, "[{m}, {k}]·[{k}, {n}], bf16 {bf16_weights}: off by {worst}");
            }
        }
    }

    /// The tied head's dot products at both widths (their lanes are summed in another order, so
    /// to f32 rounding), for f32 and bf16 rows, including rows left over from the streams.
    #[test]
    fn dot_rows_agree_at_both_widths() {
        if !(std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            eprintln!("skipped: this CPU lacks AVX-512F or AVX2/FMA");
            return;
        }
        for (m, c, vocab) in [(1, 768, 203), (3, 67, 41), (2, 16, 8)] {
            let (x, e) = (values(m * c, 4), values(vocab * c, 5));
            let e_bf16: Vec<bf16> = e.iter().map(|&v| bf16::from_f32(v)).collect();
            let (mut wide, mut narrow) = (vec![0.0f32; vocab * m], vec![0.0f32; vocab * m]);
            let (mut wide16, mut narrow16) = (vec![0.0f32; vocab * m], vec![0.0f32; vocab * m]);
            // SAFETY: the CPU has the features, checked above.
            unsafe {
                dot_rows_avx512(&x, &e, &mut wide, c);
                dot_rows_avx2(&x, &e, &mut narrow, c);
                dot_rows_avx512(&x, &e_bf16, &mut wide16, c);
                dot_rows_avx2(&x, &e_bf16, &mut narrow16, c);
            }
            for v in 0..vocab {
                for r in 0..m {
                    let exact: f64 = (0..c).map(|i| x[r * c + i] as f64 * e[v * c + i] as f64).sum();
                    let exact16: f64 = (0..c).map(|i| x[r * c + i] as f64 * e_bf16[v * c + i].to_f64()).sum();
                    for (got, want) in [(wide[v * m + r], exact), (narrow[v * m + r], exact), (wide16[v * m + r], exact16), (narrow16[v * m + r], exact16)] {
                        assert!((got as f64 - want).abs() < 1e-5, "[{m}, {c}]·[{vocab}, {c}]ᵀ at ({r}, {v}): {got} vs {want}");
                    }
                }
            }
        }
    }
}
