//! Cache blocking and threads of the bf16 products, in BLIS's loop order: a block of B (`KC`
//! values of k by `NC` columns) is packed once and shared; each task packs up to `MC` rows of A
//! and runs the micro-kernel over its (B panel, A panel) pairs, A panels innermost so that one B
//! panel stays in L1 while the A block streams from L2. The micro-kernel is AMX's where the CPU
//! has it, else AVX512-BF16's ([`Kernel`]); both read the same B panels.

use std::sync::OnceLock;

use half::bf16;
use rayon::prelude::*;

use super::super::gemm::Matrix;
use super::pack::{MR, NR, PAIR_TILE, Packer, STRIP_ROWS, pack_a, pack_b, pack_strip, panel_pairs};
use super::{amx, avx512, child};

/// Whole tiles of pairs, so that only the last block of k is padded: a B panel is then 24 KiB (L1).
const KC: usize = 192;
const MC: usize = 32 * MR;
const NC: usize = 64 * NR;
const _: () = assert!(KC.is_multiple_of(2 * PAIR_TILE) && MC.is_multiple_of(MR) && MC.is_multiple_of(STRIP_ROWS));

/// The micro-kernel a product runs: chosen once per product, on the thread that calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    /// `vdpbf16ps`, `MR × NR` blocks from A panels ([`pack_a`]).
    Avx512,
    /// `tdpbf16ps`, `STRIP_ROWS × amx::COLUMNS` blocks from A strips ([`pack_strip`]).
    Amx,
}

#[cfg(test)]
thread_local! {
    /// The tests' choice of kernel on this thread, whatever the CPU has.
    static FORCED: std::cell::Cell<Option<Kernel>> = const { std::cell::Cell::new(None) };
}

impl Kernel {
    pub(super) fn current() -> Self {
        #[cfg(test)]
        if let Some(kernel) = FORCED.with(std::cell::Cell::get) {
            return kernel;
        }
        if amx_state() == amx::State::Used { Self::Amx } else { Self::Avx512 }
    }

    /// Rows of A one call of the kernel reads.
    fn rows(self) -> usize {
        match self {
            Self::Avx512 => MR,
            Self::Amx => STRIP_ROWS,
        }
    }
}

/// AMX as the products use it: [`amx::state`], or [`amx::State::FailedCheck`] when the AMX kernel
/// does not pass [`amx_agrees`] on this CPU (asked once, before its first product). The check runs
/// in a child process: a kernel that faults there (it has run only on an emulator of Intel's
/// specification) ends the child, and this process stays on AVX512-BF16.
pub(super) fn amx_state() -> amx::State {
    static STATE: OnceLock<amx::State> = OnceLock::new();
    // SAFETY: `amx_agrees` runs only where `amx::state` says AMX is `Used`.
    *STATE.get_or_init(|| checked(amx::state(), || unsafe { amx_agrees() }))
}

/// `state`, or `FailedCheck` where it is `Used` and `check` does not return true in a child process.
pub(super) fn checked(state: amx::State, check: impl FnOnce() -> bool) -> amx::State {
    if state != amx::State::Used {
        return state;
    }
    // SAFETY: the check runs on this thread (no rayon) and takes no lock but the allocator's. AMX
    // is granted to the child too: the permission is the process's, and inherited. It takes
    // milliseconds; the limit ends a child stuck on a lock held at the fork.
    let outcome = unsafe { child::in_child(check, std::time::Duration::from_secs(10)) };
    if outcome == child::Outcome::Returned(true) {
        return amx::State::Used;
    }
    let what = if outcome == child::Outcome::Returned(false) { "got a check product wrong".into() } else { format!("failed its check ({})", outcome.describe()) };
    eprintln!("warning: the AMX kernel {what} on this CPU: the bf16 products run on AVX512-BF16");
    amx::State::FailedCheck
}

