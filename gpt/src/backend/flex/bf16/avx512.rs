//! The AVX512-BF16 code: the `vdpbf16ps` micro-kernel and the vector packing of views whose
//! values along one axis are adjacent in memory (`vcvtne2ps2bf16` rounds 32 values at a time).
//! Every function needs `avx512f`, `avx512bw` and `avx512bf16`, which the caller has checked.

use std::arch::x86_64::*;

use super::super::gemm::Matrix;
use super::pack::{MR, NR};

/// The first `count` (≤ 16) lanes.
fn lanes(count: usize) -> __mmask16 {
    if count >= 16 { 0xffff } else { (1u16 << count) - 1 }
}

/// Up to 16 values from `ptr` on, zeros past `count` (masked-off lanes are never read).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn load(ptr: *const f32, count: usize) -> __m512 {
    // SAFETY: the caller's `count` values from `ptr` are readable.
    if count == 0 { _mm512_setzero_ps() } else { unsafe { _mm512_maskz_loadu_ps(lanes(count), ptr) } }
}

/// Element `(i, j)` of `m` (a pointer only: it is read through masked loads).
fn element(m: Matrix, i: usize, j: usize) -> *const f32 {
    m.ptr.wrapping_offset(i as isize * m.row_stride + j as isize * m.col_stride)
}

/// `count` (≤ 32) adjacent values from `ptr` as 16 pairs, zeros past `count`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn adjacent_pairs(ptr: *const f32, count: usize) -> [u32; 16] {
    // SAFETY: as `load`.
    let (lo, hi) = unsafe { (load(ptr, count.min(16)), load(ptr.wrapping_add(16), count.saturating_sub(16))) };
    let mut pairs = [0u32; 16];
    // The second operand fills the low half: values 0..16, then 16..32, so lane q is the pair (2q, 2q + 1).
    let packed: __m512i = unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo)) };
    // SAFETY: `pairs` holds 16 lanes.
    unsafe { _mm512_storeu_epi32(pairs.as_mut_ptr().cast(), packed) };
    pairs
}

/// Rows `i0..i0 + rows` of `m`, whose columns are adjacent (`col_stride` 1), columns
/// `k0..k0 + kc`, as a panel of `width` lanes: pair `p` of row `r` at `out[p·width + r]`.
/// Each row converts 32 values at once; the pairs are then spread over the panel.
///
/// # Safety
/// The view is inside `m`; the CPU has AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_pairs_along_rows(m: Matrix, i0: usize, rows: usize, k0: usize, kc: usize, out: &mut [u32], width: usize) {
    debug_assert_eq!(m.col_stride, 1);
    let pairs = kc.div_ceil(2);
    for r in 0..width {
        if r >= rows {
            (0..pairs).for_each(|p| out[p * width + r] = 0);
            continue;
        }
        for c in (0..kc).step_by(32) {
            // SAFETY: columns k0 + c.. of row i0 + r, `kc - c` of them inside the view.
            let chunk = unsafe { adjacent_pairs(element(m, i0 + r, k0 + c), (kc - c).min(32)) };
            let p0 = c / 2;
            for (q, &v) in chunk.iter().take(pairs - p0).enumerate() {
                out[(p0 + q) * width + r] = v;
            }
        }
    }
}

/// Rows `k0..k0 + kc` of `m`, whose columns are adjacent (`col_stride` 1), columns
/// `j0..j0 + cols`, as a panel of `width` lanes: rows `k`, `k + 1` interleaved into the pairs of
/// `out[p·width..]`, lanes past `cols` zero.
///
/// # Safety
/// As [`pack_pairs_along_rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_pairs_across_rows(m: Matrix, k0: usize, kc: usize, j0: usize, cols: usize, out: &mut [u32], width: usize) {
    debug_assert_eq!(m.col_stride, 1);
    debug_assert!(out.len() >= kc.div_ceil(2) * width);
    // Word `2j` from the first row's value j, word `2j + 1` from the second's (which sit 16 words up).
    const INTERLEAVE: [u16; 32] = {
        let mut idx = [0u16; 32];
        let mut j = 0;
        while j < 16 {
            idx[2 * j] = j as u16;
            idx[2 * j + 1] = 16 + j as u16;
            j += 1;
        }
        idx
    };
    // SAFETY: 32 words.
    let interleave = unsafe { _mm512_loadu_epi16(INTERLEAVE.as_ptr().cast()) };
    for p in 0..kc.div_ceil(2) {
        let k = k0 + 2 * p;
        for h in (0..width).step_by(16) {
            let count = cols.saturating_sub(h).min(16);
            // SAFETY: `count` values of rows k and k + 1 (when inside the view) from column j0 + h.
            let (first, second) = unsafe {
                let second = if 2 * p + 1 < kc { load(element(m, k + 1, j0 + h), count) } else { _mm512_setzero_ps() };
                (load(element(m, k, j0 + h), count), second)
            };
            let words: __m512i = unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(second, first)) };
            let pairs = _mm512_permutexvar_epi16(interleave, words);
            // SAFETY: lanes h..min(h + 16, width) of pair p's row are inside `out`.
            unsafe { _mm512_mask_storeu_epi32(out.as_mut_ptr().add(p * width + h).cast(), lanes(width - h), pairs) };
        }
    }
}

/// The micro-kernel: the `MR × NR` block of `c` (rows `ldc` apart) `=` or `+=` (`add`) the product
/// of an A panel and a B panel of `pairs` k-pairs, stored for its first `rows` rows and `cols`
/// columns. 24 accumulators take the latency of `vdpbf16ps`; per pair it loads four B registers
/// and broadcasts each row's pair from A.
///
/// # Safety
/// The panels hold `pairs` pairs; `c` has room for `rows` rows of `cols` values (read too when
/// `add`); the CPU has AVX512-BF16.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn kernel(pairs: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, rows: usize, cols: usize, add: bool) {
    const NV: usize = NR / 16;
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for p in 0..pairs {
        // SAFETY: pair p of both panels.
        unsafe {
            let bv: [__m512bh; NV] = std::array::from_fn(|v| std::mem::transmute(_mm512_loadu_epi32(b.add(p * NR + 16 * v).cast())));
            for (i, acc) in acc.iter_mut().enumerate() {
                let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(p * MR + i) as i32));
                for v in 0..NV {
                    acc[v] = _mm512_dpbf16_ps(acc[v], ai, bv[v]);
                }
            }
        }
    }
    let masks: [__mmask16; NV] = std::array::from_fn(|v| lanes(cols.saturating_sub(16 * v)));
    for (i, acc) in acc.iter().enumerate() {
        if i >= rows {
            break;
        }
        for (h, (&v, &mask)) in acc.iter().zip(&masks).enumerate() {
            // SAFETY: the masked lanes are row i's columns 16h.. inside `c`.
            unsafe {
                let dst = c.add(i * ldc + 16 * h);
                let v = if add { _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, dst)) } else { v };
                _mm512_mask_storeu_ps(dst, mask, v);
            }
        }
    }
}

/// 32 values rounded by `vcvtne2ps2bf16`, for the tests of the scalar rounding.
#[cfg(test)]
pub(super) fn round_by_the_instruction(values: &[f32; 32]) -> [u16; 32] {
    assert!(super::avx512_bf16());
    // SAFETY: 32 values; the CPU has the instruction (asserted).
    let pairs = unsafe { adjacent_pairs(values.as_ptr(), 32) };
    std::array::from_fn(|i| (pairs[i / 2] >> (16 * (i % 2))) as u16)
}
