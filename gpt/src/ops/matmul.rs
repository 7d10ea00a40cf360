//! Matrix products made with Burn's ops (every backend but the CPU's kernels, and the CPU where a
//! kernel does not apply), in the dtype they should run in: a weight's own dtype when it is kept in
//! another than the activations (`--dtype bf16`), and under mixed precision (`--precision
//! bf16-mixed|f16-mixed`) bf16 or f16 with the result back in f32, as `torch.autocast` does. On the
//! CPU the kernels round for themselves ([`crate::backend::kernels::matmul_path`]).

use burn::prelude::*;
use burn::tensor::DType;

use crate::backend::{is_flex, precision::mixed_dtype};

/// The dtype of mixed-precision products on `device`, `None` in f32 or on the CPU backend.
fn mixed_on(device: &Device) -> Option<DType> {
    mixed_dtype().filter(|_| !is_flex(device))
}

/// `x·W`: in the mixed-precision dtype, else in the weight's dtype (bf16 tensor cores on GPUs for
/// a bf16 weight); the result comes back in the activations' dtype.
pub fn matmul_weight(x: Tensor<2>, weight: Tensor<2>) -> Tensor<2> {
    let compute = mixed_on(&x.device()).unwrap_or(weight.dtype());
    matmul_in(x, weight, compute)
}

/// `a·b` of activations (attention's scores and weighted values, LoRA's factors), in the
/// mixed-precision dtype when there is one.
pub fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    let compute = mixed_on(&a.device()).unwrap_or(a.dtype());
    matmul_in(a, b, compute)
}

/// `a·b` with both inputs cast to `compute` and the result back to `a`'s dtype. The casts are
/// no-ops where the dtypes agree.
fn matmul_in<const D: usize>(a: Tensor<D>, b: Tensor<D>, compute: DType) -> Tensor<D> {
    let dtype = a.dtype();
    a.cast(compute).matmul(b.cast(compute)).cast(dtype)
}
