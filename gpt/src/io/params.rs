//! Walking a module's parameters by their Hugging Face names, to fill them (loading, seeded init)
//! or to read them out (saving). Burn paths are HF names up to the norms' parameters (below).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::DType;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::error::{GptError, Result};
use crate::io::host_memory::{f32_buffer, host_buffer};
use crate::io::weight_dtype::WeightDtype;

/// The HF tensor name of a parameter from its Burn path: the module fields already carry HF's
/// names; only LayerNorm's parameters differ (`gamma`/`beta` = `weight`/`bias`).
pub fn hf_name(burn_path: &str) -> String {
    if let Some(prefix) = burn_path.strip_suffix(".gamma") {
        format!("{prefix}.weight")
    } else if let Some(prefix) = burn_path.strip_suffix(".beta") {
        format!("{prefix}.bias")
    } else {
        burn_path.to_string()
    }
}

/// Burn enters an enum module's variant as a module of its own (`Gpt2`, `Llama`); HF names have
/// no such level, so paths skip it.
fn enter(path: &mut Vec<String>, name: &str, container_type: &str) {
    if !container_type.starts_with("Enum:") {
        path.push(name.to_string());
    }
}

fn exit(path: &mut Vec<String>, container_type: &str) {
    if !container_type.starts_with("Enum:") {
        path.pop();
    }
}

/// Where parameter values come from, by HF tensor name.
pub trait TensorSource {
    /// The values of tensor `name`, which must have exactly `shape`.
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData>;
}

/// A source whose `Linear` weights (those `is_linear` picks) are stored `[out, in]`, as PyTorch's
/// `nn.Linear` stores them, read into Burn's `[in, out]` (GPT-2's Conv1D weights are `[in, out]`
/// already and need no such wrapper).
pub struct OutInLinears<'a> {
    pub source: &'a mut dyn TensorSource,
    pub is_linear: fn(&str) -> bool,
}

impl TensorSource for OutInLinears<'_> {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let &[d_in, d_out] = shape else { return self.source.tensor(name, shape) };
        if !(self.is_linear)(name) {
            return self.source.tensor(name, shape);
        }
        let stored = self.source.tensor(name, &[d_out, d_in])?;
        let bad = |e| GptError::Tensor(format!("tensor `{name}`: {e:?}"));
        // The source decides the dtype a matrix is kept in (`--dtype`).
        if stored.dtype() == DType::BF16 {
            let values = stored.try_into_vec::<half::bf16>().map_err(bad)?;
            return Ok(TensorData::new(transpose(&values, d_out, d_in), [d_in, d_out]));
        }
        let values = stored.try_into_vec::<f32>().map_err(bad)?;
        Ok(TensorData::new(transpose(&values, d_out, d_in), [d_in, d_out]))
    }
}

/// A source whose matrices (2-D tensors) come out as `dtype`: seeded init's f32 values narrowed
/// one tensor at a time, so that a bf16 model is never held in f32 first.
pub struct MatricesAs<'a> {
    pub source: &'a mut dyn TensorSource,
    pub dtype: WeightDtype,
}

