//! 8-bit weights with one absmax per output row (LLM.int8's weight format, Dettmers et al. 2022,
//! without its outlier columns) exactly as bitsandbytes computes them: `CB` and `SCB` of
//! `bitsandbytes.functional.int8_vectorwise_quant(W)` (threshold 0) and the values of
//! `int8_vectorwise_dequant` (checked against bitsandbytes 0.50.2 on
//! `tests/fixtures/int8_reference.safetensors`).
//!
//! Layout: Hugging Face's Linear weight `[out, in]` row-major, one f32 scale per row (output
//! feature): each output's weights are one contiguous run of bytes, what a product `x·Wᵀ`
//! streams. Burn's `Linear` stores `[in, out]`; [`Int8Matrix::from_linear_weight`] transposes it.
//!
//! - Scale: the row's absmax `a` (bitsandbytes' `SCB`, f32).
//! - Code: `round(x · ((1/a) · 127))` in f32 (bitsandbytes writes `127.0 / row_stats`, which torch
//!   computes as a reciprocal times 127), halves to even (`torch.round`); a zero row gives
//!   `0 · inf = NaN`, and a row of subnormals `±inf`, which the int8 conversion makes 0.
//! - Dequantized: `(q · a) · (1/127)`, two f32 products with bitsandbytes' f32 reciprocal.

use crate::error::{GptError, Result};

/// `1/127` as bitsandbytes writes it (`7.874015718698502e-3`), which torch multiplies in f32.
#[allow(clippy::excessive_precision)]
pub const INV_127: f32 = 7.874015718698502e-3;

/// A matrix of int8 values: `rows × cols` row-major (`[out, in]` for a Linear weight), one f32
/// absmax per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    values: Vec<i8>,
    scales: Vec<f32>,
}

impl Int8Matrix {
    /// Quantizes `values`, a `[rows, cols]` row-major matrix named `name` (in errors). Non-finite
    /// values and a length that is not `rows · cols` are errors.
    pub fn quantize(name: &str, values: &[f32], [rows, cols]: [usize; 2]) -> Result<Self> {
        if rows * cols == 0 || values.len() != rows * cols {
            return Err(GptError::Tensor(format!("tensor `{name}`: {} values for an int8 matrix of shape [{rows}, {cols}]", values.len())));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(GptError::Tensor(format!("tensor `{name}`: value {i} is {}; int8 quantizes finite values only", values[i])));
        }
        let mut quantized = Vec::with_capacity(values.len());
        let mut scales = Vec::with_capacity(rows);
        for row in values.chunks_exact(cols) {
            let absmax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // Python's `127.0 / tensor` is torch's `reciprocal(tensor) * 127`: two roundings,
            // which put some values on the other side of a half (tested).
            let inverse = (1.0 / absmax) * 127.0;
            quantized.extend(row.iter().map(|&x| code(x * inverse)));
            scales.push(absmax);
        }
        Ok(Self { rows, cols, values: quantized, scales })
    }

    /// Quantizes a Burn `Linear` weight (`[d_in, d_out]` row-major) as the `[d_out, d_in]` matrix
    /// Hugging Face stores and bitsandbytes quantizes.
    pub fn from_linear_weight(name: &str, weight: &[f32], [d_in, d_out]: [usize; 2]) -> Result<Self> {
        if weight.len() != d_in * d_out {
            return Err(GptError::Tensor(format!("tensor `{name}`: {} values for a Linear weight of shape [{d_in}, {d_out}]", weight.len())));
        }
        let transposed: Vec<f32> = (0..d_out).flat_map(|o| (0..d_in).map(move |i| weight[i * d_out + o])).collect();
        Self::quantize(name, &transposed, [d_out, d_in])
    }

    /// A matrix from stored parts (bitsandbytes' `CB` and `SCB`), checked for consistent lengths.
    pub fn from_parts(name: &str, [rows, cols]: [usize; 2], values: Vec<i8>, scales: Vec<f32>) -> Result<Self> {
        if rows * cols == 0 || values.len() != rows * cols || scales.len() != rows {
            return Err(GptError::Tensor(format!(
                "tensor `{name}`: {} values and {} scales for an int8 matrix of shape [{rows}, {cols}] (expected {} and {rows})",
                values.len(),
                scales.len(),
                rows * cols
            )));
        }
        Ok(Self { rows, cols, values, scales })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Every value, row-major (bitsandbytes' `CB`).
    pub fn values(&self) -> &[i8] {
        &self.values
    }

    /// Row `r`'s values.
    #[inline]
    pub fn row(&self, r: usize) -> &[i8] {
        &self.values[r * self.cols..(r + 1) * self.cols]
    }

    /// One absmax per row (bitsandbytes' `SCB`).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Bytes held: one a value and four a row (about 1.0 byte a value).
    pub fn size_bytes(&self) -> usize {
        self.values.len() + 4 * self.scales.len()
    }

    /// The whole matrix in f32, `[rows, cols]` (bitsandbytes' `int8_vectorwise_dequant`). For
    /// tests and `materialize()`: products dequantize a few rows at a time.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// Row `r` dequantized into `out` (`cols` values).
    ///
    /// # Panics
    /// When `out` is not one row long.
    #[inline]
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.cols, "one row of an int8 matrix");
        let scale = self.scales[r];
        for (y, &q) in out.iter_mut().zip(self.row(r)) {
            *y = dequantize_value(q, scale);
        }
    }
}

/// One value read back: `(q · a) · (1/127)`, bitsandbytes' two f32 products.
#[inline]
pub fn dequantize_value(q: i8, scale: f32) -> f32 {
    (f32::from(q) * scale) * INV_127
}

