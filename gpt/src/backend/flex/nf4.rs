//! Products by an NF4 weight (QLoRA's frozen base, [`Nf4Matrix`] `[rows, cols]` = HF's
//! `[out, in]`) on f32 activations, dequantizing inside the product: the model is never held in
//! f32, only a panel of a few rows at a time.
//!
//! - [`nf4_times_transposed`]: `x·Wᵀ (+ b)`, the layer's forward. Up to
//!   [`STREAMING_MAX_ROWS`] rows (decoding) it is a streaming dot product per output feature:
//!   each 64-value block's 32 bytes are read once, their nibbles looked up in the code book times
//!   the block's absmax (`vpermps`, AVX-512 or AVX2) and multiplied into every row of `x`. More
//!   rows dequantize strips of `W` into f32 panels for the GEMM.
//! - [`nf4_times`]: `g·W`, the input gradient (the weight gets none), by the same panels.
//!
//! Each dequantized value is bitsandbytes' `code[q] · absmax` (one f32 product), so the results
//! are an f32 product by the dequantized weight up to the order of the sums.

use rayon::prelude::*;

use super::gemm::{Matrix, gemm_into};
use super::parallel::{SharedOut, panel_width, panels_times_transposed, par_map};
use crate::backend::STREAMING_MAX_ROWS;
use crate::quant::{BLOCK, NF4_CODE, Nf4Matrix};

/// Output features per parallel task of the streaming product (fewer is not worth a thread hop).
const ROWS_PER_TASK_MIN: usize = 64;
/// Columns of `W` per dequantized strip of `g·W` in f32 (see `super::parallel::PANEL_ROWS`).
const STRIP_COLUMNS: usize = 32;

/// `y = x·Wᵀ (+ bias)`: `x` `[n, w.cols()]` row-major, `y` `[n, w.rows()]`, `bias` `[w.rows()]`.
///
/// # Panics
/// When the lengths do not match (the callers check the shapes).
pub fn nf4_times_transposed(x: &[f32], n: usize, w: &Nf4Matrix, bias: Option<&[f32]>) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(x.len() == n * cols && bias.is_none_or(|b| b.len() == rows), "nf4_times_transposed: [{n}, {cols}]·[{rows}, {cols}]ᵀ");
    if n <= STREAMING_MAX_ROWS && cols.is_multiple_of(BLOCK) {
        streaming_times_transposed(x, n, w, bias, Isa::detect())
    } else {
        let isa = Isa::detect();
        panels_times_transposed(x, n, [rows, cols], bias, |r0, _, panel| dequantize(w, r0 * cols, panel, isa))
    }
}

/// `dx = g·W`: `g` `[n, w.rows()]` row-major, `dx` `[n, w.cols()]`.
///
/// # Panics
/// When the lengths do not match.
pub fn nf4_times(g: &[f32], n: usize, w: &Nf4Matrix) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    assert_eq!(g.len(), n * rows, "nf4_times: [{n}, {rows}]·[{rows}, {cols}]");
    let mut dx: Vec<f32> = Vec::with_capacity(n * cols);
    // Strips of columns, all rows each: every strip writes its own columns of dx, so the strips run
    // in parallel without partial sums to add.
    let width = panel_width(STRIP_COLUMNS).min(cols);
    let (out, isa) = (SharedOut(dx.as_mut_ptr()), Isa::detect());
    (0..cols.div_ceil(width)).into_par_iter().for_each_init(
        || vec![0.0f32; rows * width],
        |panel, s| {
            let (c0, c1) = (s * width, ((s + 1) * width).min(cols));
            let panel = &mut panel[..rows * (c1 - c0)];
            for (r, row) in panel.chunks_exact_mut(c1 - c0).enumerate() {
                dequantize(w, r * cols + c0, row, isa);
            }
            let (g_m, panel_m) = (Matrix::rows_of(g, n, rows, rows), Matrix::rows_of(panel, rows, c1 - c0, c1 - c0));
            // SAFETY: dx has room for n rows of `cols`; this strip writes columns c0..c1 of each,
            // which no other strip writes, and the GEMM writes every one (no accumulate).
            unsafe { gemm_into(out.at(c0), cols, g_m, panel_m, false, false) };
        },
    );
    // SAFETY: the strips cover columns 0..cols of every row.
    unsafe { dx.set_len(n * cols) };
    dx
}