impl TensorSource for MatricesAs<'_> {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let data = self.source.tensor(name, shape)?;
        Ok(match (shape.len(), self.dtype) {
            (2, WeightDtype::Bf16) if data.dtype() == DType::F32 => data.convert::<half::bf16>(),
            _ => data,
        })
    }
}

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` matrix, by blocks (cache-friendly).
pub fn transpose<T: Copy + Default>(values: &[T], rows: usize, cols: usize) -> Vec<T> {
    const BLOCK: usize = 32;
    let mut out = host_buffer(values.len());
    out.resize(values.len(), T::default());
    for r0 in (0..rows).step_by(BLOCK) {
        for c0 in (0..cols).step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rows) {
                for c in c0..(c0 + BLOCK).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

/// Replaces every float parameter of `module` with the source's tensor of the same HF name.
/// The parameters of the skeleton are never initialised, so nothing is allocated twice.
pub fn fill_params<M: Module>(module: M, source: &mut dyn TensorSource) -> Result<M> {
    fill_params_matching(module, source, |_| true)
}

/// [`fill_params`] for the parameters whose HF name passes `wanted` (e.g. only the LoRA
/// factors); the others keep their values.
pub fn fill_params_matching<M: Module>(module: M, source: &mut dyn TensorSource, wanted: fn(&str) -> bool) -> Result<M> {
    let mut filler = Filler { source, wanted, path: Vec::new(), error: None };
    let module = module.map(&mut filler);
    match filler.error {
        Some(error) => Err(error),
        None => Ok(module),
    }
}

struct Filler<'a> {
    source: &'a mut dyn TensorSource,
    wanted: fn(&str) -> bool,
    path: Vec<String>,
    error: Option<GptError>,
}

impl ModuleMapper for Filler<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        enter(&mut self.path, name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        exit(&mut self.path, container_type);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let name = hf_name(&self.path.join("."));
        if !(self.wanted)(&name) {
            return param;
        }
        let shape = param.lazy_shape().to_vec();
        match self.source.tensor(&name, &shape) {
            Ok(data) => {
                let device = param.lazy_device();
                // The source's dtype is the one to keep (bf16 matrices under `--dtype bf16`).
                let dtype = data.dtype();
                let tensor = Tensor::<D>::from_data(data, (&device, dtype));
                Param::from_tensor(tensor)
            }
            Err(error) => {
                self.error = Some(error);
                param
            }
        }
    }
}

/// `module` with its weight matrices (2-D parameters: Linear weights, embeddings, output heads)
/// kept as `dtype`; vectors (biases, norms) stay as they are. Each parameter is converted in
/// turn, so the model is never held twice.
pub fn cast_matrices<M: Module>(module: M, dtype: WeightDtype) -> M {
    struct Cast(DType);
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            if D != 2 {
                return param;
            }
            param.map(|tensor| if tensor.dtype() == dtype { tensor } else { tensor.cast(dtype) })
        }
    }
    module.map(&mut Cast(dtype.burn()))
}

/// Every float parameter's id by its HF name.
pub fn param_ids_by_name<M: Module>(module: &M) -> HashMap<String, ParamId> {
    struct Ids {
        path: Vec<String>,
        out: HashMap<String, ParamId>,
    }
    impl ModuleVisitor for Ids {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            enter(&mut self.path, name, container_type);
        }

        fn exit_module(&mut self, _name: &str, container_type: &str) {
            exit(&mut self.path, container_type);
        }

        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.insert(hf_name(&self.path.join(".")), param.id);
        }
    }
    let mut ids = Ids { path: Vec::new(), out: HashMap::new() };
    module.visit(&mut ids);
    ids.out
}

/// Every float parameter of `module` as (HF name, f32 values), in module order.
pub fn named_params<M: Module>(module: &M) -> Vec<(String, TensorData)> {
    let mut collector = Collector { path: Vec::new(), out: Vec::new() };
    module.visit(&mut collector);
    collector.out
}

struct Collector {
    path: Vec<String>,
    out: Vec<(String, TensorData)>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        enter(&mut self.path, name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        exit(&mut self.path, container_type);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().into_data().convert::<f32>();
        self.out.push((hf_name(&self.path.join(".")), data));
    }
}

/// The container type under which a module holding a frozen matrix that is not a Burn parameter
/// (a quantized weight, `crate::quant`) announces itself to visitors, as an empty module named
/// `"{rows}x{cols}"`: a visitor cannot see such a field otherwise.
pub const FROZEN_MATRIX: &str = "FrozenMatrix";

/// Announces a frozen `rows × cols` matrix to `visitor` (see [`FROZEN_MATRIX`]).
pub fn visit_frozen_matrix<V: ModuleVisitor>(visitor: &mut V, rows: usize, cols: usize) {
    let name = format!("{rows}x{cols}");
    visitor.enter_module(&name, FROZEN_MATRIX);
    visitor.exit_module(&name, FROZEN_MATRIX);
}

/// `(rows, cols)` of a frozen matrix from a module a visitor entered, `None` for any other module.
pub fn frozen_matrix_shape(name: &str, container_type: &str) -> Option<(usize, usize)> {
    let (rows, cols) = name.split_once('x').filter(|_| container_type == FROZEN_MATRIX)?;
    Some((rows.parse().ok()?, cols.parse().ok()?))
}

/// (trainable, total) parameter counts of `module`: trainable = gradients on, which needs a
/// module on an autodiff device (without autodiff nothing trains). A frozen matrix (a quantized
/// weight, see [`FROZEN_MATRIX`]) counts as frozen parameters (its stored placeholder holds none).
pub fn parameter_counts<M: Module>(module: &M) -> (usize, usize) {
    struct Count(usize, usize);
    impl ModuleVisitor for Count {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            if let Some((rows, cols)) = frozen_matrix_shape(name, container_type) {
                self.1 += rows * cols;
            }
        }

        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let n = param.lazy_shape().num_elements();
            self.1 += n;
            if param.val().is_require_grad() {
                self.0 += n;
            }
        }
    }
    let mut count = Count(0, 0);
    module.visit(&mut count);
    (count.0, count.1)
}

/// `n` draws from N(0, `std`) by a generator of its own, seeded from `seed` and the tensor's name:
/// the values do not depend on the backend, on other tensors or on other threads.
pub fn seeded_normal(seed: u64, name: &str, std: f64, n: usize) -> Result<Vec<f32>> {
    let normal = Normal::new(0.0, std as f32).map_err(|e| GptError::Config(format!("the standard deviation of {name}: {e}")))?;
    let mut rng = StdRng::seed_from_u64(seed ^ stable_hash(name));
    let mut values = f32_buffer(n);
    values.extend((0..n).map(|_| normal.sample(&mut rng)));
    Ok(values)
}

/// FNV-1a: a hash of bytes that stays the same across runs, platforms and Rust releases (std's
/// hasher may change), e.g. to seed a generator from a tensor's name.
pub fn stable_hash(bytes: impl AsRef<[u8]>) -> u64 {
    bytes.as_ref().iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}