/// Whether the AMX kernel's product of a 70 × 200 by a 200 × 100 matrix (the kernel's edges: a
/// partial strip and block, in place and spilled, a padded last tile) is within 1e-5·Σ|a·b| of the
/// f64 product of the rounded inputs, as the tests require of it. The kernel has been tested
/// against an emulation of Intel's specification; this checks the CPU agrees, before anyone's
/// model trains on it.
///
/// # Safety
/// The CPU has AMX and Linux granted it (or the tests' emulator stands in).
pub(super) unsafe fn amx_agrees() -> bool {
    let (m, k, n) = (70, 200, 100);
    let value = |i: usize| ((i * 7919 % 1009) as f32 - 504.0) / 256.0;
    let (a_values, b_values): (Vec<f32>, Vec<f32>) = ((0..m * k).map(value).collect(), (0..k * n).map(|i| value(i + 17)).collect());
    let (a, b) = (Matrix::rows_of(&a_values, m, k, k), Matrix::rows_of(&b_values, k, n, n));
    let mut out = vec![0.0f32; m * n];
    // SAFETY: m rows of n values; the views are inside their storage; as the caller promises.
    unsafe { gemm_on(Kernel::Amx, out.as_mut_ptr(), n, a, Rhs::View(b), false, false) };
    let rounded = |x: f32| super::from_bf16(super::to_bf16(x)) as f64;
    (0..m * n).all(|o| {
        let (i, j) = (o / n, o % n);
        let (sum, abs) = (0..k).fold((0.0, 0.0), |(sum, abs), l| {
            let p = rounded(a.at(i, l)) * rounded(b.at(l, j));
            (sum + p, abs + p.abs())
        });
        (out[o] as f64 - sum).abs() <= 1e-5 * abs + 1e-30
    })
}

/// `f` with this thread's products on `kernel` (the tests run both; the AMX one emulated where the
/// CPU lacks it).
#[cfg(test)]
pub(super) fn forcing<R>(kernel: Kernel, f: impl FnOnce() -> R) -> R {
    let before = FORCED.with(|forced| forced.replace(Some(kernel)));
    let result = f();
    FORCED.with(|forced| forced.set(before));
    result
}

/// Panels start on cache lines (the kernel's B loads then never split one).
#[repr(align(64))]
#[derive(Clone, Copy)]
#[allow(dead_code)] // read only through `words`
struct Line([u32; 16]);

fn buffer(len: usize) -> Vec<Line> {
    vec![Line([0; 16]); len.div_ceil(16)]
}

fn words(lines: &mut [Line]) -> &mut [u32] {
    // SAFETY: a Line is 16 u32 with no padding.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 16) }
}

