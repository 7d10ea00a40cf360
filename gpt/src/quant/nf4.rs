//! NF4 (4-bit NormalFloat, QLoRA) weights exactly as bitsandbytes stores them: the packed bytes
//! and absmax of `bitsandbytes.functional.quantize_4bit(W, blocksize=64, quant_type="nf4")`, with
//! `compress_statistics=True` for double quantization, and the values of `dequantize_4bit`
//! (checked against bitsandbytes 0.50.2 on `tests/fixtures/nf4_reference.safetensors`).
//!
//! Layout: a matrix is quantized in the order of Hugging Face's Linear weight, `[out, in]`
//! row-major, which is what bitsandbytes flattens. The bytes are then bitsandbytes' own, and each
//! output feature's weights are one contiguous run of bytes: what a product `x·Wᵀ` streams, one
//! dot product per output. Burn's `Linear` stores `[in, out]`; [`Nf4Matrix::from_linear_weight`]
//! transposes it first.
//!
//! - Blocks: 64 consecutive values of the flattened matrix, one f32 absmax each. A block spans two
//!   rows when `in` is not a multiple of 64, and the last one may be partial.
//! - Code: `x` in a block with absmax `a` becomes the index of the nearest [`NF4_CODE`] value to
//!   `x/a`, that is the number of midpoints between adjacent codes that `x·(1/a)` exceeds
//!   (bitsandbytes' CPU path bucketizes over the f32 midpoints; the CUDA `dQuantizeNF4` decision
//!   tree compares with the same midpoints, four of them one ulp apart). A value on a midpoint
//!   takes the lower code.
//! - Packing: element `2j` in the high nibble of byte `j`, `2j + 1` in the low one. An odd count
//!   pads the last low nibble with the code of 0.0 (7), as bitsandbytes pads with 0.0.
//! - Dequantized: `NF4_CODE[q] · a`, one f32 product.
//! - Double quantization: the absmax minus their mean, quantized to 8 bits in blocks of 256 with
//!   bitsandbytes' signed dynamic map ([`DYNAMIC_MAP`]), and read back as `DYNAMIC_MAP[q]·a₂ + mean`.

use crate::error::{GptError, Result};

/// Values per absmax (bitsandbytes' and QLoRA's default block size).
pub const BLOCK: usize = 64;
/// Absmax per second-level absmax in double quantization (bitsandbytes' `blocksize=256`).
pub const DOUBLE_BLOCK: usize = 256;

/// The 16 NF4 values: quantiles of N(0, 1) scaled to [-1, 1], with an exact 0 (bitsandbytes'
/// `get_4bit_type("nf4")` and `nf4_dequantization_lut`, digits as in its source).
#[allow(clippy::excessive_precision)]
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// The midpoints between adjacent NF4 codes, computed in f32 as bitsandbytes' CPU path does
/// (`torch.bucketize` over `(code[i] + code[i + 1]) / 2`). The CUDA kernel's `dQuantizeNF4`
/// hard-codes them as decimal literals, four of which round to the next f32 (tested): a value
/// exactly there can get a neighbouring code on a GPU.
const NF4_MIDPOINTS: [f32; 15] = {
    let mut midpoints = [0.0; 15];
    let mut i = 0;
    while i < 15 {
        midpoints[i] = (NF4_CODE[i] + NF4_CODE[i + 1]) / 2.0;
        i += 1;
    }
    midpoints
};

/// The code of 0.0: the padding nibble, and every value of an all-zero block.
const ZERO_CODE: u8 = 7;

/// bitsandbytes' CPU path divides by `max(absmax, 1e-38)`, so an all-zero block quantizes to
/// zeros instead of NaN.
const TINY: f32 = 1e-38;