/// The instructions the streaming product runs on (also `super::int8`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    pub(super) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Self::Avx2;
            }
        }
        Self::Portable
    }
}

/// The streaming `x·Wᵀ (+ bias)` for `cols` a multiple of 64 (each row of `W` whole blocks):
/// contiguous ranges of output features per task, each weight row read once.
fn streaming_times_transposed(x: &[f32], n: usize, w: &Nf4Matrix, bias: Option<&[f32]>, isa: Isa) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    let x = pairs_split(x, cols);
    let tasks = rayon::current_num_threads().clamp(1, rows.div_ceil(ROWS_PER_TASK_MIN));
    let per_task = rows.div_ceil(tasks);
    // Up to four rows of x per pass over a weight row (eight accumulators in registers).
    let groups: Vec<Vec<&[f32]>> = (0..n).step_by(4).map(|m0| (m0..(m0 + 4).min(n)).map(|m| &x[m * cols..(m + 1) * cols]).collect()).collect();
    // Each task's outputs `[its rows, n]`, then put in `[n, rows]`.
    let parts = par_map(rows.div_ceil(per_task), |task| {
        let (r0, r1) = (task * per_task, ((task + 1) * per_task).min(rows));
        let mut scales = vec![0.0f32; cols / BLOCK];
        let mut out = vec![0.0f32; (r1 - r0) * n];
        for (r, dots) in (r0..r1).zip(out.chunks_exact_mut(n)) {
            scales.iter_mut().enumerate().for_each(|(b, s)| *s = w.block_scale(r * cols / BLOCK + b));
            let packed = &w.packed()[r * cols / 2..(r + 1) * cols / 2];
            for (xs, dots) in groups.iter().zip(dots.chunks_mut(4)) {
                row_dots(isa, packed, &scales, xs, dots);
            }
        }
        out
    });
    let mut y = vec![0.0f32; n * rows];
    for (task, part) in parts.iter().enumerate() {
        for (dr, dots) in part.chunks_exact(n).enumerate() {
            for (m, &dot) in dots.iter().enumerate() {
                y[m * rows + task * per_task + dr] = dot + bias.map_or(0.0, |b| b[task * per_task + dr]);
            }
        }
    }
    y
}

/// `x` with each run of 32 values reordered as its 16 even-indexed values then its 16 odd ones:
/// the order of one 16-byte load's high nibbles, then its low nibbles, so that the kernels load
/// `x` in the order they decode the weight.
fn pairs_split(x: &[f32], cols: usize) -> Vec<f32> {
    debug_assert!(cols.is_multiple_of(32));
    let mut out = Vec::with_capacity(x.len());
    for chunk in x.chunks_exact(32) {
        out.extend(chunk.iter().step_by(2));
        out.extend(chunk.iter().skip(1).step_by(2));
    }
    out
}