thread_local! {
    /// Each thread's A block, kept between products: attention makes thousands of small ones.
    static A_BLOCK: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` on this thread's A block of at least `len` values.
fn with_a_block<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    A_BLOCK.with_borrow_mut(|lines| {
        if lines.len() * 16 < len {
            *lines = buffer(len);
        }
        f(&mut words(lines)[..len])
    })
}

/// The destination, written by several tasks at disjoint blocks.
#[derive(Clone, Copy)]
struct Dst(*mut f32);
// SAFETY: each task writes its own rows × columns of the destination.
unsafe impl Send for Dst {}
unsafe impl Sync for Dst {}

/// A view (or views) the tasks only read.
#[derive(Clone, Copy)]
struct Shared<T>(T);
// SAFETY: the caller keeps the views' memory alive and unchanged during the product.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T: Copy> Shared<T> {
    // A method, so that closures capture the whole (Sync) value rather than its field.
    fn get(&self) -> T {
        self.0
    }
}

/// The right operand of [`gemm`]: a view of f32 or of bf16 values (a frozen bf16 weight), packed
/// block by block as the product goes, or the panels of every block packed before ([`PackedB`]).
#[derive(Clone, Copy)]
pub(super) enum Rhs<'a> {
    View(Matrix),
    Bf16(Matrix<bf16>),
    Packed(&'a PackedB),
}

impl Rhs<'_> {
    fn shape(&self) -> (usize, usize) {
        match self {
            Self::View(b) => (b.rows, b.cols),
            Self::Bf16(b) => (b.rows, b.cols),
            Self::Packed(b) => (b.k, b.n),
        }
    }
}

/// Every block of a `k × n` right operand as [`gemm`] reads them, packed once: a frozen weight's
/// ([`super::frozen`]). Column blocks follow one another, and within one the blocks of k.
pub(in super::super) struct PackedB {
    k: usize,
    n: usize,
    lines: Vec<Line>,
}

impl PackedB {
    pub(super) fn pack(b: Matrix) -> Self {
        let (k, n) = (b.rows, b.cols);
        let mut lines = buffer(Self::words(k, n));
        let all = words(&mut lines);
        for (jc, nc, pc, kc) in blocks(k, n) {
            let (start, len) = Self::span(k, jc, nc, pc, kc);
            pack_block(Rhs::View(b), jc, nc, pc, kc, &mut all[start..start + len], rayon::current_num_threads() > 1);
        }
        Self { k, n, lines }
    }

    /// Where block (jc, pc) lies: earlier column blocks hold [`column_pairs`] pairs, earlier
    /// blocks of k in this column block `pc / 2` (each block of k but the last is `KC`, whole tiles).
    fn span(k: usize, jc: usize, nc: usize, pc: usize, kc: usize) -> (usize, usize) {
        let panels_n = nc.div_ceil(NR);
        ((jc / NR * column_pairs(k) + panels_n * pc / 2) * NR, panels_n * panel_pairs(kc) * NR)
    }

    fn block(&self, jc: usize, nc: usize, pc: usize, kc: usize) -> &[u32] {
        let (start, len) = Self::span(self.k, jc, nc, pc, kc);
        // SAFETY: a Line is 16 u32 with no padding.
        let all = unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u32>(), self.lines.len() * 16) };
        &all[start..start + len]
    }

    fn words(k: usize, n: usize) -> usize {
        n.div_ceil(NR) * column_pairs(k) * NR
    }

    /// The bytes the panels of a `k × n` operand take.
    pub(super) fn bytes_for(k: usize, n: usize) -> usize {
        Self::words(k, n).div_ceil(16) * size_of::<Line>()
    }

    pub(super) fn bytes(&self) -> usize {
        Self::bytes_for(self.k, self.n)
    }
}

/// The pairs a panel's column holds over all blocks of `k` (`k ≥ 1`): only the last block is padded.
fn column_pairs(k: usize) -> usize {
    let last = (k - 1) / KC * KC;
    last / 2 + panel_pairs(k - last)
}

/// The blocks of a `k × n` right operand in the products' order: `(jc, nc, pc, kc)`.
fn blocks(k: usize, n: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..n).step_by(NC).flat_map(move |jc| (0..k).step_by(KC).map(move |pc| (jc, NC.min(n - jc), pc, KC.min(k - pc))))
}

/// Block (jc, pc) of the view `b` (`nc` columns, `kc` values of k) as panels into `out`, each
/// padded with zero pairs to [`panel_pairs`].
fn pack_block(b: Rhs, jc: usize, nc: usize, pc: usize, kc: usize, out: &mut [u32], parallel: bool) {
    let b = Shared(b);
    let (panel, packed) = (panel_pairs(kc) * NR, kc.div_ceil(2) * NR);
    let pack_panel = |(q, out): (usize, &mut [u32])| {
        let (pairs, padding) = out.split_at_mut(packed);
        let (j0, cols) = (jc + q * NR, NR.min(nc - q * NR));
        match b.get() {
            Rhs::View(view) => pack_b(view, pc, kc, j0, cols, pairs, Packer::Avx512),
            Rhs::Bf16(view) => pack_b(view, pc, kc, j0, cols, pairs, Packer::Avx512),
            Rhs::Packed(_) => unreachable!("packed panels are not packed again"),
        }
        padding.fill(0);
    };
    if parallel {
        out.par_chunks_mut(panel).enumerate().for_each(pack_panel);
    } else {
        out.chunks_mut(panel).enumerate().for_each(pack_panel);
    }
}

impl Dst {
    /// # Safety
    /// `offset` is inside the destination.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: as the caller promises.
        unsafe { self.0.add(offset) }
    }
}

/// `dst (+)= a·b` in bf16 with f32 accumulation; `threads` as in [`super::super::gemm::gemm_into`].
///
/// # Safety
/// As [`super::super::gemm::gemm_into`]; the CPU has AVX512-BF16.
pub(super) unsafe fn gemm(dst: *mut f32, ldc: usize, a: Matrix, b: Rhs, accumulate: bool, threads: bool) {
    // SAFETY: as the caller promises.
    unsafe { gemm_on(Kernel::current(), dst, ldc, a, b, accumulate, threads) }
}

/// [`gemm`] on `kernel`.
///
/// # Safety
/// As [`gemm`]; for [`Kernel::Amx`], the CPU has AMX and Linux granted it (or the tests' emulator
/// stands in).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_on(kernel: Kernel, dst: *mut f32, ldc: usize, a: Matrix, b: Rhs, accumulate: bool, threads: bool) {
    let ((k_b, n), (m, k)) = (b.shape(), (a.rows, a.cols));
    debug_assert_eq!(k, k_b);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // SAFETY: the caller's m rows of n values.
            (0..m).for_each(|i| unsafe { std::ptr::write_bytes(dst.add(i * ldc), 0, n) });
        }
        return;
    }
    let mr = kernel.rows();
    let workers = rayon::current_num_threads();
    let parallel = threads && m * n * k >= 192 * 192 * 192 && workers > 1;
    let dst = Dst(dst);
    let a = Shared(a);
    // Row blocks of at most MC rows and of equal size, as many as a multiple of the workers when
    // threaded: 960 rows in five blocks of 192 left one of two threads idle for a sixth of a product.
    let panels = m.div_ceil(mr);
    let mut blocks_m = panels.div_ceil(MC / mr);
    if parallel {
        blocks_m = blocks_m.next_multiple_of(workers).min(panels);
    }
    let block_rows = panels.div_ceil(blocks_m) * mr;
    let blocks_m = m.div_ceil(block_rows);
    // A view's B blocks: one buffer for the whole product, cut to each block's size below.
    let mut b_lines = match b {
        Rhs::View(_) | Rhs::Bf16(_) => buffer(NC.min(n).div_ceil(NR) * panel_pairs(KC.min(k)) * NR),
        Rhs::Packed(_) => Vec::new(),
    };
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let panels_n = nc.div_ceil(NR);
        // Too few row blocks to keep every worker busy: split the columns too.
        let chunks_n = if parallel && blocks_m < 2 * workers { (2 * workers).div_ceil(blocks_m).min(panels_n) } else { 1 };
        let per_chunk = panels_n.div_ceil(chunks_n);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let (pairs, padded) = (kc.div_ceil(2), panel_pairs(kc));
            // The first block of k writes the destination unless the caller accumulates into it.
            let add = accumulate || pc > 0;
            let b_words: &[u32] = match b {
                Rhs::View(_) | Rhs::Bf16(_) => {
                    let out = &mut words(&mut b_lines)[..panels_n * padded * NR];
                    pack_block(b, jc, nc, pc, kc, out, parallel);
                    out
                }
                Rhs::Packed(packed) => packed.block(jc, nc, pc, kc),
            };
            let task = |t: usize| {
                let (block, chunk) = (t / chunks_n, t % chunks_n);
                let i0 = block * block_rows;
                let mc = block_rows.min(m - i0);
                let panels_b = chunk * per_chunk..((chunk + 1) * per_chunk).min(panels_n);
                let b_panel = |qb: usize| b_words[qb * padded * NR..].as_ptr();
                match kernel {
                    Kernel::Avx512 => with_a_block(mc.div_ceil(MR) * pairs * MR, |a_words| {
                        for (q, out) in a_words.chunks_mut(pairs * MR).enumerate() {
                            pack_a(a.get(), i0 + q * MR, MR.min(mc - q * MR), pc, kc, out, Packer::Avx512);
                        }
                        for qb in panels_b {
                            let j = qb * NR;
                            for (q, a_panel) in a_words.chunks(pairs * MR).enumerate() {
                                let r = q * MR;
                                // SAFETY: both panels hold `pairs` pairs; the block is inside the
                                // caller's destination; the caller checked the CPU.
                                unsafe {
                                    let c = dst.at((i0 + r) * ldc + jc + j);
                                    avx512::kernel(pairs, a_panel.as_ptr(), b_panel(qb), c, ldc, MR.min(mc - r), NR.min(nc - j), add);
                                }
                            }
                        }
                    }),
                    Kernel::Amx => with_a_block(mc.div_ceil(STRIP_ROWS) * padded * STRIP_ROWS, |a_words| {
                        for (q, out) in a_words.chunks_mut(padded * STRIP_ROWS).enumerate() {
                            pack_strip(a.get(), i0 + q * STRIP_ROWS, STRIP_ROWS.min(mc - q * STRIP_ROWS), pc, kc, out, Packer::Avx512);
                        }
                        // SAFETY: `Kernel::Amx` only where AMX is available (or emulated in the tests).
                        unsafe { amx::configure() };
                        for qb in panels_b {
                            for half in (0..NR.min(nc - qb * NR)).step_by(amx::COLUMNS) {
                                let j = qb * NR + half;
                                for (q, strip) in a_words.chunks(padded * STRIP_ROWS).enumerate() {
                                    let r = q * STRIP_ROWS;
                                    // SAFETY: the strip and the panel hold `padded` pairs (whole
                                    // tiles); the block is inside the caller's destination; the
                                    // tiles were configured above.
                                    unsafe {
                                        let c = dst.at((i0 + r) * ldc + jc + j);
                                        let (rows, cols) = (STRIP_ROWS.min(mc - r), amx::COLUMNS.min(nc - j));
                                        amx::kernel(padded / PAIR_TILE, strip.as_ptr(), padded, b_panel(qb).add(half), c, ldc, rows, cols, add);
                                    }
                                }
                            }
                        }
                        // SAFETY: as configure.
                        unsafe { amx::release() };
                    }),
                }
            };
            if parallel {
                (0..blocks_m * chunks_n).into_par_iter().for_each(task);
            } else {
                (0..blocks_m * chunks_n).for_each(task);
            }
        }
    }
}
