//! The AVX512-BF16 code: the `vdpbf16ps` micro-kernel and the vector packing of views whose
//! values along one axis are adjacent in memory (`vcvtne2ps2bf16` rounds 32 values at a time).
//! Every function needs `avx512f`, `avx512bw` and `avx512bf16`, which the caller has checked.

use std::arch::x86_64::*;

use half::bf16;

use super::super::gemm::Matrix;
use super::pack::{MR, NR, PAIR_TILE, STRIP_ROWS};

/// The first `count` (≤ 16) lanes.
pub(super) fn lanes(count: usize) -> __mmask16 {
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
fn element<T: Copy>(m: Matrix<T>, i: usize, j: usize) -> *const T {
    m.ptr.wrapping_offset(i as isize * m.row_stride + j as isize * m.col_stride)
}

/// `count` (≤ 32) adjacent values from `ptr` as 16 pairs in one register, zeros past `count`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pairs_at(ptr: *const f32, count: usize) -> __m512i {
    // SAFETY: as `load`.
    let (lo, hi) = unsafe { (load(ptr, count.min(16)), load(ptr.wrapping_add(16), count.saturating_sub(16))) };
    // The second operand fills the low half: values 0..16, then 16..32, so lane q is the pair (2q, 2q + 1).
    // SAFETY: a vector of 32 bf16 is one of 16 u32.
    unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo)) }
}

/// [`pairs_at`] as an array.
#[cfg(test)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn adjacent_pairs(ptr: *const f32, count: usize) -> [u32; 16] {
    let mut pairs = [0u32; 16];
    // SAFETY: as `pairs_at`; `pairs` holds 16 lanes.
    unsafe { _mm512_storeu_epi32(pairs.as_mut_ptr().cast(), pairs_at(ptr, count)) };
    pairs
}

/// Rows `i0..i0 + rows` of `m`, whose columns are adjacent (`col_stride` 1), columns
/// `k0..k0 + kc`, as a panel of `width` lanes (a multiple of 16): pair `p` of row `r` at
/// `out[p·width + r]`. Sixteen rows' 16 pairs (32 columns) at a time are transposed in registers
/// and stored as 16 vectors: stored pair by pair, this packing of a transposed B (`x·Eᵀ`, `g·Wᵀ`,
/// attention's `q·kᵀ`) cost half as much as the products of attention it fed.
///
/// # Safety
/// The view is inside `m`; the CPU has AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_pairs_along_rows(m: Matrix, i0: usize, rows: usize, k0: usize, kc: usize, out: &mut [u32], width: usize) {
    debug_assert!(m.col_stride == 1 && width.is_multiple_of(16) && out.len() == kc.div_ceil(2) * width);
    // SAFETY: `count` values of row i0 + r from column k0 + c are inside the view.
    let pairs_of = |r: usize, c: usize, count: usize| unsafe { pairs_at(element(m, i0 + r, k0 + c), count) };
    // SAFETY: as the caller promises.
    unsafe { transpose_pairs(rows, kc, out, width, pairs_of) }
}

/// [`pack_pairs_along_rows`] of bf16 values, which are pairs as stored: each row's 32 values are
/// one masked load.
///
/// # Safety
/// As [`pack_pairs_along_rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_bf16_pairs_along_rows(m: Matrix<bf16>, i0: usize, rows: usize, k0: usize, kc: usize, out: &mut [u32]) {
    debug_assert!(m.col_stride == 1 && out.len() == kc.div_ceil(2) * NR);
    let pairs_of = |r: usize, c: usize, count: usize| {
        // SAFETY: `count` (≤ 32) values of row i0 + r from column k0 + c are inside the view; the
        // masked-off ones are never read (zeros: the odd last pair's high half among them).
        unsafe { _mm512_maskz_loadu_epi16(words(count), element(m, i0 + r, k0 + c).cast()) }
    };
    // SAFETY: as the caller promises.
    unsafe { transpose_pairs(rows, kc, out, NR, pairs_of) }
}

/// The first `count` (≤ 32) 16-bit lanes.
fn words(count: usize) -> __mmask32 {
    if count >= 32 { u32::MAX } else { (1u32 << count) - 1 }
}