/// bitsandbytes' `create_dynamic_map(signed=True)`, the 8-bit code of double quantization. It is
/// computed by torch's vectorised `linspace`, whose last bits depend on the CPU's vector width,
/// so the values are the ones bitsandbytes 0.50.2 gives on an AVX-512 x86-64 CPU (the fixture's).
/// Checkpoints that carry their own map (`nested_quant_map`) may differ in the last bit.
pub const DYNAMIC_MAP: [f32; 256] = [
    -0.99296874, -0.9789063, -0.96484375, -0.9507812, -0.93671876, -0.92265624, -0.9085938, -0.89453125,
    -0.8804687, -0.86640626, -0.85234374, -0.8382813, -0.82421875, -0.8101562, -0.79609376, -0.78203124,
    -0.7679688, -0.75390625, -0.7398437, -0.72578126, -0.7117188, -0.6976563, -0.68359375, -0.6695312,
    -0.65546876, -0.6414063, -0.6273438, -0.61328125, -0.5992187, -0.58515626, -0.5710938, -0.5570313,
    -0.54296875, -0.5289062, -0.5148437, -0.50078124, -0.4867187, -0.47265625, -0.45859373, -0.44453126,
    -0.43046874, -0.41640624, -0.40234375, -0.38828123, -0.37421876, -0.36015624, -0.34609374, -0.33203125,
    -0.31796873, -0.30390626, -0.28984374, -0.27578127, -0.26171875, -0.24765624, -0.23359375, -0.21953125,
    -0.20546874, -0.19140625, -0.17734376, -0.16328125, -0.14921875, -0.13515624, -0.12109375, -0.107031256,
    -0.09859375, -0.09578126, -0.092968754, -0.09015625, -0.08734375, -0.08453125, -0.08171876, -0.07890625,
    -0.07609375, -0.07328125, -0.070468746, -0.067656256, -0.06484375, -0.06203125, -0.059218753, -0.05640625,
    -0.05359375, -0.05078125, -0.04796875, -0.04515625, -0.042343747, -0.03953125, -0.036718752, -0.03390625,
    -0.03109375, -0.028281251, -0.02546875, -0.02265625, -0.019843752, -0.01703125, -0.01421875, -0.01140625,
    -0.00971875, -0.009156249, -0.00859375, -0.00803125, -0.00746875, -0.00690625, -0.00634375, -0.00578125,
    -0.0052187503, -0.0046562497, -0.00409375, -0.0035312497, -0.00296875, -0.00240625, -0.00184375, -0.0012812499,
    -0.0009437501, -0.00083125, -0.00071875006, -0.0006062501, -0.00049375003, -0.00038125002, -0.00026875004, -0.00015625001,
    -8.875e-05, -6.625e-05, -4.375e-05, -2.1249998e-05, -7.75e-06, -3.2500002e-06, -5.5000004e-07, 0.0,
    5.5000004e-07, 3.2500002e-06, 7.75e-06, 2.1249998e-05, 4.375e-05, 6.625e-05, 8.875e-05, 0.00015625001,
    0.00026875004, 0.00038125002, 0.00049375003, 0.0006062501, 0.00071875006, 0.00083125, 0.0009437501, 0.0012812499,
    0.00184375, 0.00240625, 0.00296875, 0.0035312497, 0.00409375, 0.0046562497, 0.0052187503, 0.00578125,
    0.00634375, 0.00690625, 0.00746875, 0.00803125, 0.00859375, 0.009156249, 0.00971875, 0.01140625,
    0.01421875, 0.01703125, 0.019843752, 0.02265625, 0.02546875, 0.028281251, 0.03109375, 0.03390625,
    0.036718752, 0.03953125, 0.042343747, 0.04515625, 0.04796875, 0.05078125, 0.05359375, 0.05640625,
    0.059218753, 0.06203125, 0.06484375, 0.067656256, 0.070468746, 0.07328125, 0.07609375, 0.07890625,
    0.08171876, 0.08453125, 0.08734375, 0.09015625, 0.092968754, 0.09578126, 0.09859375, 0.107031256,
    0.12109375, 0.13515624, 0.14921875, 0.16328125, 0.17734376, 0.19140625, 0.20546874, 0.21953125,
    0.23359375, 0.24765624, 0.26171875, 0.27578127, 0.28984374, 0.30390626, 0.31796873, 0.33203125,
    0.34609374, 0.36015624, 0.37421876, 0.38828123, 0.40234375, 0.41640624, 0.43046874, 0.44453126,
    0.45859373, 0.47265625, 0.4867187, 0.50078124, 0.5148437, 0.5289062, 0.54296875, 0.5570313,
    0.5710938, 0.58515626, 0.5992187, 0.61328125, 0.6273438, 0.6414063, 0.65546876, 0.6695312,
    0.68359375, 0.6976563, 0.7117188, 0.72578126, 0.7398437, 0.75390625, 0.7679688, 0.78203124,
    0.79609376, 0.8101562, 0.82421875, 0.8382813, 0.85234374, 0.86640626, 0.8804687, 0.89453125,
    0.9085938, 0.92265624, 0.93671876, 0.9507812, 0.96484375, 0.9789063, 0.99296874, 1.0,
];

