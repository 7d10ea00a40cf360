//! f16 matrix products with f32 accumulation (`--precision f16-mixed`), emulated: no CPU we run
//! on has an f16 dot product (AVX512-FP16 is Sapphire Rapids'), so both operands are rounded to
//! IEEE f16 and back to f32 (F16C's `vcvtps2ph`/`vcvtph2ps`, as `half::f16::from_f32` rounds:
//! to nearest even, overflow to infinity, small values to subnormals or zero) and the f32 GEMM
//! multiplies the rounded copies. The numbers are those of an f16 GEMM accumulating in f32; the
//! time is the f32 GEMM's plus the rounding passes.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gemm::{Matrix, gemm_f32};
use crate::backend::MatmulPrecision;

/// What [`super::precision::matmul_path`] says about this path.
pub(super) const PATH: &str = "f16 (emulated: f16-rounded inputs, f32 GEMM)";

/// Below this many values a matrix is rounded on the calling thread (a rayon hop costs more).
const PARALLEL_MIN_VALUES: usize = 1 << 16;

/// Whether [`super::gemm::gemm_into`] should hand its product to [`gemm_into`].
pub(super) fn enabled() -> bool {
    crate::backend::matmul_precision() == MatmulPrecision::F16
}

/// `x` rounded to f16 and back: the value an f16 operand holds (the scalar reference).
pub(super) fn round_to_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// `dst (+)= a·b` with `a` and `b` rounded to f16, accumulated in f32: the contract of
/// [`super::gemm::gemm_into`].
///
/// # Safety
/// As [`super::gemm::gemm_into`].
pub(super) unsafe fn gemm_into(dst: *mut f32, dst_row: usize, a: Matrix, b: Matrix, accumulate: bool, threads: bool) {
    let (a_values, a) = rounded(a, threads);
    let (b_values, b) = rounded(b, threads);
    // SAFETY: as the caller promises for `dst`; the views lie inside the rounded copies, alive here.
    unsafe { gemm_f32(dst, dst_row, a, b, accumulate, threads) };
    drop((a_values, b_values));
}

/// A copy of `m` with every value rounded to f16, and the view of it: laid out along the axis
/// that is adjacent in `m` (a transposed view stays transposed), so the copy reads memory in
/// order and the vector conversion applies.
fn rounded(m: Matrix, threads: bool) -> (Vec<f32>, Matrix) {
    // Lines of `len` values: rows, or columns when only the rows are adjacent.
    let by_columns = m.col_stride != 1 && m.row_stride == 1;
    let (lines, len, line_stride, step) =
        if by_columns { (m.cols, m.rows, m.col_stride, 1) } else { (m.rows, m.cols, m.row_stride, m.col_stride) };
    let n = lines * len;
    // Not zeroed first: every value is written once (a memset would be one more pass).
    let mut values = Vec::with_capacity(n);
    if len > 0 {
        // A raw pointer is neither Send nor Sync: the threads get its address.
        let base = m.ptr as usize;
        let round = |(i, out): (usize, &mut [MaybeUninit<f32>])| {
            let src = (base as *const f32).wrapping_offset(i as isize * line_stride);
            // SAFETY: line `i` of the view, `len` values `step` apart, is inside its storage.
            unsafe { round_line(src, step, out) }
        };
        let out = &mut values.spare_capacity_mut()[..n];
        if threads && n >= PARALLEL_MIN_VALUES && rayon::current_num_threads() > 1 {
            out.par_chunks_mut(len).enumerate().for_each(round);
        } else {
            out.chunks_mut(len).enumerate().for_each(round);
        }
    }
    // SAFETY: the `n` values were written above (none when `len` is 0).
    unsafe { values.set_len(n) };
    let (row_stride, col_stride) = if by_columns { (1, m.rows as isize) } else { (m.cols as isize, 1) };
    let view = Matrix { ptr: values.as_ptr(), rows: m.rows, cols: m.cols, row_stride, col_stride };
    (values, view)
}

/// `out[i] = round_to_f16(src[i·step])`, every value of `out` written.
///
/// # Safety
/// `src` points at `out.len()` values `step` apart.
unsafe fn round_line(src: *const f32, step: isize, out: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    if step == 1 {
        // SAFETY: `out.len()` adjacent values at `src`; each path only where the CPU has its instructions.
        unsafe {
            if is_x86_feature_detected!("avx512f") {
                return round_avx512(src, out);
            }
            if is_x86_feature_detected!("f16c") && is_x86_feature_detected!("avx") {
                return round_f16c(src, out);
            }
        }
    }
    for (i, out) in out.iter_mut().enumerate() {
        // SAFETY: value `i` of the line.
        out.write(round_to_f16(unsafe { *src.offset(i as isize * step) }));
    }
}

