//! The process-wide precision of the CPU kernels' products: the switch that sends
//! [`super::gemm::gemm_into`] to the bf16 kernels ([`super::bf16`]) or the f16 emulation
//! ([`super::f16`]), and which path that is on this CPU.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::backend::MatmulPrecision;

/// [`MatmulPrecision`] as a number (an atomic enum): every thread of the GEMM reads it.
static PRECISION: AtomicU8 = AtomicU8::new(0);

/// The precision of every product the CPU kernels make from now on (Linear layers, the tied head,
/// LoRA, attention), in every thread. `Bf16` takes effect only where the CPU has AVX512-BF16;
/// `F16` everywhere ([`matmul_path`] says which path runs).
pub fn set_matmul_precision(precision: MatmulPrecision) {
    let code = match precision {
        MatmulPrecision::F32 => 0,
        MatmulPrecision::Bf16 => 1,
        MatmulPrecision::F16 => 2,
    };
    PRECISION.store(code, Ordering::Relaxed);
}

pub fn matmul_precision() -> MatmulPrecision {
    match PRECISION.load(Ordering::Relaxed) {
        1 => MatmulPrecision::Bf16,
        2 => MatmulPrecision::F16,
        _ => MatmulPrecision::F32,
    }
}

/// Which path the products take: `"f32"`, `"avx512-bf16"`, `"f32 (no AVX512-BF16)"` when bf16 was
/// asked for on a CPU without it, or the f16 emulation (no CPU of ours multiplies f16 natively):
/// for benchmark output and run records.
pub fn matmul_path() -> &'static str {
    match (matmul_precision(), super::bf16::avx512_bf16()) {
        (MatmulPrecision::F32, _) => "f32",
        (MatmulPrecision::Bf16, true) => "avx512-bf16",
        (MatmulPrecision::Bf16, false) => "f32 (no AVX512-BF16)",
        (MatmulPrecision::F16, _) => super::f16::PATH,
    }
}
