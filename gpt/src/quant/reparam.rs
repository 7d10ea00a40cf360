//! NF4 and int8 weights inside Burn's modules, as reparameterizations of the Linear weights they
//! replace: the model code does not change, and [`crate::ops::linear`] multiplies by the
//! quantized weight directly on the CPU.
//!
//! - [`Nf4Weight`] (`--quantize nf4` for inference): the weight is the NF4 matrix alone.
//! - [`Int8Weight`] (`--quantize int8`, inference only): the int8 matrix alone.
//! - [`QloraAdapter`] (QLoRA): the NF4 matrix plus LoRA factors `A` `[in, r]`, `B` `[r, out]`, with
//!   the path name (`lora`) and field names of Burn's `LoraAdapter`, so the factors are
//!   `…weight.lora.a/b` for PEFT files, seeded init, the optimizer and checkpoints alike.
//!
//! The stored base of a quantized parameter is an empty `[in, 0]` placeholder (the f32 copy is
//! freed); `Param::val` dequantizes (Burn's `[in, out]`, plus `s·A·B` for an adapter), which is
//! what non-CPU backends, `materialize()` and export use. The bases announce their matrices to
//! visitors as `crate::io::params::FROZEN_MATRIX` modules (see [`Nf4Base`]).

use std::sync::Arc;

use burn::module::{Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor, Param, ParamGroup, Reparameterization};
use burn::prelude::*;

use super::at_load::Quantized;
use super::{Int8Matrix, Nf4Matrix};
use crate::error::{GptError, Result};
use crate::io::params::{frozen_matrix_shape, transpose, visit_frozen_matrix};

/// A scheme for `--quantize`: NF4 (QLoRA's, inference too) or int8 (inference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    Nf4(Nf4Options),
    Int8,
}

/// How to quantize: NF4 in blocks of 64, optionally with the absmax double-quantized to 8 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nf4Options {
    pub double_quant: bool,
}

/// A quantized matrix format a module can hold: its shape (HF's `[out, in]`) and its values
/// dequantized, row-major.
pub trait FrozenFormat: std::fmt::Debug + Send + Sync + 'static {
    /// For the module's display (`Nf4Matrix [rows, cols]`).
    const NAME: &'static str;
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    fn dequantize(&self) -> Vec<f32>;
}

impl FrozenFormat for Nf4Matrix {
    const NAME: &'static str = "Nf4Matrix";

    fn rows(&self) -> usize {
        Nf4Matrix::rows(self)
    }

    fn cols(&self) -> usize {
        Nf4Matrix::cols(self)
    }

    fn dequantize(&self) -> Vec<f32> {
        Nf4Matrix::dequantize(self)
    }
}

impl FrozenFormat for Int8Matrix {
    const NAME: &'static str = "Int8Matrix";

    fn rows(&self) -> usize {
        Int8Matrix::rows(self)
    }

    fn cols(&self) -> usize {
        Int8Matrix::cols(self)
    }

    fn dequantize(&self) -> Vec<f32> {
        Int8Matrix::dequantize(self)
    }
}

/// A quantized matrix held by a module (shared, never copied: clones of the model and the
/// autodiff graph point at the same bytes). Not a parameter: nothing trains it, records skip it.
///
/// A visitor cannot see a reparameterization's non-parameter fields and the stored base is an
/// empty placeholder, so `visit` enters an empty module named after the quantized shape: that
/// is how [`crate::io::parameter_counts`] counts quantized weights as frozen parameters.
#[derive(Debug)]
pub struct FrozenBase<F>(pub Arc<F>);

/// An NF4 matrix in a module.
pub type Nf4Base = FrozenBase<Nf4Matrix>;
/// An int8 matrix in a module.
pub type Int8Base = FrozenBase<Int8Matrix>;

impl<F> Clone for FrozenBase<F> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<F: FrozenFormat> FrozenBase<F> {
    /// The dequantized weight in Burn's `[in, out]` layout, on `device`.
    pub fn dequantized(&self, device: &Device) -> Tensor<2> {
        let w = &self.0;
        let values = transpose(&w.dequantize(), w.rows(), w.cols());
        Tensor::from_data(TensorData::new(values, [w.cols(), w.rows()]), device)
    }

    /// `weight` (`[in, out]`) as the rank-`D` parameter the matrix replaces: a
    /// reparameterization's value.
    fn as_param<const D: usize>(&self, weight: Tensor<2>) -> Tensor<D> {
        weight.reshape(Shape::from(vec![self.0.cols(), self.0.rows()]))
    }
}

