//! Products by an int8 weight (`--quantize int8`, [`Int8Matrix`] `[rows, cols]` = HF's
//! `[out, in]`, one absmax per row) on f32 activations, reading the weight as stored: one byte a
//! value, a quarter of the f32 weight's bytes, which is what decoding is bound by.
//!
//! - Up to [`STREAMING_MAX_ROWS`] rows of `x` (decoding): a streaming dot product per output
//!   feature, its bytes sign-extended and converted to f32 in registers and multiplied into up to
//!   four rows of `x` at once; the row's scale `a/127` is applied once, to the sums.
//! - More rows: panels of weight rows (`super::parallel`) dequantized to f32 (bitsandbytes' values,
//!   bit for bit) into the f32 GEMM, one panel per task, as `super::nf4` does.
//!
//! Either way the result is the f32 product by the dequantized weight up to the order of the sums
//! (and, streaming, where the scale is applied).

use std::sync::Arc;

use burn::backend::Flex;
use burn::prelude::*;

use super::nf4::Isa;
use super::parallel::{panels_times_transposed, par_map};
use super::tensor::{FlexInput, contiguous, flex_from, slice};
use crate::backend::STREAMING_MAX_ROWS;
use crate::quant::Int8Matrix;
use crate::quant::int8::{INV_127, dequantize_value};

/// Output features per parallel task of the streaming product (fewer is not worth a thread hop).
const ROWS_PER_TASK_MIN: usize = 64;
/// `x·Wᵀ + b` (`x` `[N, in]`, `bias` `[out]`) with `W` an int8 `[out, in]` matrix: the layer of
/// `--quantize int8`, which is for inference. `None` for autodiff tensors (the caller then takes
/// Burn's ops on the dequantized weight, which keep the graph), tensors that are not f32 on Flex,
/// or shapes that do not match.
pub fn int8_linear(x: &Tensor<2>, weight: &Arc<Int8Matrix>, bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    let plain = |tensor: FlexInput| match tensor {
        FlexInput::Plain(flex) => Some(contiguous(flex)),
        FlexInput::Tracked(_) => None,
    };
    let xf = plain(FlexInput::of(x)?)?;
    let bias = match bias {
        Some(bias) => Some(plain(FlexInput::of(bias)?)?),
        None => None,
    };
    let (n, k, m) = (xf.layout().shape()[0], weight.cols(), weight.rows());
    if xf.layout().shape().to_vec() != [n, k] || bias.as_ref().is_some_and(|b| b.layout().shape().to_vec() != [m]) {
        return None;
    }
    let y = int8_times_transposed(slice(&xf), n, weight, bias.as_ref().map(slice));
    Some(Tensor::from_primitive::<Flex>(flex_from(y, vec![n, m])))
}

/// `y = x·Wᵀ (+ bias)`: `x` `[n, w.cols()]` row-major, `y` `[n, w.rows()]`, `bias` `[w.rows()]`.
///
/// # Panics
/// When the lengths do not match (the callers check the shapes).
pub fn int8_times_transposed(x: &[f32], n: usize, w: &Int8Matrix, bias: Option<&[f32]>) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(x.len() == n * cols && bias.is_none_or(|b| b.len() == rows), "int8_times_transposed: [{n}, {cols}]·[{rows}, {cols}]ᵀ");
    match n <= STREAMING_MAX_ROWS {
        true => streaming_times_transposed(x, n, w, bias, Isa::detect()),
        false => panels(x, n, w, bias, Isa::detect()),
    }
}

/// The streaming `x·Wᵀ (+ bias)`: contiguous ranges of output features per task, each weight row
/// read once for all rows of `x`.
fn streaming_times_transposed(x: &[f32], n: usize, w: &Int8Matrix, bias: Option<&[f32]>, isa: Isa) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    let tasks = rayon::current_num_threads().clamp(1, rows.div_ceil(ROWS_PER_TASK_MIN));
    let per_task = rows.div_ceil(tasks);
    // Up to four rows of x per pass over a weight row (the kernels' accumulators stay in registers).
    let groups: Vec<Vec<&[f32]>> = (0..n).step_by(4).map(|m0| (m0..(m0 + 4).min(n)).map(|m| &x[m * cols..(m + 1) * cols]).collect()).collect();
    // Each task's outputs `[its rows, n]`, then put in `[n, rows]`.
    let parts = par_map(rows.div_ceil(per_task), |task| {
        let (r0, r1) = (task * per_task, ((task + 1) * per_task).min(rows));
        let mut out = vec![0.0f32; (r1 - r0) * n];
        for (r, dots) in (r0..r1).zip(out.chunks_exact_mut(n)) {
            for (xs, dots) in groups.iter().zip(dots.chunks_mut(4)) {
                row_dots(isa, w.row(r), xs, dots);
            }
            // (a·Σ q·x)·(1/127): the dequantized weight's two products, applied to the sum.
            let scale = w.scales()[r];
            dots.iter_mut().for_each(|d| *d = (*d * scale) * INV_127);
        }
        out
    });
    let mut y = vec![0.0f32; n * rows];
    for (task, part) in parts.iter().enumerate() {
        for (dr, dots) in part.chunks_exact(n).enumerate() {
            let r = task * per_task + dr;
            for (m, &dot) in dots.iter().enumerate() {
                y[m * rows + r] = dot + bias.map_or(0.0, |b| b[r]);
            }
        }
    }
    y
}

