//! Quantized weights on their way into a model: every quantization (`--quantize` at load,
//! QLoRA's base, a bitsandbytes checkpoint's stored NF4 weights) first yields a [`Quantized`]
//! model, whose quantized weights are empty `[in, 0]` placeholders with their matrices kept
//! beside it; the caller then attaches them as inference weights ([`Quantized::attach`]) or
//! under LoRA factors ([`Quantized::attach_with_adapters`], QLoRA).
//!
//! Why the two steps: Burn's `Param::map` puts a parameter's existing reparameterization back
//! after any mapper, so an `Nf4Weight` attached at load could never become a `QloraAdapter`.
//! And quantizing while reading ([`QuantizeOnRead`]) holds one f32 matrix at a time instead of
//! the whole f32 model, which is what QLoRA and `--quantize` are for.

use std::collections::HashMap;
use std::sync::Arc;

use burn::module::{Module, ModuleMapper, Param, ParamGroup, ParamId, Reparameterization, Reparameterizer};
use burn::prelude::*;

use super::reparam::{FrozenBase, Int8Weight, Nf4Weight, QloraAdapter};
use super::{Int8Matrix, Nf4Matrix, Quantization};
use crate::error::{GptError, Result};
use crate::io::params::{TensorSource, fill_params, param_ids_by_name};

/// A quantized weight matrix, not yet in a module.
#[derive(Debug, Clone)]
pub enum FrozenMatrix {
    Nf4(Arc<Nf4Matrix>),
    Int8(Arc<Int8Matrix>),
}

impl FrozenMatrix {
    /// A Linear weight in Burn's `[in, out]` layout (f32 or bf16 values) quantized in `scheme`;
    /// `name` is for errors.
    pub fn quantize(name: &str, data: TensorData, scheme: Quantization) -> Result<Self> {
        let &[d_in, d_out] = data.shape().as_slice() else {
            return Err(GptError::Tensor(format!("tensor `{name}`: only matrices are quantized, this one has shape {:?}", data.shape())));
        };
        let values = data.convert::<f32>().try_into_vec::<f32>().map_err(|e| GptError::Tensor(format!("tensor `{name}`: {e:?}")))?;
        Ok(match scheme {
            Quantization::Nf4(options) => {
                let matrix = Nf4Matrix::from_linear_weight(name, &values, [d_in, d_out])?;
                Self::Nf4(Arc::new(if options.double_quant { matrix.double_quantized() } else { matrix }))
            }
            Quantization::Int8 => Self::Int8(Arc::new(Int8Matrix::from_linear_weight(name, &values, [d_in, d_out])?)),
        })
    }
}

/// What to quantize while loading: `scheme`, for the 2-D parameters `targets` names (by HF name,
/// which is the Burn path for every weight).
#[derive(Debug, Clone)]
pub struct QuantizeAtLoad {
    pub scheme: Quantization,
    pub targets: ParamGroup,
}

impl QuantizeAtLoad {
    fn targets(&self, name: &str, shape: &[usize]) -> bool {
        shape.len() == 2 && self.targets.matches(&ParamId::new(), Some(name))
    }
}

/// A source whose targeted matrices are quantized as they are read: the model gets an empty
/// `[in, 0]` placeholder, the matrix goes to `matrices` (by HF name), and the f32 values are
/// dropped before the next tensor is read.
pub struct QuantizeOnRead<'a> {
    pub source: &'a mut dyn TensorSource,
    pub quantize: &'a QuantizeAtLoad,
    pub matrices: HashMap<String, FrozenMatrix>,
}

impl TensorSource for QuantizeOnRead<'_> {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let data = self.source.tensor(name, shape)?;
        if !self.quantize.targets(name, shape) {
            return Ok(data);
        }
        self.matrices.insert(name.to_string(), FrozenMatrix::quantize(name, data, self.quantize.scheme)?);
        Ok(TensorData::new(Vec::<f32>::new(), [shape[0], 0]))
    }
}

/// `module` filled from `source` (see [`crate::io::fill_params`]), with the weights `quantize`
/// targets quantized as they are read.
pub fn fill_quantized<M: Module>(module: M, source: &mut dyn TensorSource, quantize: Option<&QuantizeAtLoad>) -> Result<Quantized<M>> {
    let Some(quantize) = quantize else { return Ok(Quantized::plain(fill_params(module, source)?)) };
    let mut on_read = QuantizeOnRead { source, quantize, matrices: HashMap::new() };
    let module = fill_params(module, &mut on_read)?;
    Quantized::from_named(module, on_read.matrices)
}

/// A model whose quantized weights are placeholders, with their matrices (by parameter id)
/// waiting to be attached. Only [`Self::attach`] and [`Self::attach_with_adapters`] give the
/// model back: a placeholder must not reach a forward pass.
pub struct Quantized<M> {
    model: M,
    matrices: HashMap<ParamId, FrozenMatrix>,
}

