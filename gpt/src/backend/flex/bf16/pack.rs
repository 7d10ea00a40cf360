//! bf16 rounding and the packed panels the micro-kernel reads.
//!
//! `vdpbf16ps` multiplies pairs of bf16 values held in one 32-bit lane, so both operands are
//! packed as k-pairs: a pair `(x[k], x[k+1])` is one `u32`, `x[k]` in the low half. An A panel
//! holds `MR` rows, pair `p` of row `r` at `p·MR + r` (the kernel broadcasts it); a B panel holds
//! `NR` columns, pair `p` of column `j` at `p·NR + j` (four registers of 16 columns). Rows, columns
//! and an odd last k past the matrix are zeros, so the kernel never needs an edge case inside its loop.
//!
//! The AMX kernel (`super::amx`) reads the same B panels, 16 pairs (one tile's rows) at a time, so
//! a panel's pairs are padded with zeros to a multiple of [`PAIR_TILE`] ([`panel_pairs`]). Its A
//! operand is a strip of [`STRIP_ROWS`] rows, each row's pairs adjacent ([`pack_strip`]): a tile
//! row is 16 pairs of one row of A.

use half::bf16;

use super::super::gemm::Matrix;

/// Rows of an A panel and columns of a B panel (the micro-kernel's register block): 64 columns
/// are a head's width in attention, and each broadcast of A feeds four `vdpbf16ps`.
pub(super) const MR: usize = 6;
pub(super) const NR: usize = 64;

/// Pairs of k in one AMX tile's rows (64 bytes of bf16 pairs).
pub(super) const PAIR_TILE: usize = 16;

/// Rows of an AMX A strip: two tiles of 16.
pub(super) const STRIP_ROWS: usize = 32;

/// The pairs a panel of `kc` values of k holds: `kc` rounded up to whole pairs, padded with zero
/// pairs to whole tiles.
pub(super) fn panel_pairs(kc: usize) -> usize {
    kc.div_ceil(2).next_multiple_of(PAIR_TILE)
}

/// `x` rounded to bf16 as `vcvtne2ps2bf16` does: to nearest, ties to even; NaN stays NaN (made
/// quiet); zeros and subnormals become zeros of their sign (the instruction treats subnormal
/// inputs as zero, and the packed panels must not depend on which path packed them).
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return (bits >> 16) as u16 | 0x0040;
    }
    if bits & 0x7f80_0000 == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The f32 a bf16 value stands for.
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

/// How a matrix may be packed: its values along one axis adjacent in memory lets the vector
/// conversion read 16 or 32 at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Packer {
    /// Any layout, one value at a time (what the vector packing falls back on, and the tests' reference).
    #[cfg_attr(not(test), allow(dead_code))]
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// Rows `i0..i0 + rows` (`rows ≤ MR`) and columns `k0..k0 + kc` of `a` as one A panel of
/// `kc.div_ceil(2)` pairs into `out` (`kc.div_ceil(2)·MR` values).
pub(super) fn pack_a(a: Matrix, i0: usize, rows: usize, k0: usize, kc: usize, out: &mut [u32], packer: Packer) {
    let pairs = kc.div_ceil(2);
    debug_assert!(rows <= MR && out.len() == pairs * MR && i0 + rows <= a.rows && k0 + kc <= a.cols);
    match packer {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the views are inside `a` (asserted above); the packer is chosen only where the CPU has AVX-512 BF16.
        Packer::Avx512 => unsafe {
            if a.col_stride == 1 {
                return super::avx512::pack_a_along_rows(a, i0, rows, k0, kc, out);
            }
            if a.row_stride == 1 {
                return super::avx512::pack_pairs_across_rows::<MR>(a.t(), k0, kc, i0, rows, out);
            }
        },
        Packer::Scalar => {}
    }
    for p in 0..pairs {
        for r in 0..MR {
            out[p * MR + r] = if r < rows { pair_at(a, i0 + r, k0, kc, 2 * p) } else { 0 };
        }
    }
}