/// `dots[m] = x[m] · (row of W)` for the packed bytes of one weight row (`scales`: its blocks'
/// absmax) and up to four rows of x in [`pairs_split`] order.
fn row_dots(isa: Isa, packed: &[u8], scales: &[f32], xs: &[&[f32]], dots: &mut [f32]) {
    macro_rules! run {
        ($kernel:ident) => {
            match xs {
                // SAFETY: `isa` was detected on this CPU; the lengths are the row's (asserted by the callers).
                &[a] => dots.copy_from_slice(&unsafe { $kernel::<1>(packed, scales, [a]) }),
                &[a, b] => dots.copy_from_slice(&unsafe { $kernel::<2>(packed, scales, [a, b]) }),
                &[a, b, c] => dots.copy_from_slice(&unsafe { $kernel::<3>(packed, scales, [a, b, c]) }),
                &[a, b, c, d] => dots.copy_from_slice(&unsafe { $kernel::<4>(packed, scales, [a, b, c, d]) }),
                _ => unreachable!("one to four rows"),
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => run!(dots_avx512),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => run!(dots_avx2),
        Isa::Portable => {
            for (x, dot) in xs.iter().zip(dots.iter_mut()) {
                *dot = dot_portable(packed, scales, x);
            }
        }
    }
}

/// One dot product in plain Rust: per block, 8 lanes of sums of code values times x, then times
/// the absmax (the lanes keep the compiler free to vectorise).
fn dot_portable(packed: &[u8], scales: &[f32], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for ((bytes, xb), &scale) in packed.chunks_exact(BLOCK / 2).zip(x.chunks_exact(BLOCK)).zip(scales) {
        let code: [f32; 16] = std::array::from_fn(|i| NF4_CODE[i] * scale);
        let mut lanes = [0.0f32; 8];
        for (half, xh) in bytes.chunks_exact(16).zip(xb.chunks_exact(32)) {
            let (even, odd) = xh.split_at(16);
            for (j, &byte) in half.iter().enumerate() {
                lanes[j % 8] += code[(byte >> 4) as usize] * even[j] + code[(byte & 0x0F) as usize] * odd[j];
            }
        }
        total += lanes.iter().sum::<f32>();
    }
    total
}

/// [`row_dots`] with AVX-512: per 16 bytes, their 32 nibbles widened to two vectors of indices
/// into the block's scaled code book (one `vpermps` each), multiplied into `R` rows of x.
///
/// # Safety
/// The CPU has AVX-512F; `packed` holds `x[i].len() / 2` bytes and `scales` one absmax per 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512<const R: usize>(packed: &[u8], scales: &[f32], xs: [&[f32]; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    debug_assert!(xs.iter().all(|x| x.len() == packed.len() * 2 && x.len() == scales.len() * BLOCK));
    // SAFETY: NF4_CODE holds 16 values.
    let code = unsafe { _mm512_loadu_ps(NF4_CODE.as_ptr()) };
    let nibble = _mm512_set1_epi32(0x0F);
    // Four sums per row of x (each half block's high and low nibbles): four dependency chains,
    // so that one row of x alone keeps the FMA units busy.
    let mut sums = [[_mm512_setzero_ps(); R]; 4];
    for (b, &scale) in scales.iter().enumerate() {
        let scaled = _mm512_mul_ps(code, _mm512_set1_ps(scale));
        for half in 0..2 {
            let at = b * BLOCK + half * 32;
            // SAFETY: bytes at/2..at/2 + 16 and values at..at + 32 are inside the row.
            unsafe {
                let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(packed.as_ptr().add(at / 2).cast()));
                let w_even = _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(q), scaled);
                let w_odd = _mm512_permutexvar_ps(_mm512_and_si512(q, nibble), scaled);
                for r in 0..R {
                    sums[2 * half][r] = _mm512_fmadd_ps(w_even, _mm512_loadu_ps(xs[r].as_ptr().add(at)), sums[2 * half][r]);
                    sums[2 * half + 1][r] = _mm512_fmadd_ps(w_odd, _mm512_loadu_ps(xs[r].as_ptr().add(at + 16)), sums[2 * half + 1][r]);
                }
            }
        }
    }
    std::array::from_fn(|r| _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(sums[0][r], sums[1][r]), _mm512_add_ps(sums[2][r], sums[3][r]))))
}