/// The midpoints between adjacent [`DYNAMIC_MAP`] values, as bitsandbytes' CPU kernel computes
/// them (`0.5f * (code[i] + code[i + 1])`).
const DYNAMIC_MIDPOINTS: [f32; 255] = {
    let mut midpoints = [0.0; 255];
    let mut i = 0;
    while i < 255 {
        midpoints[i] = 0.5 * (DYNAMIC_MAP[i] + DYNAMIC_MAP[i + 1]);
        i += 1;
    }
    midpoints
};

/// A matrix of NF4 values: `rows × cols` row-major (`[out, in]` for a Linear weight), two values
/// a byte, one absmax per [`BLOCK`] values of that order.
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4Matrix {
    rows: usize,
    cols: usize,
    packed: Vec<u8>,
    absmax: Absmax,
}

/// The scale of each block: plain f32, or itself quantized (double quantization).
#[derive(Debug, Clone, PartialEq)]
pub enum Absmax {
    F32(Vec<f32>),
    Double(DoubleAbsmax),
}

/// Block absmax quantized to 8 bits (bitsandbytes' `QuantState` with `nested=True`): absmax `i`
/// is `DYNAMIC_MAP[quantized[i]] · absmax[i / 256] + offset`.
#[derive(Debug, Clone, PartialEq)]
pub struct DoubleAbsmax {
    /// One byte per block of the matrix (bitsandbytes' `quant_state.absmax`).
    pub quantized: Vec<u8>,
    /// One f32 per [`DOUBLE_BLOCK`] bytes (`quant_state.state2.absmax`).
    pub absmax: Vec<f32>,
    /// The mean of the original absmax, subtracted before quantizing (`quant_state.offset`).
    pub offset: f32,
}