/// Rows `i0..i0 + rows` (`rows ≤ STRIP_ROWS`) and columns `k0..k0 + kc` of `a` as one AMX strip
/// into `out` (`STRIP_ROWS · panel_pairs(kc)` values): pair `p` of row `r` at `r·panel_pairs(kc) + p`,
/// zeros past the rows and pairs of the view.
pub(super) fn pack_strip(a: Matrix, i0: usize, rows: usize, k0: usize, kc: usize, out: &mut [u32], packer: Packer) {
    let (pairs, padded) = (kc.div_ceil(2), panel_pairs(kc));
    debug_assert!(rows <= STRIP_ROWS && out.len() == padded * STRIP_ROWS && i0 + rows <= a.rows && k0 + kc <= a.cols);
    match packer {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in pack_a.
        Packer::Avx512 => unsafe {
            if a.col_stride == 1 {
                return super::avx512::pack_rows_of_pairs(a, i0, rows, k0, kc, out, padded);
            }
            if a.row_stride == 1 {
                return super::avx512::pack_columns_as_rows_of_pairs(a.t(), k0, kc, i0, rows, out, padded);
            }
        },
        Packer::Scalar => {}
    }
    for r in 0..STRIP_ROWS {
        for p in 0..padded {
            out[r * padded + p] = if r < rows && p < pairs { pair_at(a, i0 + r, k0, kc, 2 * p) } else { 0 };
        }
    }
}

/// What a B panel is packed from: f32 values, rounded to bf16, or bf16 values as stored (a frozen
/// bf16 weight `W`, or `Wᵀ`: rounding them again would change nothing, and no f32 copy is made).
pub(super) trait Element: Copy {
    /// `(lo, hi)` as a panel's pair, `hi` zero when `None` (past an odd `kc`).
    fn pair(lo: Self, hi: Option<Self>) -> u32;

    /// [`pack_b`]'s vector packing of a view whose columns are adjacent.
    ///
    /// # Safety
    /// As [`super::avx512::pack_pairs_along_rows`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn pack_across_rows(b: Matrix<Self>, k0: usize, kc: usize, j0: usize, cols: usize, out: &mut [u32]);

    /// [`pack_b`]'s vector packing of `bᵀ` given as `m`, whose columns are adjacent.
    ///
    /// # Safety
    /// As [`super::avx512::pack_pairs_along_rows`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn pack_along_rows(m: Matrix<Self>, i0: usize, rows: usize, k0: usize, kc: usize, out: &mut [u32]);
}