/// The transposition of [`pack_pairs_along_rows`] and [`pack_bf16_pairs_along_rows`]:
/// `pairs_of(r, c, count)` is row `r`'s 16 pairs of its columns `c..c + count` (`count` ≤ 32, zeros
/// past it), zeros for rows past `rows`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn transpose_pairs(rows: usize, kc: usize, out: &mut [u32], width: usize, pairs_of: impl Fn(usize, usize, usize) -> __m512i) {
    let pairs = kc.div_ceil(2);
    for h in (0..width).step_by(16) {
        for c in (0..kc).step_by(32) {
            let count = (kc - c).min(32);
            let mut block: [__m512i; 16] = std::array::from_fn(|r| if h + r < rows { pairs_of(h + r, c, count) } else { _mm512_setzero_si512() });
            transpose_16x16(&mut block);
            let p0 = c / 2;
            for (q, v) in block.iter().take(pairs - p0).enumerate() {
                // SAFETY: lanes h..h + 16 of pair p0 + q's row are inside `out`.
                unsafe { _mm512_storeu_epi32(out.as_mut_ptr().add((p0 + q) * width + h).cast(), *v) };
            }
        }
    }
}

/// Transposes 16 vectors of 16 lanes: lane `l` of vector `r` goes to lane `r` of vector `l`. For
/// each block size `b` (8, 4, 2, 1), vectors `r` and `r + b` swap their off-diagonal blocks.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose_16x16(v: &mut [__m512i; 16]) {
    const fn swap(b: usize, second: bool) -> [u32; 16] {
        let mut idx = [0u32; 16];
        let mut l = 0;
        while l < 16 {
            idx[l] = match (l & b == 0, second) {
                (true, false) => l,
                (false, false) => 16 + l - b,
                (true, true) => l + b,
                (false, true) => 16 + l,
            } as u32;
            l += 1;
        }
        idx
    }
    const SWAPS: [(usize, [u32; 16], [u32; 16]); 4] =
        [(8, swap(8, false), swap(8, true)), (4, swap(4, false), swap(4, true)), (2, swap(2, false), swap(2, true)), (1, swap(1, false), swap(1, true))];
    for (b, first, second) in SWAPS {
        // SAFETY: 16 lanes each.
        let (first, second) = unsafe { (_mm512_loadu_epi32(first.as_ptr().cast()), _mm512_loadu_epi32(second.as_ptr().cast())) };
        for r in (0..16).filter(|r| r & b == 0) {
            let (x, y) = (v[r], v[r + b]);
            v[r] = _mm512_permutex2var_epi32(x, first, y);
            v[r + b] = _mm512_permutex2var_epi32(x, second, y);
        }
    }
}