impl<M: Module> Quantized<M> {
    /// A model with nothing quantized.
    pub fn plain(model: M) -> Self {
        Self { model, matrices: HashMap::new() }
    }

    /// `model` (placeholders where `matrices` were read) with `matrices` by HF name, as
    /// [`QuantizeOnRead`] and the bitsandbytes reader leave them. A name the model lacks is an error.
    pub fn from_named(model: M, matrices: HashMap<String, FrozenMatrix>) -> Result<Self> {
        let mut ids = param_ids_by_name(&model);
        let matrices = matrices
            .into_iter()
            .map(|(name, matrix)| match ids.remove(&name) {
                Some(id) => Ok((id, matrix)),
                None => Err(GptError::Model(format!("quantized weight `{name}` has no place in the model"))),
            })
            .collect::<Result<_>>()?;
        Ok(Self { model, matrices })
    }

    /// `module` with its 2-D parameters `group` names quantized in `scheme` (those quantized
    /// already are left as they are). Each one's f32 copy is freed as it is quantized, unless
    /// a clone of the model still holds it.
    pub fn quantize(module: M, group: &ParamGroup, scheme: Quantization) -> Result<Self> {
        Self::plain(module).quantize_remaining(group, scheme)
    }

    /// [`Self::quantize`] for the targeted weights not quantized yet (e.g. at load).
    pub fn quantize_remaining(self, group: &ParamGroup, scheme: Quantization) -> Result<Self> {
        struct Quantize<'a> {
            group: &'a ParamGroup,
            scheme: Quantization,
            path: Vec<String>,
            matrices: HashMap<ParamId, FrozenMatrix>,
            error: Option<GptError>,
        }
        impl ModuleMapper for Quantize<'_> {
            fn enter_module(&mut self, name: &str, _container_type: &str) {
                self.path.push(name.to_string());
            }

            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.path.pop();
            }

            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let path = self.path.join(".");
                let wanted = D == 2 && self.group.matches(&param.id, Some(&path)) && !self.matrices.contains_key(&param.id);
                if !wanted || self.error.is_some() {
                    return param;
                }
                match FrozenMatrix::quantize(&path, param.base().into_data(), self.scheme) {
                    Ok(matrix) => {
                        self.matrices.insert(param.id, matrix);
                        placeholder(param)
                    }
                    Err(error) => {
                        self.error = Some(error);
                        param
                    }
                }
            }
        }
        let mut quantize = Quantize { group, scheme, path: Vec::new(), matrices: self.matrices, error: None };
        let model = self.model.map(&mut quantize);
        match quantize.error {
            Some(error) => Err(error),
            None => Ok(Self { model, matrices: quantize.matrices }),
        }
    }

    /// The model with its quantized weights attached for inference ([`Nf4Weight`],
    /// [`Int8Weight`]), frozen.
    pub fn attach(self) -> Result<M> {
        let Self { model, mut matrices } = self;
        let model = model.apply_reparameterization(Attach::<Nf4Weight>::new(&mut matrices));
        let model = model.apply_reparameterization(Attach::<Int8Weight>::new(&mut matrices));
        ensure_all_attached(&matrices)?;
        Ok(model)
    }

    /// QLoRA: every parameter frozen, the NF4 weights `group` names given LoRA factors of
    /// `rank` scaled by `scale` ([`QloraAdapter`], `A` and `B` zero until the caller fills `A`),
    /// the other quantized weights attached as for inference. A targeted weight that is int8 is
    /// an error (QLoRA's base is NF4).
    pub fn attach_with_adapters(self, group: &ParamGroup, rank: usize, scale: f64) -> Result<M> {
        let Self { model, mut matrices } = self;
        let mut error = None;
        let model = model.apply_reparameterization(Adapters { group, rank, scale, matrices: &mut matrices, error: &mut error });
        match error {
            Some(error) => Err(error),
            None => Quantized { model, matrices }.attach(),
        }
    }

    /// Whether any weight is quantized (and waits to be attached).
    pub fn is_quantized(&self) -> bool {
        !self.matrices.is_empty()
    }

    /// The model before its quantized weights are attached, for what reads only shapes and
    /// names (its family, its config).
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The same quantized weights in `f(model)`, a model that keeps their parameters (a
    /// classifier built on it, its dropout changed ...).
    pub fn map<N: Module>(self, f: impl FnOnce(M) -> N) -> Quantized<N> {
        Quantized { model: f(self.model), matrices: self.matrices }
    }

    /// [`Self::map`] with a fallible `f`.
    pub fn try_map<N: Module, E>(self, f: impl FnOnce(M) -> std::result::Result<N, E>) -> std::result::Result<Quantized<N>, E> {
        Ok(Quantized { model: f(self.model)?, matrices: self.matrices })
    }
}