impl Nf4Matrix {
    /// Quantizes `values`, a `[rows, cols]` row-major matrix named `name` (in errors), with f32
    /// absmax. Non-finite values and a length that is not `rows · cols` are errors.
    pub fn quantize(name: &str, values: &[f32], [rows, cols]: [usize; 2]) -> Result<Self> {
        if rows * cols == 0 || values.len() != rows * cols {
            return Err(GptError::Tensor(format!("tensor `{name}`: {} values for an NF4 matrix of shape [{rows}, {cols}]", values.len())));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(GptError::Tensor(format!("tensor `{name}`: value {i} is {}; NF4 quantizes finite values only", values[i])));
        }
        let mut packed = Vec::with_capacity(values.len().div_ceil(2));
        let mut absmax = Vec::with_capacity(values.len().div_ceil(BLOCK));
        for block in values.chunks(BLOCK) {
            let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let a = max.max(TINY);
            let inverse = 1.0 / a;
            // Whole blocks multiply by the reciprocal and the last partial block divides, as
            // bitsandbytes' CPU path does (one ulp apart in rare cases: a value on a midpoint).
            let whole = block.len() == BLOCK;
            let code = |x: f32| nf4_index((if whole { x * inverse } else { x / a }).clamp(-1.0, 1.0));
            for pair in block.chunks(2) {
                let low = pair.get(1).map_or(ZERO_CODE, |&x| code(x));
                packed.push(code(pair[0]) << 4 | low);
            }
            absmax.push(max);
        }
        Ok(Self { rows, cols, packed, absmax: Absmax::F32(absmax) })
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

    /// A matrix from stored parts (bitsandbytes' `weight` bytes and `quant_state`), checked for
    /// consistent lengths.
    pub fn from_parts(name: &str, [rows, cols]: [usize; 2], packed: Vec<u8>, absmax: Absmax) -> Result<Self> {
        let (n, blocks) = (rows * cols, (rows * cols).div_ceil(BLOCK));
        let absmax_len = match &absmax {
            Absmax::F32(values) => values.len(),
            Absmax::Double(double) if double.absmax.len() != double.quantized.len().div_ceil(DOUBLE_BLOCK) => {
                return Err(GptError::Tensor(format!(
                    "tensor `{name}`: {} second-level absmax for {} quantized absmax (one per {DOUBLE_BLOCK})",
                    double.absmax.len(),
                    double.quantized.len()
                )));
            }
            Absmax::Double(double) => double.quantized.len(),
        };
        if n == 0 || packed.len() != n.div_ceil(2) || absmax_len != blocks {
            return Err(GptError::Tensor(format!(
                "tensor `{name}`: {} packed bytes and {absmax_len} absmax for an NF4 matrix of shape [{rows}, {cols}] (expected {} and {blocks})",
                packed.len(),
                n.div_ceil(2)
            )));
        }
        Ok(Self { rows, cols, packed, absmax })
    }

    /// The same matrix with its absmax quantized to 8 bits (bitsandbytes' `compress_statistics`):
    /// 0.127 bits per value less, the packed values unchanged.
    pub fn double_quantized(self) -> Self {
        match self.absmax {
            Absmax::F32(absmax) => Self { absmax: Absmax::Double(DoubleAbsmax::quantize(&absmax)), ..self },
            Absmax::Double(_) => self,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Two values a byte, the first in the high nibble.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    pub fn absmax(&self) -> &Absmax {
        &self.absmax
    }

    /// The number of blocks (of absmax).
    pub fn blocks(&self) -> usize {
        (self.rows * self.cols).div_ceil(BLOCK)
    }

    /// Bytes held: packed values and absmax (about 0.52 bytes a value, 0.50 doubly quantized).
    pub fn size_bytes(&self) -> usize {
        let absmax = match &self.absmax {
            Absmax::F32(values) => 4 * values.len(),
            Absmax::Double(double) => double.quantized.len() + 4 * double.absmax.len() + 4,
        };
        self.packed.len() + absmax
    }

    /// The absmax of block `block`.
    #[inline]
    pub fn block_scale(&self, block: usize) -> f32 {
        match &self.absmax {
            Absmax::F32(values) => values[block],
            Absmax::Double(double) => double.dequantize(block),
        }
    }

    /// Every block's absmax as f32 (double quantization read back).
    pub fn scales(&self) -> Vec<f32> {
        (0..self.blocks()).map(|b| self.block_scale(b)).collect()
    }

    /// The 4-bit code of value `i` of the flattened matrix.
    #[inline]
    pub fn code(&self, i: usize) -> u8 {
        let byte = self.packed[i / 2];
        if i.is_multiple_of(2) { byte >> 4 } else { byte & 0x0F }
    }

    /// The whole matrix in f32, `[rows, cols]` (bitsandbytes' `dequantize_4bit`). For tests and
    /// merging: products dequantize a few rows at a time.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        self.dequantize_into(0, &mut out);
        out
    }

    /// Values `start..start + out.len()` of the flattened matrix, dequantized into `out`.
    ///
    /// # Panics
    /// When the range is outside the matrix.
    pub fn dequantize_into(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        assert!(end <= self.rows * self.cols, "values {start}..{end} of a [{}, {}] NF4 matrix", self.rows, self.cols);
        let mut i = start;
        while i < end {
            // One block (or the part of it in the range) at a time: one absmax look-up each.
            let block = i / BLOCK;
            let block_end = ((block + 1) * BLOCK).min(end);
            let scale = self.block_scale(block);
            for (j, y) in (i..block_end).zip(&mut out[i - start..]) {
                *y = NF4_CODE[self.code(j) as usize] * scale;
            }
            i = block_end;
        }
    }
}

/// The NF4 code of `scaled` (`x/absmax`, in [-1, 1]): how many midpoints it exceeds.
#[inline]
fn nf4_index(scaled: f32) -> u8 {
    NF4_MIDPOINTS.iter().map(|&m| u8::from(scaled > m)).sum()
}

impl DoubleAbsmax {
    /// bitsandbytes' `quantize_blockwise(absmax - absmax.mean(), blocksize=256)` as its CPU kernel
    /// computes it (csrc/cpu_ops.cpp `quantize_cpu_impl`): each value times the reciprocal of its
    /// block's absmax, then the code of a 65536-bin grid over [-1, 1] (below), not of the value
    /// itself. `absmax` is not empty.
    pub fn quantize(absmax: &[f32]) -> Self {
        // torch's f32 mean; the f64 sum rounded to f32 equals it on the fixture's matrices.
        let offset = (absmax.iter().map(|&a| f64::from(a)).sum::<f64>() / absmax.len() as f64) as f32;
        let centered: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
        let mut quantized = Vec::with_capacity(centered.len());
        let mut second = Vec::with_capacity(centered.len().div_ceil(DOUBLE_BLOCK));
        for block in centered.chunks(DOUBLE_BLOCK) {
            let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if max == 0.0 {
                // The kernel's all-zero block: bytes 0 (dequantized `DYNAMIC_MAP[0] · 0 = 0`).
                quantized.extend(std::iter::repeat_n(0, block.len()));
            } else {
                let inverse = 1.0 / max;
                quantized.extend(block.iter().map(|&c| dynamic_index(c * inverse)));
            }
            second.push(max);
        }
        Self { quantized, absmax: second, offset }
    }

    /// Absmax `i` read back (`dequantize_blockwise` then `+= offset`, two f32 operations).
    #[inline]
    pub fn dequantize(&self, i: usize) -> f32 {
        DYNAMIC_MAP[self.quantized[i] as usize] * self.absmax[i / DOUBLE_BLOCK] + self.offset
    }
}

/// The [`DYNAMIC_MAP`] code of `scaled` as bitsandbytes' CPU kernel picks it: `scaled` goes to
/// bin `⌊((s + 1)/2)·65535 + 0.5⌋` of a grid over [-1, 1] (one fused multiply-add in its x86-64
/// build), and the bin's code is the nearest map value to the bin's left edge `2·bin/65535 - 1`
/// (the number of midpoints below it). Close to a midpoint this can differ from the nearest code
/// of `scaled` itself, which is what the CUDA kernel picks.
fn dynamic_index(scaled: f32) -> u8 {
    let half = (scaled.clamp(-1.0, 1.0) + 1.0) * 0.5;
    let bin = half.mul_add(65535.0, 0.5) as u32; // truncation, as the C++ cast
    let grid = (2.0 * bin as f32) / 65535.0 - 1.0;
    DYNAMIC_MIDPOINTS.partition_point(|&m| m < grid) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_support::{Reference, f32_bits, weights};

    /// Half the widest gap between adjacent codes of `code`.
    fn half_widest_gap(code: &[f32]) -> f32 {
        code.windows(2).map(|w| (w[1] - w[0]) / 2.0).fold(0.0, f32::max)
    }

    /// The thresholds of bitsandbytes' CUDA `dQuantizeNF4` (csrc/kernels.cu), as decimal literals.
    #[allow(clippy::excessive_precision)]
    const CUDA_THRESHOLDS: [f32; 15] = [
        -0.8480964004993439,
        -0.6106329262256622,
        -0.4599952697753906,
        -0.33967943489551544,
        -0.23460740596055984,
        -0.13791173323988914,
        -0.045525018125772476,
        0.03979014977812767,
        0.1202552504837513,
        0.2035212516784668,
        0.2920137718319893,
        0.3893125355243683,
        0.5016634166240692,
        0.6427869200706482,
        0.8614784181118011,
    ];

    #[test]
    fn code_book_thresholds_are_its_midpoints() {
        assert!(NF4_CODE.windows(2).all(|w| w[0] < w[1]));
        for i in 0..15 {
            // The CUDA literals parse to the CPU path's f32 midpoints but for four, one ulp off.
            let ulps = NF4_MIDPOINTS[i].to_bits().abs_diff(CUDA_THRESHOLDS[i].to_bits());
            assert_eq!(ulps, u32::from([0, 8, 12, 14].contains(&i)), "midpoint {i}");
            // A value on a midpoint takes the lower code, the next f32 up the higher one.
            assert_eq!(nf4_index(NF4_MIDPOINTS[i]), i as u8);
            assert_eq!(nf4_index(NF4_MIDPOINTS[i].next_up()), i as u8 + 1);
        }
        for (i, &c) in NF4_CODE.iter().enumerate() {
            assert_eq!(nf4_index(c), i as u8);
        }
        assert_eq!(nf4_index(0.0), ZERO_CODE);
        assert!(DYNAMIC_MAP.windows(2).all(|w| w[0] < w[1]) && DYNAMIC_MAP[255] == 1.0);
    }

    /// Every value dequantizes to the code nearest to it (in units of its block's absmax), so the
    /// error is at most half the widest gap of the code book (0.152) times the absmax. Shapes with
    /// whole blocks, blocks spanning rows, a last partial block, an odd count, a single value.
    #[test]
    fn quantize_then_dequantize_gives_the_nearest_code() {
        let bound = half_widest_gap(&NF4_CODE);
        assert!((bound - 0.151_903_6).abs() < 1e-6);
        for (seed, [rows, cols]) in [[48, 64], [23, 37], [7, 200], [1, 1], [3, 64]].into_iter().enumerate() {
            let w = weights(rows * cols, seed as u64);
            let q = Nf4Matrix::quantize("w", &w, [rows, cols]).unwrap();
            assert_eq!((q.packed().len(), q.blocks()), ((rows * cols).div_ceil(2), (rows * cols).div_ceil(64)));
            let d = q.dequantize();
            for (i, (&x, &y)) in w.iter().zip(&d).enumerate() {
                let a = q.block_scale(i / BLOCK);
                assert_eq!(a, w[i / BLOCK * BLOCK..((i / BLOCK + 1) * BLOCK).min(w.len())].iter().fold(0.0f32, |m, v| m.max(v.abs())));
                assert_eq!(y, NF4_CODE[q.code(i) as usize] * a);
                let distance = |c: f32| (x / a - c).abs();
                let nearest = NF4_CODE.iter().map(|&c| distance(c)).fold(f32::INFINITY, f32::min);
                assert!(distance(NF4_CODE[q.code(i) as usize]) <= nearest + 1e-6, "[{rows}, {cols}] value {i}: {x} → {y}");
                assert!((x - y).abs() <= bound * a * (1.0 + 1e-6), "[{rows}, {cols}] value {i}: {x} → {y}");
            }
        }
    }

    /// Element 2j in the high nibble, 2j + 1 in the low one, an odd count padded with the code of
    /// 0.0; an all-zero block has absmax 0 and dequantizes to zeros.
    #[test]
    fn packing_order_padding_and_zero_blocks() {
        let q = Nf4Matrix::quantize("w", &[1.0, -1.0, 0.0], [1, 3]).unwrap();
        assert_eq!(q.packed(), [0xF0, 0x77]);
        let q = Nf4Matrix::quantize("w", &[-0.5, 0.1, 2.0, -2.0], [2, 2]).unwrap();
        // -0.25 → code 4 (-0.284), 0.05 → code 8 (0.080), ±1 → 15 and 0.
        assert_eq!(q.packed(), [0x48, 0xF0]);
        assert_eq!(q.absmax(), &Absmax::F32(vec![2.0]));

        let mut w = vec![0.0; 64];
        w.extend(weights(64, 9));
        let q = Nf4Matrix::quantize("w", &w, [2, 64]).unwrap();
        assert_eq!(&q.packed()[..32], [0x77; 32]);
        assert_eq!(q.block_scale(0), 0.0);
        assert!(q.dequantize()[..64].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn a_linear_weight_is_quantized_transposed() {
        let (d_in, d_out) = (37, 23);
        let w = weights(d_in * d_out, 3); // Burn's [in, out]
        let hf: Vec<f32> = (0..d_out).flat_map(|o| (0..d_in).map(|i| w[i * d_out + o]).collect::<Vec<_>>()).collect();
        assert_eq!(Nf4Matrix::from_linear_weight("w", &w, [d_in, d_out]).unwrap(), Nf4Matrix::quantize("w", &hf, [d_out, d_in]).unwrap());
    }

    #[test]
    fn bad_input_is_an_error_naming_the_tensor() {
        let message = |r: Result<Nf4Matrix>| r.unwrap_err().to_string();
        assert!(message(Nf4Matrix::quantize("h.0.mlp.c_fc.weight", &[0.0; 5], [2, 3])).contains("`h.0.mlp.c_fc.weight`: 5 values"));
        assert!(message(Nf4Matrix::quantize("w", &[], [0, 3])).contains("`w`"));
        assert!(message(Nf4Matrix::quantize("q_proj", &[0.0, f32::NAN], [1, 2])).contains("`q_proj`: value 1 is NaN"));
        assert!(message(Nf4Matrix::from_linear_weight("w", &[0.0; 5], [2, 3])).contains("`w`: 5 values"));
        assert!(message(Nf4Matrix::from_parts("w", [2, 64], vec![0; 64], Absmax::F32(vec![1.0]))).contains("expected 64 and 2"));
        let double = DoubleAbsmax { quantized: vec![0; 2], absmax: vec![], offset: 0.0 };
        assert!(message(Nf4Matrix::from_parts("w", [2, 64], vec![0; 64], Absmax::Double(double))).contains("second-level"));
    }

    /// Double quantization keeps the packed values and reads each absmax back within the 8-bit
    /// map's resolution: half its widest gap plus the kernel's grid step (1/65535), times the
    /// block's second-level absmax. Here 600 blocks: three second-level blocks, the last partial.
    #[test]
    fn double_quantization_reads_the_absmax_back_within_its_bound() {
        let w = weights(600 * 64, 4);
        let single = Nf4Matrix::quantize("w", &w, [300, 128]).unwrap();
        let double = single.clone().double_quantized();
        assert_eq!(single.packed(), double.packed());
        let Absmax::Double(d) = double.absmax() else { panic!("doubly quantized") };
        assert_eq!((d.quantized.len(), d.absmax.len()), (600, 3));
        let bound = half_widest_gap(&DYNAMIC_MAP) + 1.0 / 65535.0;
        for (i, (&a, a_read)) in single.scales().iter().zip(double.scales()).enumerate() {
            assert!((a - a_read).abs() <= bound * d.absmax[i / DOUBLE_BLOCK] * (1.0 + 1e-5) + 1e-7, "absmax {i}: {a} → {a_read}");
        }
        assert!(double.size_bytes() < single.size_bytes());
        assert_eq!(Nf4Matrix::from_parts("w", [300, 128], double.packed().to_vec(), double.absmax().clone()).unwrap(), double);
    }

    /// `tests/fixtures/nf4_reference.safetensors`: bitsandbytes 0.50.2's `quantize_4bit` (with
    /// and without `compress_statistics`) and `dequantize_4bit` on CPU, from
    /// scripts/reference/nf4_reference.py. Every byte and every f32 bit pattern is equal: the
    /// packed values, absmax, dequantized values, and the double quantization's bytes, its
    /// second-level absmax, offset and the absmax it reads back; and both code books.
    #[test]
    fn quantized_bytes_and_values_equal_bitsandbytes() {
        let fixture = Reference::open("nf4_reference.safetensors");
        let bytes = |name: &str| fixture.bytes(name, safetensors::Dtype::U8);
        let bits = |name: &str| fixture.bits(name);
        assert_eq!(bits("nf4_code"), f32_bits(&NF4_CODE));
        assert_eq!(bits("dynamic_map"), f32_bits(&DYNAMIC_MAP));
        for name in ["aligned", "ragged", "nested"] {
            let [rows, cols] = fixture.shape(&format!("{name}.weight"))[..] else { panic!("{name}: 2-D") };
            let weight = fixture.values(&format!("{name}.weight"));
            let single = Nf4Matrix::quantize(name, &weight, [rows, cols]).unwrap();
            assert_eq!(single.packed(), bytes(&format!("{name}.packed")), "{name}: packed");
            assert_eq!(f32_bits(&single.scales()), bits(&format!("{name}.absmax")), "{name}: absmax");
            if fixture.has(&format!("{name}.dequantized")) {
                assert_eq!(f32_bits(&single.dequantize()), bits(&format!("{name}.dequantized")), "{name}: dequantized");
            }
            let double = single.double_quantized();
            let Absmax::Double(d) = double.absmax() else { panic!("doubly quantized") };
            assert_eq!(d.quantized, bytes(&format!("{name}.double.absmax_q")), "{name}: quantized absmax");
            assert_eq!(f32_bits(&d.absmax), bits(&format!("{name}.double.absmax2")), "{name}: second-level absmax");
            assert_eq!(vec![d.offset.to_bits()], bits(&format!("{name}.double.offset")), "{name}: offset");
            assert_eq!(f32_bits(&double.scales()), bits(&format!("{name}.double.absmax_dequantized")), "{name}: absmax read back");
        }
    }
}
