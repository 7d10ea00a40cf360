//! What the kernels share to run on rayon's pool: [`par_map`], the output pointer of tasks that
//! write disjoint parts of one buffer ([`SharedOut`]), and the product by a quantized weight for
//! more rows than decoding streams ([`panels_times_transposed`]: `super::nf4`'s and
//! `super::int8`'s).

use rayon::prelude::*;

use super::gemm::{Matrix, gemm_into};

/// `(0..tasks).map(f)` on rayon's pool, or on the calling thread when there is one task or the
/// pool has one thread: handing each product to a sleeping worker and back costs tens of
/// microseconds, which adds up over the ~50 products of a decoding step.
pub(super) fn par_map<T: Send>(tasks: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    if tasks <= 1 || rayon::current_num_threads() <= 1 {
        (0..tasks).map(f).collect()
    } else {
        (0..tasks).into_par_iter().map(f).collect()
    }
}

/// A raw pointer that rayon tasks may share: each task writes its own (disjoint) values.
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32);
// SAFETY: the tasks given one write disjoint elements, and the buffer outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element `offset` values on (a method, so that closures capture the whole `Send`
    /// value). Computing it is safe; writing through it is the caller's promise.
    pub(super) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Rows of `W` per dequantized panel of `x·Wᵀ` in f32: the GEMM's products with 16 to 32 output
/// columns ran 1.5 to 2.5 times as fast as wider ones on a Zen 4 (`[64 | 512, 2048]·[2048,
/// 8192]`, one thread), and such a panel stays in L1/L2.
pub(super) const PANEL_ROWS: usize = 16;

/// The width of dequantized panels (and strips): `f32_width` in f32; under bf16-mixed two of the
/// bf16 micro-kernel's 64-column blocks, which a 16-wide panel filled a quarter of (and re-packed
/// `x` for each panel: measured 63 % of a QLoRA step of SmolLM2-135M in the kernel and `x`'s
/// packing).
pub(super) fn panel_width(f32_width: usize) -> usize {
    if super::bf16::enabled() { 2 * super::bf16::KERNEL_COLUMNS } else { f32_width }
}

/// `y = x·Wᵀ (+ bias)` for a quantized `W` `[rows, cols]` (HF's `[out, in]`): `x` `[n, cols]`
/// row-major, `y` `[n, rows]`. Panels of `W`'s rows are dequantized by `dequantize(r0, r1,
/// panel)` (rows `r0..r1`, row-major f32) into the GEMM, one panel per task.
pub(super) fn panels_times_transposed(
    x: &[f32],
    n: usize,
    [rows, cols]: [usize; 2],
    bias: Option<&[f32]>,
    dequantize: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut y: Vec<f32> = Vec::with_capacity(n * rows);
    if let Some(bias) = bias {
        (0..n).for_each(|_| y.extend_from_slice(bias));
    }
    let height = panel_width(PANEL_ROWS).min(rows);
    let out = SharedOut(y.as_mut_ptr());
    (0..rows.div_ceil(height)).into_par_iter().for_each_init(
        || vec![0.0f32; height * cols],
        |panel, p| {
            let (r0, r1) = (p * height, ((p + 1) * height).min(rows));
            let panel = &mut panel[..(r1 - r0) * cols];
            dequantize(r0, r1, panel);
            let (x_m, panel_t) = (Matrix::rows_of(x, n, cols, cols), Matrix::rows_of(panel, r1 - r0, cols, cols).t());
            // SAFETY: y has room for n rows of `rows`; this panel writes columns r0..r1 of each
            // (adding to the bias there), which no other panel writes.
            unsafe { gemm_into(out.at(r0), rows, x_m, panel_t, bias.is_some(), false) };
        },
    );
    // SAFETY: the panels cover columns 0..rows of every row (or added to the bias written there).
    unsafe { y.set_len(n * rows) };
    y
}