impl Element for f32 {
    fn pair(lo: f32, hi: Option<f32>) -> u32 {
        pair(lo, hi.unwrap_or(0.0))
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn pack_across_rows(b: Matrix, k0: usize, kc: usize, j0: usize, cols: usize, out: &mut [u32]) {
        // SAFETY: as the caller promises.
        unsafe { super::avx512::pack_pairs_across_rows::<NR>(b, k0, kc, j0, cols, out) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn pack_along_rows(m: Matrix, i0: usize, rows: usize, k0: usize, kc: usize, out: &mut [u32]) {
        // SAFETY: as the caller promises.
        unsafe { super::avx512::pack_pairs_along_rows(m, i0, rows, k0, kc, out, NR) }
    }
}

impl Element for bf16 {
    fn pair(lo: bf16, hi: Option<bf16>) -> u32 {
        lo.to_bits() as u32 | (hi.map_or(0, bf16::to_bits) as u32) << 16
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn pack_across_rows(b: Matrix<bf16>, k0: usize, kc: usize, j0: usize, cols: usize, out: &mut [u32]) {
        // SAFETY: as the caller promises.
        unsafe { super::avx512::pack_bf16_pairs_across_rows(b, k0, kc, j0, cols, out) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn pack_along_rows(m: Matrix<bf16>, i0: usize, rows: usize, k0: usize, kc: usize, out: &mut [u32]) {
        // SAFETY: as the caller promises.
        unsafe { super::avx512::pack_bf16_pairs_along_rows(m, i0, rows, k0, kc, out) }
    }
}

/// Rows `k0..k0 + kc` and columns `j0..j0 + cols` (`cols ≤ NR`) of `b` as one B panel into
/// `out` (`kc.div_ceil(2)·NR` values).
pub(super) fn pack_b<T: Element>(b: Matrix<T>, k0: usize, kc: usize, j0: usize, cols: usize, out: &mut [u32], packer: Packer) {
    let pairs = kc.div_ceil(2);
    debug_assert!(cols <= NR && out.len() == pairs * NR && j0 + cols <= b.cols && k0 + kc <= b.rows);
    match packer {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in pack_a.
        Packer::Avx512 => unsafe {
            if b.col_stride == 1 {
                return T::pack_across_rows(b, k0, kc, j0, cols, out);
            }
            if b.row_stride == 1 {
                return T::pack_along_rows(b.t(), j0, cols, k0, kc, out);
            }
        },
        Packer::Scalar => {}
    }
    for p in 0..pairs {
        let k = k0 + 2 * p;
        for j in 0..NR {
            out[p * NR + j] = if j < cols { T::pair(b.at(k, j0 + j), (2 * p + 1 < kc).then(|| b.at(k + 1, j0 + j))) } else { 0 };
        }
    }
}

/// Row `i`'s values `k0 + k` and `k0 + k + 1` as a pair, zero past `kc`.
fn pair_at(m: Matrix, i: usize, k0: usize, kc: usize, k: usize) -> u32 {
    let hi = if k + 1 < kc { m.at(i, k0 + k + 1) } else { 0.0 };
    pair(m.at(i, k0 + k), hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_like_the_instruction() {
        let cases: [(u32, u16); 16] = [
            (0x3f80_0000, 0x3f80),  // 1.0
            (0x3f80_8000, 0x3f80),  // 1 + 2⁻⁸: a tie, to the even 1.0
            (0x3f81_8000, 0x3f82),  // 1 + 3·2⁻⁸: a tie, to the even neighbour above
            (0x3f80_8001, 0x3f81),  // just above the tie
            (0x3f80_7fff, 0x3f80),  // just below it
            (0xc020_0000, 0xc020),  // -2.5, exact
            (0x4049_0fdb, 0x4049),  // π → 3.140625
            (0x7f80_0000, 0x7f80),  // +inf
            (0xff80_0000, 0xff80),  // -inf
            (0x7f7f_ffff, 0x7f80),  // f32::MAX rounds up to inf
            (0x7fc0_0000, 0x7fc0),  // quiet NaN
            (0x7f80_0001, 0x7fc0),  // signalling NaN, low payload: quiet, still NaN
            (0xffa0_0000, 0xffe0),  // negative signalling NaN keeps sign and payload
            (0x0000_0000, 0x0000),  // +0
            (0x8000_0000, 0x8000),  // -0
            (0x0040_0000, 0x0000),  // a subnormal is zero
        ];
        for (bits, want) in cases {
            assert_eq!(to_bf16(f32::from_bits(bits)), want, "{bits:#010x}");
        }
        assert_eq!(to_bf16(-1e-40), 0x8000, "a negative subnormal is -0");
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(0x3f82), 1.015625);
    }

    /// Normal values round as `half` rounds them.
    #[test]
    fn matches_half_on_normal_values() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f32::from_bits(state as u32);
            if x.is_normal() {
                assert_eq!(to_bf16(x), half::bf16::from_f32(x).to_bits(), "{x:e}");
            }
        }
    }

    /// The scalar packing of every layout gives the pairs it promises, with zero padding.
    #[test]
    fn packs_pairs_with_zero_padding() {
        let values: Vec<f32> = (0..5 * 7).map(|v| v as f32).collect();
        let a = Matrix::rows_of(&values, 5, 7, 7); // a[i][k] = 7i + k
        let mut out = vec![u32::MAX; 4 * MR];
        pack_a(a, 2, 3, 0, 7, &mut out, Packer::Scalar);
        for p in 0..4 {
            for r in 0..MR {
                let v = out[p * MR + r];
                let (lo, hi) = (from_bf16(v as u16), from_bf16((v >> 16) as u16));
                let want_lo = if r < 3 { (7 * (2 + r) + 2 * p) as f32 } else { 0.0 };
                let want_hi = if r < 3 && 2 * p + 1 < 7 { want_lo + 1.0 } else { 0.0 };
                assert_eq!((lo, hi), (want_lo, want_hi), "pair {p} row {r}");
            }
        }
        let mut out = vec![u32::MAX; 3 * NR];
        pack_b(a, 0, 5, 4, 3, &mut out, Packer::Scalar);
        for p in 0..3 {
            for j in 0..NR {
                let v = out[p * NR + j];
                let want_lo = if j < 3 { (7 * 2 * p + 4 + j) as f32 } else { 0.0 };
                let want_hi = if j < 3 && 2 * p + 1 < 5 { want_lo + 7.0 } else { 0.0 };
                assert_eq!((from_bf16(v as u16), from_bf16((v >> 16) as u16)), (want_lo, want_hi), "pair {p} column {j}");
            }
        }
    }
}