/// `dots[m] = Σ q·x[m]` for one weight row's values `q` and up to four rows of x.
fn row_dots(isa: Isa, q: &[i8], xs: &[&[f32]], dots: &mut [f32]) {
    macro_rules! run {
        ($kernel:ident) => {
            match xs {
                // SAFETY: `isa` was detected on this CPU; every row of x is the weight row's length.
                &[a] => dots.copy_from_slice(&unsafe { $kernel::<1>(q, [a]) }),
                &[a, b] => dots.copy_from_slice(&unsafe { $kernel::<2>(q, [a, b]) }),
                &[a, b, c] => dots.copy_from_slice(&unsafe { $kernel::<3>(q, [a, b, c]) }),
                &[a, b, c, d] => dots.copy_from_slice(&unsafe { $kernel::<4>(q, [a, b, c, d]) }),
                _ => unreachable!("one to four rows"),
            }
        };
    }
    assert!(xs.iter().all(|x| x.len() == q.len()), "a row of x per weight row");
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => run!(dots_avx512),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => run!(dots_avx2),
        Isa::Portable => {
            for (x, dot) in xs.iter().zip(dots.iter_mut()) {
                *dot = dot_portable(q, x);
            }
        }
    }
}

/// One dot product in plain Rust, in 8 lanes (which keep the compiler free to vectorise).
fn dot_portable(q: &[i8], x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (q_main, x_main) = (q.chunks_exact(8), x.chunks_exact(8));
    let tail: f32 = q_main.remainder().iter().zip(x_main.remainder()).map(|(&q, &x)| f32::from(q) * x).sum();
    for (q8, x8) in q_main.zip(x_main) {
        for j in 0..8 {
            lanes[j] += f32::from(q8[j]) * x8[j];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// [`row_dots`] with AVX-512: 64 bytes a step, each 16 sign-extended to 32 bits and converted
/// (`vpmovsxbd` + `vcvtdq2ps`), four sums per row of x (four dependency chains, so that one row
/// of x alone keeps the FMA units busy); a last 16 and a tail of fewer value by value.
///
/// # Safety
/// The CPU has AVX-512F; every row of x is `q.len()` long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512<const R: usize>(q: &[i8], xs: [&[f32]; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    debug_assert!(xs.iter().all(|x| x.len() == q.len()));
    let k = q.len();
    let widen = |at: usize| {
        // SAFETY: the callers read bytes at..at + 16 inside the row.
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.as_ptr().add(at).cast()))) }
    };
    let mut sums = [[_mm512_setzero_ps(); R]; 4];
    let mut at = 0;
    while at + 64 <= k {
        let w = [widen(at), widen(at + 16), widen(at + 32), widen(at + 48)];
        for (j, w) in w.into_iter().enumerate() {
            for r in 0..R {
                // SAFETY: values at + 16j..+16 are inside every row of x.
                sums[j][r] = _mm512_fmadd_ps(w, unsafe { _mm512_loadu_ps(xs[r].as_ptr().add(at + 16 * j)) }, sums[j][r]);
            }
        }
        at += 64;
    }
    while at + 16 <= k {
        let w = widen(at);
        for r in 0..R {
            // SAFETY: values at..at + 16 are inside every row of x.
            sums[0][r] = _mm512_fmadd_ps(w, unsafe { _mm512_loadu_ps(xs[r].as_ptr().add(at)) }, sums[0][r]);
        }
        at += 16;
    }
    std::array::from_fn(|r| {
        let tail: f32 = q[at..].iter().zip(&xs[r][at..]).map(|(&q, &x)| f32::from(q) * x).sum();
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(sums[0][r], sums[1][r]), _mm512_add_ps(sums[2][r], sums[3][r]))) + tail
    })
}