/// [`round_line`] on adjacent values, 16 at a time (`vcvtps2ph` then `vcvtph2ps` on a zmm).
///
/// # Safety
/// `out.len()` values at `src`; the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn round_avx512(src: *const f32, out: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let n = out.len();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: values i..i + 16 of both lines.
        unsafe {
            let x = _mm512_loadu_ps(src.add(i));
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
            _mm512_storeu_ps(out.as_mut_ptr().add(i).cast(), _mm512_cvtph_ps(h));
        }
        i += 16;
    }
    for (j, out) in out.iter_mut().enumerate().skip(i) {
        // SAFETY: value j of the line.
        out.write(round_to_f16(unsafe { *src.add(j) }));
    }
}

/// [`round_line`] on adjacent values, 8 at a time (F16C on a ymm).
///
/// # Safety
/// `out.len()` values at `src`; the CPU has AVX and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn round_f16c(src: *const f32, out: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let n = out.len();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: values i..i + 8 of both lines.
        unsafe {
            let x = _mm256_loadu_ps(src.add(i));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
            _mm256_storeu_ps(out.as_mut_ptr().add(i).cast(), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for (j, out) in out.iter_mut().enumerate().skip(i) {
        // SAFETY: value j of the line.
        out.write(round_to_f16(unsafe { *src.add(j) }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values where f16 rounding has something to do: ties (to even), the largest f16 and the
    /// overflow past it, the smallest normal and the subnormals below it, the underflow to zero,
    /// signs, infinities; then a sweep over every f32 exponent f16 can hold and beyond.
    fn hard_values() -> Vec<f32> {
        let mut values = vec![
            0.0, -0.0, 1.0, -1.0, 65504.0, -65504.0, 65519.0, 65520.0, -65520.0, 1e6, f32::MAX, f32::INFINITY, f32::NEG_INFINITY,
            6.103_515_6e-5,  // 2^-14, the smallest normal f16
            6.097_555e-5,    // just below it: a subnormal
            5.960_464_5e-8,  // 2^-24, the smallest subnormal
            2.980_232_2e-8,  // 2^-25: the tie between 0 and 2^-24, to even (0)
            2.980_233e-8,    // just above the tie: 2^-24
            -8.940_697e-8,   // -1.5·2^-24: a tie, to even (-2^-23)
            1e-10, f32::MIN_POSITIVE, 1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 2049.0, 2051.0, 0.1, 1.0 / 3.0,
        ];
        let mut state = 0x2545_f491u32;
        for exponent in -30..=18 {
            for _ in 0..40 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let mantissa = 1.0 + (state >> 8) as f32 / (1u32 << 24) as f32;
                let sign = if state & 1 == 0 { 1.0 } else { -1.0 };
                values.push(sign * mantissa * 2f32.powi(exponent));
            }
        }
        values
    }

    /// Whether two rounded values are the same f16 (NaN is any NaN).
    fn same(x: f32, y: f32) -> bool {
        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
    }

    #[test]
    fn the_scalar_rounding_is_f16s() {
        assert_eq!(round_to_f16(65504.0), 65504.0);
        assert_eq!(round_to_f16(65519.0), 65504.0, "below the half-way point to 2^16 rounds down");
        assert_eq!(round_to_f16(65520.0), f32::INFINITY, "overflow");
        assert_eq!(round_to_f16(-1e6), f32::NEG_INFINITY);
        assert_eq!(round_to_f16(5.960_464_5e-8), 2f32.powi(-24), "the smallest subnormal is kept");
        assert_eq!(round_to_f16(2.980_232_2e-8), 0.0, "the tie at 2^-25 goes to even: zero");
        assert_eq!(round_to_f16(1.5 * 2f32.powi(-24)), 2f32.powi(-23), "the tie at 1.5·2^-24 goes to even");
        assert_eq!(round_to_f16(1e-10), 0.0, "underflow");
        assert_eq!(round_to_f16(1.0 + 2f32.powi(-11)), 1.0, "a tie to even (down)");
        assert_eq!(round_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 1.0 + 2f32.powi(-9), "a tie to even (up)");
        assert!(round_to_f16(f32::NAN).is_nan());
    }

    /// `len` values of `src`, `step` apart, through `round`.
    fn line(src: &[f32], step: usize, len: usize, round: unsafe fn(*const f32, &mut [MaybeUninit<f32>])) -> Vec<f32> {
        assert!(len == 0 || (len - 1) * step < src.len());
        let mut out = Vec::with_capacity(len);
        // SAFETY: `len` values `step` apart lie inside `src` (asserted); `round` writes all of `out`.
        unsafe {
            round(src.as_ptr(), &mut out.spare_capacity_mut()[..len]);
            out.set_len(len);
        }
        out
    }

    /// Every path of [`round_line`] (16 and 8 at a time with their tails, strided) rounds as `half`.
    #[test]
    fn every_line_path_rounds_as_half() {
        let mut values = hard_values();
        values.push(f32::NAN);
        let want: Vec<f32> = values.iter().map(|&x| round_to_f16(x)).collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 33, values.len()] {
            // SAFETY (of each path): as `line` calls it; F16C only where the CPU has it.
            let out = line(&values, 1, len, |src, out| unsafe { round_line(src, 1, out) });
            for (i, (&got, &want)) in out.iter().zip(&want).enumerate() {
                assert!(same(got, want), "length {len}, value {i} ({:e}): {got:e}, want {want:e}", values[i]);
            }
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("f16c") && is_x86_feature_detected!("avx") {
                let out = line(&values, 1, len, |src, out| unsafe { round_f16c(src, out) });
                assert!(out.iter().zip(&want).all(|(&x, &y)| same(x, y)), "F16C, length {len}");
            }
        }
        let out = line(&values, 3, values.len() / 3, |src, out| unsafe { round_line(src, 3, out) });
        assert!(out.iter().enumerate().all(|(i, &x)| same(x, want[3 * i])), "strided");
    }

    use super::super::test_values::values as random;

    /// The f16 product equals, bit for bit, the f32 GEMM of inputs rounded beforehand: in every
    /// layout the kernels multiply (rows, transposed, strided), accumulating or not, on one thread
    /// or several, with values that overflow f16 (→ ±inf in the product) and that underflow.
    #[test]
    fn the_product_is_the_f32_gemm_of_rounded_inputs() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("a thread pool");
        for (m, n, k) in [(1, 1, 1), (5, 7, 3), (17, 33, 100), (13, 40, 0), (300, 260, 520)] {
            // Three kinds of storage for a `rows × cols` matrix: rows adjacent, columns adjacent, neither.
            for layout in 0..3 {
                for accumulate in [false, true] {
                    for scale in [1.0, 1e-6, 2e5] {
                        let (a_storage, b_storage) = (random(m * k * 2 + 2, 1, scale), random(k * n * 2 + 2, 2, 1.0));
                        let view = |values: &[f32], rows: usize, cols: usize| match layout {
                            0 => Matrix::rows_of(values, rows, cols, cols),
                            1 => Matrix::rows_of(values, cols, rows, rows).t(),
                            _ => Matrix { ptr: values.as_ptr(), rows, cols, row_stride: 2 * cols as isize, col_stride: 2 },
                        };
                        let a_rounded: Vec<f32> = a_storage.iter().map(|&x| round_to_f16(x)).collect();
                        let b_rounded: Vec<f32> = b_storage.iter().map(|&x| round_to_f16(x)).collect();
                        let initial = random(m * n, 3, 1.0);
                        let (mut ours, mut reference) = (initial.clone(), initial.clone());
                        // The views are made inside the pool's thread (a raw pointer does not cross threads).
                        pool.install(|| {
                            // SAFETY: `m × n` destinations; the views lie inside their storage.
                            unsafe {
                                gemm_into(ours.as_mut_ptr(), n, view(&a_storage, m, k), view(&b_storage, k, n), accumulate, true);
                                gemm_f32(reference.as_mut_ptr(), n, view(&a_rounded, m, k), view(&b_rounded, k, n), accumulate, true);
                            }
                        });
                        let what = format!("{m}x{n}x{k} layout {layout} accumulate {accumulate} scale {scale:e}");
                        assert!(ours.iter().zip(&reference).all(|(&x, &y)| same(x, y)), "{what}");
                        if scale == 2e5 && k > 0 {
                            // Inputs past 65504 are infinite in f16: their sums are ±inf or NaN.
                            assert!(ours.iter().any(|x| !x.is_finite()), "{what}");
                        }
                        if scale == 1e-6 && k > 0 && !accumulate {
                            // Values of ~1e-6 keep ~4 significant bits as f16 subnormals: the product moves.
                            let mut f32s = vec![0.0; m * n];
                            // SAFETY: as above.
                            unsafe { gemm_f32(f32s.as_mut_ptr(), n, view(&a_storage, m, k), view(&b_storage, k, n), false, false) };
                            assert_ne!(ours, f32s, "{what}");
                        }
                    }
                }
            }
        }
    }
}