/// [`pack_pairs_along_rows`] for an A panel (`width` = `MR` = 6): the six rows' 16 pairs of each
/// 32 columns are transposed in registers (two rounds of two-source permutes) and stored as six
/// vectors, where the general packing stores every pair on its own: the A panels of a forward
/// product (x·W, x row-major) were a fifth of its time.
///
/// # Safety
/// As [`pack_pairs_along_rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_a_along_rows(m: Matrix, i0: usize, rows: usize, k0: usize, kc: usize, out: &mut [u32]) {
    const _: () = assert!(MR == 6, "the transposition below is for six rows");
    debug_assert!(m.col_stride == 1 && rows <= MR && out.len() == kc.div_ceil(2) * MR);
    // Round 1, rows (0, 1), (2, 3), (4, 5): 64-bit lanes holding one pair of both rows, pairs
    // 0..8 (`LOW`) or 8..16 (`HIGH`).
    const fn interleave(from: u32) -> [u32; 16] {
        let mut idx = [0u32; 16];
        let mut q = 0;
        while q < 8 {
            idx[2 * q] = from + q as u32;
            idx[2 * q + 1] = 16 + from + q as u32;
            q += 1;
        }
        idx
    }
    const LOW: [u32; 16] = interleave(0);
    const HIGH: [u32; 16] = interleave(8);
    // Round 2: output lane l of vector j (of three per 8 pairs) is pair g / 3 of row couple g % 3
    // (g = 8j + l): couples 0 and 1 from one two-source permute, couple 2 merged in under a mask.
    const fn gather(j: usize) -> ([u64; 8], [u64; 8], u8) {
        let (mut first_two, mut third, mut mask) = ([0u64; 8], [0u64; 8], 0u8);
        let mut l = 0;
        while l < 8 {
            let (pair, couple) = (((8 * j + l) / 3) as u64, (8 * j + l) % 3);
            match couple {
                0 => first_two[l] = pair,
                1 => first_two[l] = 8 + pair,
                _ => {
                    third[l] = pair;
                    mask |= 1 << l;
                }
            }
            l += 1;
        }
        (first_two, third, mask)
    }
    const GATHER: [([u64; 8], [u64; 8], u8); 3] = [gather(0), gather(1), gather(2)];
    // SAFETY: 16 lanes each.
    let (low, high) = unsafe { (_mm512_loadu_epi32(LOW.as_ptr().cast()), _mm512_loadu_epi32(HIGH.as_ptr().cast())) };
    let pairs = kc.div_ceil(2);
    for c in (0..kc).step_by(32) {
        let count = (kc - c).min(32);
        let row = |r: usize| -> __m512i {
            // SAFETY: `count` values of row i0 + r from column k0 + c are inside the view.
            if r < rows { unsafe { pairs_at(element(m, i0 + r, k0 + c), count) } } else { _mm512_setzero_si512() }
        };
        let r: [__m512i; 6] = std::array::from_fn(row);
        let couples = |idx: __m512i| [0, 2, 4].map(|i| _mm512_permutex2var_epi32(r[i], idx, r[i + 1]));
        let halves = [couples(low), couples(high)];
        // Words of pairs p0.. of the panel: six vectors, cut at the panel's last pair.
        let (p0, words) = (c / 2, (pairs - c / 2).min(16) * MR);
        for (j, &(first_two, third, mask)) in GATHER.iter().cycle().take(6).enumerate() {
            let [a, b, c] = halves[j / 3];
            // SAFETY: 8 lanes each; the store's lanes are inside `out` (words of pairs < `pairs`).
            unsafe {
                let v = _mm512_permutex2var_epi64(a, _mm512_loadu_epi64(first_two.as_ptr().cast()), b);
                let v = _mm512_mask_permutexvar_epi64(v, mask, _mm512_loadu_epi64(third.as_ptr().cast()), c);
                _mm512_mask_storeu_epi32(out.as_mut_ptr().wrapping_add(p0 * MR + 16 * j).cast(), lanes(words.saturating_sub(16 * j)), v);
            }
        }
    }
}

/// [`super::pack::pack_strip`] of a view whose columns are adjacent (`col_stride` 1): each 32
/// values of a row are rounded as 16 pairs and stored as they are (`padded` pairs a row).
///
/// # Safety
/// As [`pack_pairs_along_rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_rows_of_pairs(m: Matrix, i0: usize, rows: usize, k0: usize, kc: usize, out: &mut [u32], padded: usize) {
    debug_assert!(m.col_stride == 1 && padded.is_multiple_of(PAIR_TILE) && out.len() == STRIP_ROWS * padded);
    for (r, row) in out.chunks_exact_mut(padded).enumerate() {
        if r >= rows {
            row.fill(0);
            continue;
        }
        // Each 32 values fill a tile row's 16 pairs, zeros past kc: `padded` is whole tile rows.
        for (q, tile_row) in row.chunks_exact_mut(PAIR_TILE).enumerate() {
            let count = kc.saturating_sub(32 * q).min(32);
            // SAFETY: `count` values of row i0 + r from column k0 + 32q are inside the view; the
            // store's 16 lanes are `tile_row`.
            unsafe { _mm512_storeu_epi32(tile_row.as_mut_ptr().cast(), pairs_at(element(m, i0 + r, k0 + 32 * q), count)) };
        }
    }
}