impl<F: FrozenFormat> Module for FrozenBase<F> {
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        visit_frozen_matrix(visitor, self.0.rows(), self.0.cols());
    }

    fn map<M: ModuleMapper>(self, _mapper: &mut M) -> Self {
        self
    }

    fn to_device(self, _device: &Device) -> Self {
        self
    }

    fn fork(self, _device: &Device) -> Self {
        self
    }

    fn collect_devices(&self, devices: Devices) -> Devices {
        devices
    }

    fn materialize(self) -> Self {
        self
    }

    fn valid(&self) -> Self {
        self.clone()
    }

    fn train(self) -> Self {
        self
    }
}

impl<F: FrozenFormat> ModuleDisplayDefault for FrozenBase<F> {
    fn content(&self, content: Content) -> Option<Content> {
        content.add_formatted(&format!("{} [{}, {}]", F::NAME, self.0.rows(), self.0.cols())).optional()
    }
}

impl<F: FrozenFormat> ModuleDisplay for FrozenBase<F> {}

/// A Linear weight replaced by its NF4 quantization (inference).
#[derive(Module, Debug)]
pub struct Nf4Weight {
    pub base: Nf4Base,
}

impl Reparameterization for Nf4Weight {
    const NAME: &'static str = "nf4";

    fn apply<const D: usize>(&self, placeholder: Tensor<D>) -> Tensor<D> {
        self.base.as_param(self.base.dequantized(&placeholder.device()))
    }
}

/// A Linear weight replaced by its int8 quantization (`--quantize int8`, inference).
#[derive(Module, Debug)]
pub struct Int8Weight {
    pub base: Int8Base,
}

impl Reparameterization for Int8Weight {
    const NAME: &'static str = "int8";

    fn apply<const D: usize>(&self, placeholder: Tensor<D>) -> Tensor<D> {
        self.base.as_param(self.base.dequantized(&placeholder.device()))
    }
}

/// QLoRA's weight: an NF4 matrix (frozen) plus trained LoRA factors, `W + scale·A·B`. Named and
/// laid out as Burn's `LoraAdapter` (`a` `[in, r]`, `b` `[r, out]`, `scale` = alpha / r).
#[derive(Module, Debug)]
pub struct QloraAdapter {
    pub a: Param<Tensor<2>>,
    pub b: Param<Tensor<2>>,
    pub scale: f64,
    pub base: Nf4Base,
}

impl Reparameterization for QloraAdapter {
    const NAME: &'static str = "lora";

    fn apply<const D: usize>(&self, placeholder: Tensor<D>) -> Tensor<D> {
        let delta = self.a.val().matmul(self.b.val()).mul_scalar(self.scale);
        self.base.as_param(self.base.dequantized(&placeholder.device()) + delta)
    }
}

/// `module` with the 2-D parameters `group` matches replaced by their NF4 quantization
/// ([`Nf4Weight`]); everything else unchanged.
pub fn quantize_with<M: Module>(module: M, group: ParamGroup, options: Nf4Options) -> Result<M> {
    quantize_as(module, group, Quantization::Nf4(options))
}

/// `module` with the 2-D parameters `group` matches replaced by their quantization in `scheme`
/// ([`Nf4Weight`] or [`Int8Weight`]); everything else unchanged.
pub fn quantize_as<M: Module>(module: M, group: ParamGroup, scheme: Quantization) -> Result<M> {
    Quantized::quantize(module, &group, scheme)?.attach()
}

/// `module` frozen, with the 2-D parameters `group` matches quantized and given LoRA factors of
/// `rank` scaled by `scale` ([`QloraAdapter`]; `A` and `B` zero until the caller fills `A`).
pub fn quantize_with_adapters<M: Module>(module: M, group: ParamGroup, options: Nf4Options, rank: usize, scale: f64) -> Result<M> {
    Quantized::quantize(module, &group, Quantization::Nf4(options))?.attach_with_adapters(&group, rank, scale)
}

/// Whether `module` holds quantized weights (NF4 of either kind, or int8).
pub fn is_quantized<M: Module>(module: &M) -> bool {
    struct Find(bool);
    impl ModuleVisitor for Find {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.0 |= frozen_matrix_shape(name, container_type).is_some();
        }
    }
    let mut find = Find(false);
    module.visit(&mut find);
    find.0
}

