//! bf16 matrix products with f32 accumulation (mixed precision) for the CPU kernels, and the
//! process-wide switch that sends [`super::gemm::gemm_into`] to them.
//!
//! - [`pack`]: rounding to bf16 and the k-pair panels.
//! - [`blocked`]: cache blocking and threads over the panels.
//! - `avx512`: the `vdpbf16ps` micro-kernel and the vector packing (x86-64 with AVX512-BF16,
//!   detected at run time). Elsewhere the products stay f32.

use std::sync::atomic::{AtomicBool, Ordering};

use super::gemm::Matrix;
use crate::backend::MatmulPrecision;

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod blocked;
// Only the rounding is used without the x86-64 kernels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod pack;

pub use pack::{from_bf16, to_bf16};

static BF16: AtomicBool = AtomicBool::new(false);

/// The precision of every product the CPU kernels make from now on (Linear layers, the tied head,
/// LoRA, attention), in every thread. `Bf16` takes effect only where the CPU has AVX512-BF16
/// ([`matmul_path`] says which path runs).
pub fn set_matmul_precision(precision: MatmulPrecision) {
    BF16.store(precision == MatmulPrecision::Bf16, Ordering::Relaxed);
}

pub fn matmul_precision() -> MatmulPrecision {
    if BF16.load(Ordering::Relaxed) { MatmulPrecision::Bf16 } else { MatmulPrecision::F32 }
}

/// Which path the products take: `"f32"`, `"avx512-bf16"`, or `"f32 (no AVX512-BF16)"` when bf16
/// was asked for on a CPU without it (for benchmark output and run records).
pub fn matmul_path() -> &'static str {
    match (matmul_precision(), avx512_bf16()) {
        (MatmulPrecision::F32, _) => "f32",
        (MatmulPrecision::Bf16, true) => "avx512-bf16",
        (MatmulPrecision::Bf16, false) => "f32 (no AVX512-BF16)",
    }
}

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

/// Whether [`super::gemm::gemm_into`] should hand its product to [`gemm_into`].
pub(super) fn enabled() -> bool {
    BF16.load(Ordering::Relaxed) && avx512_bf16()
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
        blocked::gemm(dst, dst_row, a, b, accumulate, threads)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no bf16 products without AVX512-BF16: {dst:?} {dst_row} {a:?} {b:?} {accumulate} {threads}")
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
