//! The process-wide precision of matrix products (`--precision`), on every backend: llmfs's CPU
//! kernels read it (`kernels::matmul_path` says which path that takes on this CPU), and on the
//! other backends the products made with Burn's ops take [`mixed_dtype`] ([`crate::ops::matmul`]).

use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::DType;

/// The precision of matrix products (`set_matmul_precision`): `Bf16` rounds their inputs to bf16
/// and accumulates in f32 (mixed precision): on the CPU where it has the instructions for it (f32
/// elsewhere), on other backends with their bf16 products; `F16` rounds them to IEEE f16 (overflow
/// to infinity, subnormals as f16 has them) and accumulates in f32 (emulated on any CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulPrecision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl MatmulPrecision {
    /// The dtype the products' inputs take, `None` in f32.
    pub fn dtype(self) -> Option<DType> {
        match self {
            Self::F32 => None,
            Self::Bf16 => Some(DType::BF16),
            Self::F16 => Some(DType::F16),
        }
    }
}

/// [`MatmulPrecision`] as a number (an atomic enum): every thread of the GEMM reads it.
static PRECISION: AtomicU8 = AtomicU8::new(0);

/// The precision of every product made from now on (Linear layers, the heads, LoRA, attention), in
/// every thread.
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

/// The dtype products made with Burn's ops take at this precision (their inputs cast to it, their
/// result cast back), `None` in f32.
pub fn mixed_dtype() -> Option<DType> {
    matmul_precision().dtype()
}