/// [`row_dots`] with AVX2: `vpermps` indexes 8 values, so the 16-entry code book is two halves
/// and bit 3 of each nibble picks one (a blend on the bit moved to the sign).
///
/// # Safety
/// The CPU has AVX2 and FMA; the lengths are as for [`dots_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2<const R: usize>(packed: &[u8], scales: &[f32], xs: [&[f32]; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    debug_assert!(xs.iter().all(|x| x.len() == packed.len() * 2 && x.len() == scales.len() * BLOCK));
    // SAFETY: NF4_CODE holds 16 values.
    let (code_low, code_high) = unsafe { (_mm256_loadu_ps(NF4_CODE.as_ptr()), _mm256_loadu_ps(NF4_CODE.as_ptr().add(8))) };
    let nibble = _mm256_set1_epi32(0x0F);
    let (mut high_sums, mut low_sums) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
    for (b, &scale) in scales.iter().enumerate() {
        let s = _mm256_set1_ps(scale);
        let (low, high) = (_mm256_mul_ps(code_low, s), _mm256_mul_ps(code_high, s));
        // 8 bytes at a time: byte j of a 16-byte run pairs with values j and 16 + j of its 32
        // reordered values of x.
        for eighth in 0..4 {
            let (run, j) = (b * BLOCK + eighth / 2 * 32, eighth % 2 * 8);
            // SAFETY: bytes (run/2 + j)..+8 and values run..run + 32 are inside the row.
            unsafe {
                let q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(packed.as_ptr().add(run / 2 + j).cast()));
                let w_even = look_up_avx2(_mm256_srli_epi32::<4>(q), low, high);
                let w_odd = look_up_avx2(_mm256_and_si256(q, nibble), low, high);
                for r in 0..R {
                    high_sums[r] = _mm256_fmadd_ps(w_even, _mm256_loadu_ps(xs[r].as_ptr().add(run + j)), high_sums[r]);
                    low_sums[r] = _mm256_fmadd_ps(w_odd, _mm256_loadu_ps(xs[r].as_ptr().add(run + 16 + j)), low_sums[r]);
                }
            }
        }
    }
    std::array::from_fn(|r| {
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(high_sums[r], low_sums[r])) };
        lanes.iter().sum()
    })
}

/// `code[q]` for 8 nibbles `q` (32-bit lanes), the 16-entry code book in two halves of 8:
/// `vpermps` indexes 8 values, and bit 3 of each nibble, moved to the sign, picks the half.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn look_up_avx2(q: std::arch::x86_64::__m256i, low: std::arch::x86_64::__m256, high: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let upper = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(q));
    _mm256_blendv_ps(_mm256_permutevar8x32_ps(low, q), _mm256_permutevar8x32_ps(high, q), upper)
}

/// Values per SIMD step of the dequantization: 16 bytes, half a block.
const UNIT: usize = 32;

/// Values `start..start + out.len()` of the flattened `w`, dequantized: the whole half-blocks in
/// the range by SIMD, an unaligned head or tail value by value.
fn dequantize(w: &Nf4Matrix, start: usize, out: &mut [f32], isa: Isa) {
    let end = start + out.len();
    let first = start.next_multiple_of(UNIT).min(end);
    let last = (end / UNIT * UNIT).max(first);
    w.dequantize_into(start, &mut out[..first - start]);
    let units = &mut out[first - start..last - start];
    match isa {
        // SAFETY: `isa` was detected on this CPU; `units` holds whole units from `first`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { dequantize_units_avx512(w, first / UNIT, units) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { dequantize_units_avx2(w, first / UNIT, units) },
        Isa::Portable => w.dequantize_into(first, units),
    }
    w.dequantize_into(last, &mut out[last - start..]);
}

/// Units `unit0..` of 32 values of `w` into `out`: the 16 bytes' high and low nibbles looked up in
/// the code book times the absmax (one `vpermps` each), interleaved back into element order by
/// two `vpermt2ps`.
///
/// # Safety
/// The CPU has AVX-512F; the units are inside `w`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dequantize_units_avx512(w: &Nf4Matrix, unit0: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    // SAFETY: NF4_CODE holds 16 values.
    let code = unsafe { _mm512_loadu_ps(NF4_CODE.as_ptr()) };
    let nibble = _mm512_set1_epi32(0x0F);
    // Result lanes from `even` (index i < 16) and `odd` (16 + i) alternately.
    let first_half = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let second_half = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let packed = &w.packed()[unit0 * UNIT / 2..];
    for (u, values) in out.chunks_exact_mut(UNIT).enumerate() {
        let scaled = _mm512_mul_ps(code, _mm512_set1_ps(w.block_scale((unit0 + u) * UNIT / BLOCK)));
        // SAFETY: bytes u·16..+16 of the units and the unit's 32 values exist.
        unsafe {
            let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(packed.as_ptr().add(u * UNIT / 2).cast()));
            let even = _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(q), scaled);
            let odd = _mm512_permutexvar_ps(_mm512_and_si512(q, nibble), scaled);
            _mm512_storeu_ps(values.as_mut_ptr(), _mm512_permutex2var_ps(even, first_half, odd));
            _mm512_storeu_ps(values.as_mut_ptr().add(16), _mm512_permutex2var_ps(even, second_half, odd));
        }
    }
}