/// Writing a model's weights: refused for a quantized one, whose stored weights are empty
/// placeholders (its dequantized weights are `module.materialize()`'s).
pub fn ensure_not_quantized<M: Module>(module: &M, dir: &std::path::Path) -> Result<()> {
    match is_quantized(module) {
        true => Err(GptError::Model(format!(
            "{}: the model holds NF4- or int8-quantized weights (--quantize): save its adapters, or materialize() it to write the dequantized weights",
            dir.display()
        ))),
        false => Ok(()),
    }
}

/// The NF4 matrix of a quantized weight (either kind), if it is one.
pub fn nf4_matrix(weight: &Param<Tensor<2>>) -> Option<&Arc<Nf4Matrix>> {
    match weight.reparameterization::<QloraAdapter>() {
        Some(adapter) => Some(&adapter.base.0),
        None => weight.reparameterization::<Nf4Weight>().map(|w| &w.base.0),
    }
}

#[cfg(test)]
mod tests {
    use burn::module::ParamGroup;
    use burn::nn::Linear;

    use super::*;

    fn layer(device: &Device) -> Linear {
        let weight: Vec<f32> = (0..96 * 40).map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0).collect();
        Linear { weight: Param::from_tensor(Tensor::from_data(TensorData::new(weight, [96, 40]), device)), bias: None }
    }

    /// The placeholder survives every traversal Burn makes of a model: valid/train, records,
    /// materialize; `val()` gives the dequantized weight in Burn's layout.
    #[test]
    fn a_quantized_weight_goes_through_burns_module_lifecycle() {
        let device = Device::default().autodiff();
        let plain = layer(&device);
        let expected = Nf4Matrix::from_linear_weight("w", &plain.weight.val().into_data().try_into_vec::<f32>().unwrap(), [96, 40]).unwrap();
        let expected = transpose(&expected.dequantize(), 40, 96);
        let quantized = quantize_with_adapters(plain, ParamGroup::all(), Nf4Options::default(), 4, 2.0).unwrap();
        assert_eq!(quantized.weight.base().dims(), [96, 0]);
        assert_eq!(crate::io::parameter_counts(&quantized), (96 * 4 + 4 * 40, 96 * 40 + 96 * 4 + 4 * 40));
        let valid = quantized.valid();
        assert_eq!(valid.weight.val().into_data().try_into_vec::<f32>().unwrap(), expected, "B = 0: the dequantized weight");
        let trained = valid.train();
        assert!(trained.weight.reparameterization::<QloraAdapter>().is_some_and(|a| a.a.val().is_require_grad()));
        let record = trained.clone().into_record();
        let reloaded = quantize_with_adapters(layer(&device), ParamGroup::all(), Nf4Options::default(), 4, 2.0).unwrap().load_record(record);
        assert_eq!(reloaded.weight.base().dims(), [96, 0]);
        let merged = trained.materialize();
        assert!(merged.weight.reparameterization::<QloraAdapter>().is_none());
        assert_eq!(merged.weight.val().dims(), [96, 40]);
    }

    /// An int8 weight: counted, found, its `val()` the dequantized weight, materialized to it,
    /// and a non-finite weight is an error naming it.
    #[test]
    fn an_int8_weight_goes_through_burns_module_lifecycle() {
        let device = Device::default();
        let plain = layer(&device);
        let values = plain.weight.val().into_data().try_into_vec::<f32>().unwrap();
        let expected = transpose(&Int8Matrix::from_linear_weight("w", &values, [96, 40]).unwrap().dequantize(), 40, 96);
        let quantized = quantize_as(plain, ParamGroup::all(), Quantization::Int8).unwrap();
        assert!(is_quantized(&quantized) && quantized.weight.reparameterization::<Int8Weight>().is_some());
        assert_eq!(quantized.weight.base().dims(), [96, 0]);
        assert_eq!(crate::io::parameter_counts(&quantized), (0, 96 * 40));
        assert_eq!(quantized.weight.val().into_data().try_into_vec::<f32>().unwrap(), expected);
        let merged = quantized.materialize();
        assert!(!is_quantized(&merged));
        assert_eq!(merged.weight.val().into_data().try_into_vec::<f32>().unwrap(), expected);

        let mut bad = layer(&device);
        bad.weight = Param::from_tensor(Tensor::from_data(TensorData::new(vec![f32::NAN; 6], [2, 3]), &device));
        let error = quantize_as(bad, ParamGroup::all(), Quantization::Int8).unwrap_err().to_string();
        assert!(error.contains("`weight`: value 0 is NaN"), "{error}");
    }
}
