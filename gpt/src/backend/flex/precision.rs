//! Which path the CPU kernels' products take at the process-wide precision
//! ([`crate::backend::precision`]): [`super::gemm::gemm_into`] sends them to the bf16 kernels
//! ([`super::bf16`]) or the f16 emulation ([`super::f16`]).

use crate::backend::{MatmulPrecision, matmul_precision};

/// Which path the products take: `"f32"`, `"amx-bf16"` (AMX tiles), `"avx512-bf16"` (with why not
/// AMX on a CPU that has it), `"f32 (no AVX512-BF16)"` when bf16 was asked for on a CPU without
/// it, or the f16 emulation (no CPU of ours multiplies f16 natively): for benchmark output and run
/// records.
pub fn matmul_path() -> &'static str {
    match (matmul_precision(), super::bf16::avx512_bf16()) {
        (MatmulPrecision::F32, _) => "f32",
        (MatmulPrecision::Bf16, true) => super::bf16::kernel_path(),
        (MatmulPrecision::Bf16, false) => "f32 (no AVX512-BF16)",
        (MatmulPrecision::F16, _) => super::f16::PATH,
    }
}