/// [`dequantize_units_avx512`] with AVX2: 8 bytes at a time, interleaved by unpacking within
/// 128-bit lanes and putting the lanes in order.
///
/// # Safety
/// The CPU has AVX2; the units are inside `w`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dequantize_units_avx2(w: &Nf4Matrix, unit0: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    // SAFETY: NF4_CODE holds 16 values.
    let (code_low, code_high) = unsafe { (_mm256_loadu_ps(NF4_CODE.as_ptr()), _mm256_loadu_ps(NF4_CODE.as_ptr().add(8))) };
    let nibble = _mm256_set1_epi32(0x0F);
    let packed = &w.packed()[unit0 * UNIT / 2..];
    for (u, values) in out.chunks_exact_mut(UNIT).enumerate() {
        let s = _mm256_set1_ps(w.block_scale((unit0 + u) * UNIT / BLOCK));
        let (low, high) = (_mm256_mul_ps(code_low, s), _mm256_mul_ps(code_high, s));
        for quarter in 0..2 {
            // SAFETY: bytes u·16 + quarter·8..+8 of the units and values quarter·16..+16 of the unit exist.
            unsafe {
                let q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(packed.as_ptr().add(u * UNIT / 2 + quarter * 8).cast()));
                let even = look_up_avx2(_mm256_srli_epi32::<4>(q), low, high);
                let odd = look_up_avx2(_mm256_and_si256(q, nibble), low, high);
                // [e0 o0 e1 o1 | e4 o4 e5 o5] and [e2 o2 e3 o3 | e6 o6 e7 o7]
                let (a, c) = (_mm256_unpacklo_ps(even, odd), _mm256_unpackhi_ps(even, odd));
                let dst = values.as_mut_ptr().add(quarter * 16);
                _mm256_storeu_ps(dst, _mm256_permute2f128_ps::<0x20>(a, c));
                _mm256_storeu_ps(dst.add(8), _mm256_permute2f128_ps::<0x31>(a, c));
            }
        }
    }
}

