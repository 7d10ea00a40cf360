//! bf16 matrix products with f32 accumulation (mixed precision) for the CPU kernels;
//! [`super::precision`]'s switch sends [`super::gemm::gemm_into`] to them.
//!
//! - [`pack`]: rounding to bf16 and the k-pair panels.
//! - [`blocked`]: cache blocking and threads over the panels.
//! - [`frozen`]: the panels of frozen weights, packed once and kept.
//! - `avx512`: the `vdpbf16ps` micro-kernel and the vector packing (x86-64 with AVX512-BF16,
//!   detected at run time). Elsewhere the products stay f32.
//! - `amx`: the `tdpbf16ps` micro-kernel (AMX, detected at run time, `LLMFS_AMX=0` to refuse it),
//!   which `blocked` prefers where the CPU has it, once its check has passed in a child process
//!   (`child`); `amx_emulator` runs it in the tests elsewhere.

use std::cell::Cell;
use std::marker::PhantomData;

use burn::backend::flex::FlexTensor;

use super::gemm::Matrix;
use crate::backend::MatmulPrecision;

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(all(test, target_arch = "x86_64"))]
mod amx_emulator;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod blocked;
#[cfg(target_arch = "x86_64")]
mod child;
#[cfg(target_arch = "x86_64")]
mod frozen;
// Only the rounding is used without the x86-64 kernels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod pack;

pub use pack::{from_bf16, to_bf16};

/// Columns of the output the micro-kernel computes at once: a product narrower than this
/// wastes the rest of it (see `super::nf4`'s panels).
pub(super) const KERNEL_COLUMNS: usize = pack::NR;

/// Whether this CPU runs the bf16 kernels (std caches the detection).
pub(super) fn avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which kernel the bf16 products run here, as [`super::precision::matmul_path`] names it (given
/// [`avx512_bf16`]): AMX's, or `vdpbf16ps`'s and why not AMX's on a CPU that has it.
pub(super) fn kernel_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        match blocked::amx_state() {
            amx::State::Used => "amx-bf16",
            amx::State::Absent => "avx512-bf16",
            amx::State::Refused => "avx512-bf16 (LLMFS_AMX=0)",
            amx::State::NotGranted => "avx512-bf16 (Linux did not grant AMX's tile state)",
            amx::State::FailedCheck => "avx512-bf16 (the AMX kernel failed its check on this CPU)",
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "avx512-bf16"
    }
}

/// Whether [`super::gemm::gemm_into`] should hand its product to [`gemm_into`].
pub(super) fn enabled() -> bool {
    crate::backend::matmul_precision() == MatmulPrecision::Bf16 && avx512_bf16()
}

/// `dst (+)= a·b` with `a` and `b` rounded to bf16, accumulated in f32: the contract of
/// [`super::gemm::gemm_into`]. Only where [`avx512_bf16`] holds.
///
/// # Safety
/// As [`super::gemm::gemm_into`]; the CPU has AVX512-BF16.
pub(super) unsafe fn gemm_into(dst: *mut f32, dst_row: usize, a: Matrix, b: Matrix, accumulate: bool, threads: bool) {
    debug_assert!(avx512_bf16());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as the caller promises.
    unsafe {
        blocked::gemm(dst, dst_row, a, blocked::Rhs::View(b), accumulate, threads)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no bf16 products without AVX512-BF16: {dst:?} {dst_row} {a:?} {b:?} {accumulate} {threads}")
}

/// `dst (+)= a·w` with `w` a view of bf16 values (a frozen bf16 weight or its transpose), packed
/// into the panels as stored: no f32 copy of the weight between. `false`, having done nothing,
/// unless the products are bf16 here.
///
/// # Safety
/// As [`super::gemm::gemm_into`].
pub(super) unsafe fn gemm_bf16_weight_into(dst: *mut f32, dst_row: usize, a: Matrix, w: Matrix<half::bf16>, accumulate: bool, threads: bool) -> bool {
    if !enabled() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as the caller promises; `enabled` checked the CPU.
        unsafe { blocked::gemm(dst, dst_row, a, blocked::Rhs::Bf16(w), accumulate, threads) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no bf16 products without AVX512-BF16: {dst:?} {dst_row} {a:?} {w:?} {accumulate} {threads}")
}

thread_local! {
    /// How many [`KeepFrozenPanels`] live on this thread.
    static KEEP_FROZEN: Cell<usize> = const { Cell::new(0) };
}

/// While one lives, the bf16 products this thread makes of weights outside autodiff keep those
/// weights' packed panels for the next products ([`frozen`]): for weights that no step changes,
/// as a classifier's frozen blocks. Elsewhere (an eval's copy of weights that train) kept panels
/// would outlive their use until the optimizer's next step, at half the weights' size.
#[must_use]
pub struct KeepFrozenPanels(PhantomData<*const ()>); // not Send: the count is this thread's

pub fn keep_frozen_panels() -> KeepFrozenPanels {
    KEEP_FROZEN.with(|count| count.set(count.get() + 1));
    KeepFrozenPanels(PhantomData)
}

impl Drop for KeepFrozenPanels {
    fn drop(&mut self) {
        KEEP_FROZEN.with(|count| count.set(count.get() - 1));
    }
}

/// [`gemm_into`] with `b` a view of `weight`, a weight outside autodiff, inside a
/// [`keep_frozen_panels`] scope: its panels are packed on first use and reused while its storage
/// lives unchanged ([`frozen`]). `false`, having done nothing, outside such a scope or unless the
/// products are bf16 here.
///
/// # Safety
/// As [`super::gemm::gemm_into`]; `b` views `weight`'s storage.
pub(super) unsafe fn gemm_frozen_into(dst: *mut f32, dst_row: usize, a: Matrix, weight: &FlexTensor, b: Matrix, accumulate: bool) -> bool {
    if !enabled() || KEEP_FROZEN.with(Cell::get) == 0 {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // None past the budget: then packed block by block, as any other.
        let packed = frozen::packed(weight, b);
        let rhs = packed.as_deref().map_or(blocked::Rhs::View(b), blocked::Rhs::Packed);
        // SAFETY: as the caller promises; `enabled` checked the CPU.
        unsafe { blocked::gemm(dst, dst_row, a, rhs, accumulate, true) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no bf16 products without AVX512-BF16: {dst:?} {dst_row} {a:?} {weight:?} {b:?} {accumulate}")
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