/// `scaled` (`x · 127/a`, within ±127 up to rounding) rounded half to even; NaN and ±inf (a zero
/// or subnormal row's) are 0, as torch's float-to-int8 conversion gives on x86-64.
#[inline]
fn code(scaled: f32) -> i8 {
    if scaled.is_finite() { scaled.round_ties_even() as i8 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_support::{Reference, f32_bits, weights};

    /// Every value reads back within half a step (`a/254`) of itself, the row's absmax exactly
    /// (±127), and the codes are the rounded scaled values.
    #[test]
    fn quantize_then_dequantize_is_within_half_a_step() {
        for (seed, [rows, cols]) in [[48, 64], [23, 37], [1, 1], [3, 200]].into_iter().enumerate() {
            let w = weights(rows * cols, seed as u64);
            let q = Int8Matrix::quantize("w", &w, [rows, cols]).unwrap();
            let d = q.dequantize();
            for r in 0..rows {
                let row = &w[r * cols..(r + 1) * cols];
                let a = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert_eq!(q.scales()[r], a);
                assert!(q.row(r).iter().any(|&c| c.unsigned_abs() == 127), "row {r}: its absmax is ±127");
                for (i, (&x, &c)) in row.iter().zip(q.row(r)).enumerate() {
                    assert!((f32::from(c) - x * 127.0 / a).abs() <= 0.5 + 1e-4, "row {r}, value {i}: {x} → {c}");
                    let y = d[r * cols + i];
                    assert!((x - y).abs() <= a / 254.0 * (1.0 + 1e-5), "row {r}, value {i}: {x} → {y}");
                }
            }
        }
    }

    /// Halves round to even, a zero row and a row of subnormals give zeros, and the scale is
    /// `(1/a)·127` (torch's): `x·127/a` would be 63.499996 here, bitsandbytes' 63.500004 → 64.
    #[test]
    fn ties_zero_and_subnormal_rows() {
        let q = Int8Matrix::quantize("w", &[0.078_613_28, 0.039_306_64], [1, 2]).unwrap();
        assert_eq!(q.values(), [127, 64]);
        let q = Int8Matrix::quantize("w", &[127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -3.5], [1, 8]).unwrap();
        assert_eq!(q.values(), [127, 0, 2, 2, 0, -2, 126, -4]);
        let q = Int8Matrix::quantize("w", &[0.0, 0.0, 1e-39, -1e-39], [2, 2]).unwrap();
        assert_eq!((q.values(), q.scales()), (&[0i8; 4][..], &[0.0, 1e-39][..]));
        assert!(q.dequantize().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn a_linear_weight_is_quantized_transposed() {
        let (d_in, d_out) = (37, 23);
        let w = weights(d_in * d_out, 3); // Burn's [in, out]
        let hf: Vec<f32> = (0..d_out).flat_map(|o| (0..d_in).map(|i| w[i * d_out + o]).collect::<Vec<_>>()).collect();
        assert_eq!(Int8Matrix::from_linear_weight("w", &w, [d_in, d_out]).unwrap(), Int8Matrix::quantize("w", &hf, [d_out, d_in]).unwrap());
    }

    #[test]
    fn bad_input_is_an_error_naming_the_tensor() {
        let message = |r: Result<Int8Matrix>| r.unwrap_err().to_string();
        assert!(message(Int8Matrix::quantize("h.0.mlp.c_fc.weight", &[0.0; 5], [2, 3])).contains("`h.0.mlp.c_fc.weight`: 5 values"));
        assert!(message(Int8Matrix::quantize("w", &[], [0, 3])).contains("`w`"));
        assert!(message(Int8Matrix::quantize("q_proj", &[0.0, f32::INFINITY], [1, 2])).contains("`q_proj`: value 1 is inf"));
        assert!(message(Int8Matrix::from_linear_weight("o_proj", &[0.0; 5], [2, 3])).contains("`o_proj`: 5 values"));
        assert!(message(Int8Matrix::from_linear_weight("up", &[0.0, f32::NAN], [2, 1])).contains("`up`: value 1 is NaN"));
        assert!(message(Int8Matrix::from_parts("w", [2, 3], vec![0; 6], vec![1.0])).contains("expected 6 and 2"));
    }

    /// `tests/fixtures/int8_reference.safetensors`: bitsandbytes 0.50.2's `int8_vectorwise_quant`
    /// and `int8_vectorwise_dequant` on CPU, from scripts/reference/int8_reference.py. Every byte
    /// of `CB` and every f32 bit pattern of `SCB` and of the dequantized values is equal.
    #[test]
    fn quantized_bytes_and_values_equal_bitsandbytes() {
        let fixture = Reference::open("int8_reference.safetensors");
        let bits = |name: &str| fixture.bits(name);
        for name in ["aligned", "ragged", "ties", "wide"] {
            let [rows, cols] = fixture.shape(&format!("{name}.weight"))[..] else { panic!("{name}: 2-D") };
            let weight = fixture.values(&format!("{name}.weight"));
            let q = Int8Matrix::quantize(name, &weight, [rows, cols]).unwrap();
            let cb: Vec<i8> = fixture.bytes(&format!("{name}.CB"), safetensors::Dtype::I8).into_iter().map(|b| b as i8).collect();
            let differ: Vec<(usize, f32, i8, i8)> = (0..cb.len()).filter(|&i| q.values()[i] != cb[i]).map(|i| (i, weight[i], q.values()[i], cb[i])).collect();
            assert!(differ.is_empty(), "{name}: CB differs at (index, value, ours, bitsandbytes's) {differ:?}");
            assert_eq!(f32_bits(q.scales()), bits(&format!("{name}.SCB")), "{name}: SCB");
            assert_eq!(f32_bits(&q.dequantize()), bits(&format!("{name}.dequantized")), "{name}: dequantized");
        }
    }
}