/// [`row_dots`] with AVX2: 16 bytes a step as two vectors of 8 (`vpmovsxbd` + `vcvtdq2ps`), two
/// sums per row of x (16 registers hold four rows' sums and the weights); a tail value by value.
///
/// # Safety
/// The CPU has AVX2 and FMA; every row of x is `q.len()` long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2<const R: usize>(q: &[i8], xs: [&[f32]; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    debug_assert!(xs.iter().all(|x| x.len() == q.len()));
    let k = q.len();
    let widen = |at: usize| {
        // SAFETY: the callers read bytes at..at + 8 inside the row.
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(q.as_ptr().add(at).cast()))) }
    };
    let mut sums = [[_mm256_setzero_ps(); R]; 2];
    let mut at = 0;
    while at + 16 <= k {
        let w = [widen(at), widen(at + 8)];
        for (j, w) in w.into_iter().enumerate() {
            for r in 0..R {
                // SAFETY: values at + 8j..+8 are inside every row of x.
                sums[j][r] = _mm256_fmadd_ps(w, unsafe { _mm256_loadu_ps(xs[r].as_ptr().add(at + 8 * j)) }, sums[j][r]);
            }
        }
        at += 16;
    }
    std::array::from_fn(|r| {
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(sums[0][r], sums[1][r])) };
        let tail: f32 = q[at..].iter().zip(&xs[r][at..]).map(|(&q, &x)| f32::from(q) * x).sum();
        lanes.iter().sum::<f32>() + tail
    })
}

/// `x·Wᵀ (+ bias)` by dequantized panels of `W`'s rows and the GEMM, one panel per task.
fn panels(x: &[f32], n: usize, w: &Int8Matrix, bias: Option<&[f32]>, isa: Isa) -> Vec<f32> {
    let cols = w.cols();
    panels_times_transposed(x, n, [w.rows(), cols], bias, |r0, r1, panel| {
        for (r, row) in (r0..r1).zip(panel.chunks_exact_mut(cols)) {
            dequantize_row(isa, w.row(r), w.scales()[r], row);
        }
    })
}

/// One weight row dequantized into `out`: `(q·a)·(1/127)` per value, the same two f32 products
/// as [`dequantize_value`] (so the same bits), 16 or 8 at a time.
fn dequantize_row(isa: Isa, q: &[i8], scale: f32, out: &mut [f32]) {
    assert_eq!(q.len(), out.len(), "one weight row");
    let done = match isa {
        // SAFETY: `isa` was detected on this CPU; the lengths are equal.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { dequantize_avx512(q, scale, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { dequantize_avx2(q, scale, out) },
        Isa::Portable => 0,
    };
    for (y, &v) in out[done..].iter_mut().zip(&q[done..]) {
        *y = dequantize_value(v, scale);
    }
}

/// The whole 16s of [`dequantize_row`] with AVX-512; returns how many values it wrote.
///
/// # Safety
/// The CPU has AVX-512F; `out` is `q.len()` long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dequantize_avx512(q: &[i8], scale: f32, out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let (a, c) = (_mm512_set1_ps(scale), _mm512_set1_ps(INV_127));
    let whole = q.len() / 16 * 16;
    for at in (0..whole).step_by(16) {
        // SAFETY: values at..at + 16 are inside `q` and `out`.
        unsafe {
            let v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.as_ptr().add(at).cast())));
            _mm512_storeu_ps(out.as_mut_ptr().add(at), _mm512_mul_ps(_mm512_mul_ps(v, a), c));
        }
    }
    whole
}