/// The product kernels' tests share these (int8's too).
#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    pub(in crate::backend::flex) fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| (rng.random::<f32>() - 0.5) * scale).collect()
    }

    fn quantized(rows: usize, cols: usize, seed: u64, double: bool) -> Nf4Matrix {
        let w = Nf4Matrix::quantize("w", &values(rows * cols, seed, 0.1), [rows, cols]).unwrap();
        if double { w.double_quantized() } else { w }
    }

    /// `a·bᵀ` (`transposed`) or `a·b` in f64 with the sum of |terms| of each value: the
    /// reference, and the scale of its f32 rounding error.
    fn reference(a: &[f32], b: &[f32], n: usize, k: usize, m: usize, transposed: bool) -> (Vec<f64>, Vec<f64>) {
        let b_at = |i: usize, j: usize| f64::from(if transposed { b[j * k + i] } else { b[i * m + j] });
        let (mut out, mut magnitude) = (vec![0.0; n * m], vec![0.0; n * m]);
        for r in 0..n {
            for j in 0..m {
                for i in 0..k {
                    let term = f64::from(a[r * k + i]) * b_at(i, j);
                    out[r * m + j] += term;
                    magnitude[r * m + j] += term.abs();
                }
            }
        }
        (out, magnitude)
    }

    /// Every value within 1e-5 of the sum of the magnitudes of its terms (f32 sums in another
    /// order: a few ulps of that sum).
    pub(in crate::backend::flex) fn assert_close(what: &str, ours: &[f32], (reference, magnitude): &(Vec<f64>, Vec<f64>)) {
        assert_eq!(ours.len(), reference.len(), "{what}: length");
        for (i, ((&y, &r), &mag)) in ours.iter().zip(reference).zip(magnitude).enumerate() {
            assert!((f64::from(y) - r).abs() <= 1e-5 * mag + 1e-12, "{what}: value {i}: {y} vs {r} (Σ|terms| {mag})");
        }
    }

    /// Every instruction set of the kernels this CPU has.
    pub(in crate::backend::flex) fn isas() -> Vec<Isa> {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
            }
        }
        isas
    }

    /// The SIMD dequantization equals bitsandbytes' values (`dequantize_into`) bit for bit, for
    /// ranges that start and end inside blocks, span rows, and end in a partial last block.
    #[test]
    fn dequantized_panels_are_exact() {
        let w = quantized(23, 77, 5, true);
        let all = w.dequantize();
        for (start, len) in [(0, 23 * 77), (64, 128), (32, 32), (5, 300), (130, 1000), (1700, 23 * 77 - 1700), (3, 2)] {
            for isa in isas() {
                let mut out = vec![f32::NAN; len];
                dequantize(&w, start, &mut out, isa);
                assert!(out.iter().zip(&all[start..start + len]).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?} {start}..+{len}");
            }
        }
    }

    /// The streaming product on every instruction set this CPU has, against the f64 product by
    /// the dequantized weight: 1 to 16 rows of x (every group size of the kernels), plain and
    /// doubly quantized absmax, with a bias; enough weight rows for several parallel tasks.
    #[test]
    fn streaming_product_matches_the_dequantized_weight() {
        for (n, rows, cols, double) in [(1, 40, 64, false), (3, 150, 192, true), (6, 17, 128, false), (16, 260, 256, true)] {
            let w = quantized(rows, cols, n as u64, double);
            let (x, bias) = (values(n * cols, 7, 2.0), values(rows, 8, 1.0));
            let mut expected = reference(&x, &w.dequantize(), n, cols, rows, true);
            expected.0.iter_mut().enumerate().for_each(|(i, y)| *y += f64::from(bias[i % rows]));
            for isa in isas() {
                let y = streaming_times_transposed(&x, n, &w, Some(&bias), isa);
                assert_close(&format!("{isa:?} [{n}, {cols}]·[{rows}, {cols}]ᵀ"), &y, &expected);
            }
            assert_close("dispatch", &nf4_times_transposed(&x, n, &w, Some(&bias)), &expected);
        }
    }

    /// Many rows (the panel GEMM), and rows of W that are not whole blocks (the panels whatever
    /// the number of rows), with and without a bias.
    #[test]
    fn panel_product_matches_the_dequantized_weight() {
        for (n, rows, cols, bias) in [(40, 70, 128, true), (17, 300, 1024, false), (3, 23, 37, true), (33, 9, 65, false)] {
            let w = quantized(rows, cols, 11, false);
            let x = values(n * cols, 12, 2.0);
            let bias = bias.then(|| values(rows, 13, 1.0));
            let mut expected = reference(&x, &w.dequantize(), n, cols, rows, true);
            if let Some(bias) = &bias {
                expected.0.iter_mut().enumerate().for_each(|(i, y)| *y += f64::from(bias[i % rows]));
            }
            assert_close(&format!("[{n}, {cols}]·[{rows}, {cols}]ᵀ"), &nf4_times_transposed(&x, n, &w, bias.as_deref()), &expected);
        }
    }

    /// The input gradient `g·W`, over strips of columns: a single strip, several (a wide W), and
    /// rows that are not whole blocks.
    #[test]
    fn input_gradient_matches_the_dequantized_weight() {
        for (n, rows, cols) in [(1, 40, 64), (20, 64, 3000), (5, 23, 37), (40, 2100, 128)] {
            let w = quantized(rows, cols, 21, true);
            let g = values(n * rows, 22, 2.0);
            let expected = reference(&g, &w.dequantize(), n, rows, cols, false);
            assert_close(&format!("[{n}, {rows}]·[{rows}, {cols}]"), &nf4_times(&g, n, &w), &expected);
        }
    }
}

