//! `--precision`: the arithmetic of training's matrix products, by Lightning's names. Master
//! weights, AdamW's moments, norms, softmax, the loss and every reduction stay f32 either way;
//! `bf16-mixed` rounds the inputs of the Linear layers', output head's and attention's products
//! (forward and backward) to bf16 and accumulates in f32, as `torch.autocast` with bf16 does;
//! `f16-mixed` rounds them to f16 and scales the loss ([`GradScaler`]), as `torch.autocast` with
//! f16 and `torch.amp.GradScaler` do. On the CPU llmfs's kernels do the rounding; other backends
//! (CUDA, LibTorch) run the products in bf16 or f16 ([`gpt::ops::matmul`]).

use anyhow::{Result, bail};
use gpt::backend::MatmulPrecision;
use gpt::backend::{matmul_precision, set_matmul_precision};
use gpt::burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::train::grad_scaler::GradScaler;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Matrix products with bf16 inputs and f32 accumulation (the CPU's AVX512-BF16 kernels; other
    /// backends' bf16 products).
    Bf16Mixed,
    /// Matrix products with f16 inputs and f32 accumulation (emulated: f16-rounded inputs, the
    /// f32 GEMM), and dynamic loss scaling.
    F16Mixed,
}

impl Precision {
    /// Makes the products of a run on `device` take this precision until the guard drops. On the
    /// CPU bf16 products need AVX512-BF16 (elsewhere they stay f32, and the guard says so); f16
    /// products are emulated on any CPU. Other backends cast the products' inputs to bf16 or f16
    /// ([`gpt::ops::matmul`]): an error where the device lacks that dtype (wgpu's WGSL has no bf16).
    pub fn apply(self, device: &Device) -> Result<PrecisionGuard> {
        let wanted = match self {
            Precision::F32 => MatmulPrecision::F32,
            Precision::Bf16Mixed => MatmulPrecision::Bf16,
            Precision::F16Mixed => MatmulPrecision::F16,
        };
        let flex = gpt::backend::is_flex(device);
        if let Some(dtype) = wanted.dtype().filter(|&d| !flex && !device.supports_dtype(d)) {
            bail!("--precision {self}: the device {device:?} has no {dtype:?} arithmetic; use --precision f32");
        }
        let previous = matmul_precision();
        set_matmul_precision(wanted);
        Ok(PrecisionGuard { previous, flex })
    }

    /// The loss scaler a run at this precision needs: f16's 5 exponent bits flush small gradients
    /// to zero unless the loss is scaled up; bf16 has f32's range and f32 needs none.
    pub fn loss_scaler(self) -> Option<GradScaler> {
        (self == Precision::F16Mixed).then(GradScaler::default)
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16Mixed => "bf16-mixed",
            Precision::F16Mixed => "f16-mixed",
        })
    }
}

/// Puts the products' precision back as it was (a run inside a process, as in tests, leaves
/// no trace on the next).
#[must_use]
pub struct PrecisionGuard {
    previous: MatmulPrecision,
    /// The run's device is the CPU backend (whose kernels have paths of their own).
    flex: bool,
}

impl PrecisionGuard {
    /// Which path the products take now: on the CPU `"f32"`, `"amx-bf16"`, `"avx512-bf16"`, `"f32
    /// (no AVX512-BF16)"` or the f16 emulation's; elsewhere `"f32"`, or the backend's own bf16 or f16
    /// products.
    pub fn path(&self) -> &'static str {
        match (self.flex, matmul_precision()) {
            (true, _) => gpt::backend::kernels::matmul_path(),
            (false, MatmulPrecision::F32) => "f32",
            (false, MatmulPrecision::Bf16) => "bf16 (the backend's products, f32 results)",
            (false, MatmulPrecision::F16) => "f16 (the backend's products, f32 results)",
        }
    }
}

impl Drop for PrecisionGuard {
    fn drop(&mut self) {
        set_matmul_precision(self.previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lightnings_and_f32_is_the_default() {
        assert_eq!(serde_json::to_value(Precision::Bf16Mixed).unwrap(), "bf16-mixed");
        assert_eq!(serde_json::from_value::<Precision>("f32".into()).unwrap(), Precision::F32);
        assert_eq!(Precision::default(), Precision::F32);
        assert_eq!(<Precision as clap::ValueEnum>::from_str("bf16-mixed", false).unwrap(), Precision::Bf16Mixed);
        assert_eq!(serde_json::to_value(Precision::F16Mixed).unwrap(), "f16-mixed");
        assert_eq!(<Precision as clap::ValueEnum>::from_str("f16-mixed", false).unwrap(), Precision::F16Mixed);
        assert_eq!(Precision::F16Mixed.to_string(), "f16-mixed");
    }

    #[test]
    fn only_f16_mixed_scales_the_loss() {
        assert_eq!(Precision::F16Mixed.loss_scaler(), Some(GradScaler::default()));
        assert_eq!(Precision::Bf16Mixed.loss_scaler(), None);
        assert_eq!(Precision::F32.loss_scaler(), None);
    }
}