/// [`super::pack::pack_strip`] of `a` given as `m = aᵀ` with adjacent columns (A's rows adjacent:
/// `xᵀ·g`, the weight gradient): 16 rows of A's 16 pairs are packed pair by pair across `m`'s rows
/// ([`pack_pairs_across_rows`]), then transposed in registers into 16 tile rows.
///
/// # Safety
/// As [`pack_pairs_along_rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_columns_as_rows_of_pairs(m: Matrix, k0: usize, kc: usize, i0: usize, rows: usize, out: &mut [u32], padded: usize) {
    debug_assert!(m.col_stride == 1 && padded.is_multiple_of(PAIR_TILE) && out.len() == STRIP_ROWS * padded);
    let mut across = [0u32; PAIR_TILE * 16];
    for half in 0..STRIP_ROWS / 16 {
        let (r0, count) = (16 * half, rows.saturating_sub(16 * half).min(16));
        for q in 0..padded / PAIR_TILE {
            let kq = kc.saturating_sub(32 * q).min(32);
            let filled = if count == 0 || kq == 0 {
                0
            } else {
                // SAFETY: the view's `count` columns from i0 + r0 and kq rows from k0 + 32q.
                unsafe { pack_pairs_across_rows::<16>(m, k0 + 32 * q, kq, i0 + r0, count, &mut across) };
                kq.div_ceil(2)
            };
            across[filled * 16..].fill(0);
            // SAFETY: 16 vectors of 16 lanes in `across`.
            let mut block: [__m512i; 16] = std::array::from_fn(|p| unsafe { _mm512_loadu_epi32(across.as_ptr().add(16 * p).cast()) });
            transpose_16x16(&mut block);
            for (r, v) in block.iter().enumerate() {
                // SAFETY: row r0 + r's pairs 16q..16q + 16 are inside `out`.
                unsafe { _mm512_storeu_epi32(out.as_mut_ptr().add((r0 + r) * padded + PAIR_TILE * q).cast(), *v) };
            }
        }
    }
}

/// Rows `k0..k0 + kc` of `m`, whose columns are adjacent (`col_stride` 1), columns
/// `j0..j0 + cols`, as a panel of `WIDTH` lanes: rows `k`, `k + 1` interleaved into the pairs of
/// `out[p·WIDTH..]`, lanes past `cols` zero.
///
/// # Safety
/// As [`pack_pairs_along_rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_pairs_across_rows<const WIDTH: usize>(m: Matrix, k0: usize, kc: usize, j0: usize, cols: usize, out: &mut [u32]) {
    let width = WIDTH; // a constant in each copy: the lanes and masks below fold
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

/// [`pack_pairs_across_rows`] (for a B panel) of bf16 values: rows `k`, `k + 1`'s 16 values
/// widened to 32-bit lanes, the second shifted into the high halves.
///
/// # Safety
/// As [`pack_pairs_along_rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_bf16_pairs_across_rows(m: Matrix<bf16>, k0: usize, kc: usize, j0: usize, cols: usize, out: &mut [u32]) {
    debug_assert!(m.col_stride == 1 && out.len() == kc.div_ceil(2) * NR);
    let row = |k: usize, h: usize, count: usize| {
        // SAFETY: `count` (≤ 16) values of row k from column j0 + h are inside the view.
        _mm512_cvtepu16_epi32(_mm512_castsi512_si256(unsafe { _mm512_maskz_loadu_epi16(words(count), element(m, k, j0 + h).cast()) }))
    };
    for p in 0..kc.div_ceil(2) {
        let k = k0 + 2 * p;
        for h in (0..NR).step_by(16) {
            let count = cols.saturating_sub(h).min(16);
            let second = if 2 * p + 1 < kc { _mm512_slli_epi32::<16>(row(k + 1, h, count)) } else { _mm512_setzero_si512() };
            // SAFETY: lanes h..h + 16 of pair p's row are inside `out`.
            unsafe { _mm512_storeu_epi32(out.as_mut_ptr().add(p * NR + h).cast(), _mm512_or_si512(row(k, h, count), second)) };
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
    // The block of c is rarely still cached (a row block's outputs outgrow L2 between blocks of
    // k): fetch it now, for writing, so that its loads and stores below do not wait on memory.
    for i in 0..rows {
        for h in 0..cols.div_ceil(16) {
            _mm_prefetch::<_MM_HINT_ET0>(c.wrapping_add(i * ldc + 16 * h).cast());
        }
    }
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