/// The whole 8s of [`dequantize_row`] with AVX2; returns how many values it wrote.
///
/// # Safety
/// The CPU has AVX2; `out` is `q.len()` long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dequantize_avx2(q: &[i8], scale: f32, out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let (a, c) = (_mm256_set1_ps(scale), _mm256_set1_ps(INV_127));
    let whole = q.len() / 8 * 8;
    for at in (0..whole).step_by(8) {
        // SAFETY: values at..at + 8 are inside `q` and `out`.
        unsafe {
            let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(q.as_ptr().add(at).cast())));
            _mm256_storeu_ps(out.as_mut_ptr().add(at), _mm256_mul_ps(_mm256_mul_ps(v, a), c));
        }
    }
    whole
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::flex::nf4::tests::{assert_close, isas, values};

    fn quantized(rows: usize, cols: usize, seed: u64) -> Int8Matrix {
        Int8Matrix::quantize("w", &values(rows * cols, seed, 0.1), [rows, cols]).unwrap()
    }

    /// `x·Wᵀ (+ bias)` in f64 by the dequantized weight, with the sum of |terms| of each value
    /// (the scale of the f32 rounding error).
    fn reference(x: &[f32], w: &Int8Matrix, n: usize, bias: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
        let (rows, cols, d) = (w.rows(), w.cols(), w.dequantize());
        let (mut out, mut magnitude) = (vec![0.0; n * rows], vec![0.0; n * rows]);
        for m in 0..n {
            for r in 0..rows {
                let b = bias.map_or(0.0, |b| f64::from(b[r]));
                out[m * rows + r] = b;
                magnitude[m * rows + r] = b.abs();
                for i in 0..cols {
                    let term = f64::from(x[m * cols + i]) * f64::from(d[r * cols + i]);
                    out[m * rows + r] += term;
                    magnitude[m * rows + r] += term.abs();
                }
            }
        }
        (out, magnitude)
    }

    /// The SIMD dequantization equals bitsandbytes' values (`Int8Matrix::dequantize`) bit for
    /// bit, rows with and without a tail.
    #[test]
    fn dequantized_rows_are_exact() {
        for cols in [1, 7, 8, 16, 37, 200] {
            let w = quantized(5, cols, cols as u64);
            let all = w.dequantize();
            for isa in isas() {
                for r in 0..5 {
                    let mut row = vec![f32::NAN; cols];
                    dequantize_row(isa, w.row(r), w.scales()[r], &mut row);
                    assert!(row.iter().zip(&all[r * cols..]).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?}, {cols} columns, row {r}");
                }
            }
        }
    }

    /// The streaming product on every instruction set this CPU has, against the f64 product by
    /// the dequantized weight: 1 to 16 rows of x (every group size), rows of W that are and are
    /// not multiples of the kernels' steps (64, 16, 8), with a bias; enough rows for several tasks.
    #[test]
    fn streaming_product_matches_the_dequantized_weight() {
        for (n, rows, cols) in [(1, 40, 64), (2, 150, 200), (3, 17, 37), (4, 9, 5), (6, 130, 128), (16, 260, 256)] {
            let w = quantized(rows, cols, n as u64);
            let (x, bias) = (values(n * cols, 7, 2.0), values(rows, 8, 1.0));
            let expected = reference(&x, &w, n, Some(&bias));
            for isa in isas() {
                let y = streaming_times_transposed(&x, n, &w, Some(&bias), isa);
                assert_close(&format!("{isa:?} [{n}, {cols}]·[{rows}, {cols}]ᵀ"), &y, &expected);
            }
            assert_close("dispatch", &int8_times_transposed(&x, n, &w, Some(&bias)), &expected);
        }
    }

    /// The Burn-level layer: plain f32 Flex tensors take the kernels; autodiff tensors and shapes
    /// that do not fit are handed back.
    #[test]
    fn int8_linear_takes_plain_tensors_only() {
        let (n, rows, cols) = (3, 48, 128);
        let w = Arc::new(quantized(rows, cols, 3));
        let (x, bias) = (values(n * cols, 4, 2.0), values(rows, 5, 1.0));
        let device = Device::flex();
        let x_t = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, cols]), &device);
        let bias_t = Tensor::<1>::from_data(TensorData::new(bias.clone(), [rows]), &device);
        let y = int8_linear(&x_t, &w, Some(&bias_t)).expect("f32 on Flex");
        assert_eq!(y.dims(), [n, rows]);
        assert_close("int8_linear", &y.into_data().try_to_vec::<f32>().unwrap(), &reference(&x, &w, n, Some(&bias)));
        assert!(int8_linear(&x_t.clone().slice(s![.., 0..64]), &w, None).is_none(), "x [3, 64] by a [48, 128] weight");
        let tracked = Tensor::<2>::from_data(TensorData::new(x, [n, cols]), &device.autodiff()).require_grad();
        assert!(int8_linear(&tracked, &w, None).is_none(), "autodiff: Burn's ops");
    }

    /// Many rows (the panel GEMM) on every instruction set, with and without a bias, odd sizes.
    #[test]
    fn panel_product_matches_the_dequantized_weight() {
        for (n, rows, cols, bias) in [(40, 70, 128, true), (17, 300, 1024, false), (33, 23, 37, true), (20, 9, 65, false)] {
            let w = quantized(rows, cols, 11);
            let x = values(n * cols, 12, 2.0);
            let bias = bias.then(|| values(rows, 13, 1.0));
            let expected = reference(&x, &w, n, bias.as_deref());
            for isa in isas() {
                let y = panels(&x, n, &w, bias.as_deref(), isa);
                assert_close(&format!("{isa:?} [{n}, {cols}]·[{rows}, {cols}]ᵀ"), &y, &expected);
            }
            assert_close("dispatch", &int8_times_transposed(&x, n, &w, bias.as_deref()), &expected);
        }
    }
}