/// The frozen, empty placeholder that replaces a quantized weight: it keeps `in` (dims()[0]) and
/// holds nothing, so dropping the old value frees the f32 weight (unless a clone of the model
/// still holds it). Same id, so the matrix finds its way back.
fn placeholder<const D: usize>(param: Param<Tensor<D>>) -> Param<Tensor<D>> {
    param.set_require_grad(false).map(|tensor| {
        let device = tensor.device();
        let mut dims = tensor.dims();
        drop(tensor);
        dims[1] = 0;
        Tensor::<D>::zeros(dims, &device)
    })
}

fn ensure_all_attached(matrices: &HashMap<ParamId, FrozenMatrix>) -> Result<()> {
    match matrices.keys().next() {
        None => Ok(()),
        Some(id) => Err(GptError::Model(format!("quantized weight (parameter {id}) has no place in the model"))),
    }
}

/// A reparameterization made from a waiting matrix of its kind.
trait FromFrozen: Reparameterization + Sized {
    fn from_frozen(matrix: FrozenMatrix) -> std::result::Result<Self, FrozenMatrix>;
}

impl FromFrozen for Nf4Weight {
    fn from_frozen(matrix: FrozenMatrix) -> std::result::Result<Self, FrozenMatrix> {
        match matrix {
            FrozenMatrix::Nf4(matrix) => Ok(Nf4Weight { base: FrozenBase(matrix) }),
            other => Err(other),
        }
    }
}

impl FromFrozen for Int8Weight {
    fn from_frozen(matrix: FrozenMatrix) -> std::result::Result<Self, FrozenMatrix> {
        match matrix {
            FrozenMatrix::Int8(matrix) => Ok(Int8Weight { base: FrozenBase(matrix) }),
            other => Err(other),
        }
    }
}

/// Attaches the waiting matrices of one kind (`R`) to their placeholders (a `Reparameterizer`
/// makes one type of reparameterization).
struct Attach<'a, R> {
    matrices: &'a mut HashMap<ParamId, FrozenMatrix>,
    kind: std::marker::PhantomData<R>,
}

impl<'a, R> Attach<'a, R> {
    fn new(matrices: &'a mut HashMap<ParamId, FrozenMatrix>) -> Self {
        Self { matrices, kind: std::marker::PhantomData }
    }
}

impl<R: FromFrozen> Reparameterizer for Attach<'_, R> {
    type Reparam = R;

    fn reparameterize<const D: usize>(&mut self, _path: &str, param: Param<Tensor<D>>) -> (Param<Tensor<D>>, Option<R>) {
        let Some(matrix) = self.matrices.remove(&param.id) else { return (param, None) };
        match R::from_frozen(matrix) {
            Ok(reparam) => (param.set_require_grad(false), Some(reparam)),
            Err(matrix) => {
                self.matrices.insert(param.id, matrix);
                (param, None)
            }
        }
    }
}

/// QLoRA's adapters on the targeted NF4 weights (see [`Quantized::attach_with_adapters`]).
struct Adapters<'a> {
    group: &'a ParamGroup,
    rank: usize,
    scale: f64,
    matrices: &'a mut HashMap<ParamId, FrozenMatrix>,
    error: &'a mut Option<GptError>,
}

impl Reparameterizer for Adapters<'_> {
    type Reparam = QloraAdapter;

    /// As Burn's `Lora`: every parameter is frozen, the targeted ones get factors `A` (zeros
    /// here: the caller fills them, see `crate::lora::LoraConfig::apply`) and `B` = 0.
    fn reparameterize<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> (Param<Tensor<D>>, Option<QloraAdapter>) {
        let param = param.set_require_grad(false);
        if !self.group.matches(&param.id, Some(path)) {
            return (param, None);
        }
        let matrix = match self.matrices.remove(&param.id) {
            Some(FrozenMatrix::Nf4(matrix)) => matrix,
            Some(other) => {
                self.matrices.insert(param.id, other);
                self.error.get_or_insert_with(|| GptError::Model(format!("`{path}` is int8: QLoRA's adapters go on NF4 weights")));
                return (param, None);
            }
            None => return (param, None),
        };
        let device = param.lazy_device();
        let (d_in, d_out) = (matrix.cols(), matrix.rows());
        let a = Param::from_tensor(Tensor::zeros([d_in, self.rank], &device));
        let b = Param::from_tensor(Tensor::zeros([self.rank, d_out], &device));
        (param, Some(QloraAdapter { a, b, scale: self.scale, base: FrozenBase(matrix) }))
    }
}
