//! Walking a module's parameters by their Hugging Face names, to fill them (loading, seeded init)
//! or to read them out (saving). Burn paths are HF names up to the norms' parameters (below).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::error::{GptError, Result};
use crate::io::host_memory::f32_buffer;

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

/// Where parameter values come from, by HF tensor name.
pub trait TensorSource {
    /// The values of tensor `name`, which must have exactly `shape`.
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData>;
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
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
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
                let tensor = Tensor::<D>::from_data(data, &device);
                Param::from_tensor(tensor)
            }
            Err(error) => {
                self.error = Some(error);
                param
            }
        }
    }
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
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.val().into_data().convert::<f32>();
        self.out.push((hf_name(&self.path.join(".")), data));
    }
}

/// (trainable, total) parameter counts of `module`: trainable = gradients on, which needs a
/// module on an autodiff device (without autodiff nothing trains).
pub fn parameter_counts<M: Module>(module: &M) -> (usize, usize) {
    struct Count(usize, usize);
    impl ModuleVisitor for Count {
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
