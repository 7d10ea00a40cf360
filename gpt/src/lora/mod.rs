//! LoRA (Hu et al. 2021) on the blocks' projections (GPT-2's and the Llama family's), with Burn's own adapters: `Module::apply_lora`
//! freezes every parameter and makes the targeted weights compute `W + alpha/r · A·B`, with
//! `A` `[in, r]` ~ N(0, 1/r) and `B` `[r, out]` = 0, so a fresh adapter leaves the model unchanged.
//! The model code does not change; `materialize()` folds the adapters into plain weights, and
//! [`crate::ops::linear`] computes an adapted layer as `x·W + s·(x·A)·B`.
//!
//! [`peft`]: the adapters on disk, in PEFT's layout. [`qlora`]: the same adapters on an NF4 base.

pub mod peft;
pub mod qlora;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use burn::module::{Lora, Module, ParamGroup};
use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::error::{GptError, Result};
use crate::io::{TensorSource, fill_params_matching, seeded_normal};
use crate::models::LanguageModel;
use crate::models::Classifier;
use peft::peft_name;

pub use qlora::{every_projection, quantize_model, quantize_model_as};
pub use peft::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterConfig, AdapterSource, AdapterTask, adapter_tensors, is_adapter_dir, save_adapter_dir};

/// A projection of a transformer block that can carry an adapter, by its HF module name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraTarget {
    /// GPT-2 `attn.c_attn`: the fused query/key/value projection.
    AttnQkv,
    /// GPT-2 `attn.c_proj`: the attention output projection.
    AttnProj,
    /// GPT-2 `mlp.c_fc`: the MLP's up projection.
    MlpFc,
    /// GPT-2 `mlp.c_proj`: the MLP's down projection.
    MlpProj,
    /// Llama family `self_attn.q_proj` … `mlp.down_proj`.
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl LoraTarget {
    pub const GPT2: [Self; 4] = [Self::AttnQkv, Self::AttnProj, Self::MlpFc, Self::MlpProj];
    pub const LLAMA: [Self; 7] = [Self::QProj, Self::KProj, Self::VProj, Self::OProj, Self::GateProj, Self::UpProj, Self::DownProj];

    /// The module's path inside a block (GPT-2 `h.{i}.<this>`, Llama `model.layers.{i}.<this>`).
    pub fn module(self) -> &'static str {
        match self {
            Self::AttnQkv => "attn.c_attn",
            Self::AttnProj => "attn.c_proj",
            Self::MlpFc => "mlp.c_fc",
            Self::MlpProj => "mlp.c_proj",
            Self::QProj => "self_attn.q_proj",
            Self::KProj => "self_attn.k_proj",
            Self::VProj => "self_attn.v_proj",
            Self::OProj => "self_attn.o_proj",
            Self::GateProj => "mlp.gate_proj",
            Self::UpProj => "mlp.up_proj",
            Self::DownProj => "mlp.down_proj",
        }
    }

    /// The name in PEFT's `target_modules` (a suffix of the module's path, as PEFT matches them):
    /// GPT-2's keep their parent (`c_proj` alone would name both), Llama's are unique already.
    pub fn peft_module(self) -> &'static str {
        let module = self.module();
        match self.is_gpt2() {
            true => module,
            false => module.rsplit('.').next().unwrap_or(module),
        }
    }

    /// GPT-2's Conv1D weights are stored `[in, out]` (PEFT's `fan_in_fan_out`); the Llama
    /// family's `nn.Linear` ones `[out, in]`.
    pub fn is_gpt2(self) -> bool {
        Self::GPT2.contains(&self)
    }

    fn is_attention(self) -> bool {
        matches!(self, Self::AttnQkv | Self::AttnProj | Self::QProj | Self::KProj | Self::VProj | Self::OProj)
    }
}

/// Which projections get adapters. Parsed from a comma list of `attn` (every attention
/// projection), `mlp` (every MLP projection), `all`, or module names: GPT-2's `c_attn`,
/// `attn.c_proj`, `c_fc`, `mlp.c_proj` (a bare `c_proj` means both, as in PEFT) and the Llama
/// family's `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`. The
/// groups name both families' projections until [`LoraConfig::for_model`] keeps the model's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraTargets(BTreeSet<LoraTarget>);

impl LoraTargets {
    pub fn contains(&self, target: LoraTarget) -> bool {
        self.0.contains(&target)
    }

    pub fn iter(&self) -> impl Iterator<Item = LoraTarget> + '_ {
        self.0.iter().copied()
    }

    /// PEFT's `target_modules`.
    pub fn modules(&self) -> Vec<String> {
        self.iter().map(|t| t.peft_module().to_string()).collect()
    }

    /// The targets of one family (GPT-2's, or the Llama family's).
    fn of_family(&self, gpt2: bool) -> Self {
        Self(self.iter().filter(|t| t.is_gpt2() == gpt2).collect())
    }

    /// `Some(true)` when every target is GPT-2's, `Some(false)` when every one is the Llama
    /// family's, `None` when both are named.
    pub fn is_gpt2(&self) -> Option<bool> {
        let gpt2 = self.iter().filter(|t| t.is_gpt2()).count();
        match gpt2 {
            0 => Some(false),
            n if n == self.0.len() => Some(true),
            _ => None,
        }
    }

    /// From PEFT's `target_modules` (or our own names, see the type's docs).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self> {
        use LoraTarget::*;
        let every = || LoraTarget::GPT2.into_iter().chain(LoraTarget::LLAMA);
        let mut set = BTreeSet::new();
        for name in names {
            let name = name.as_ref().trim();
            let add: Vec<LoraTarget> = match name {
                "attn" => every().filter(|t| t.is_attention()).collect(),
                "mlp" => every().filter(|t| !t.is_attention()).collect(),
                "all" => every().collect(),
                "c_attn" => vec![AttnQkv],
                "c_proj" => vec![AttnProj, MlpProj],
                "c_fc" => vec![MlpFc],
                other => match every().find(|t| other == t.module() || other == t.peft_module()) {
                    Some(target) => vec![target],
                    None => {
                        return Err(GptError::Config(format!(
                            "unknown LoRA target {other:?}: expected attn, mlp, all, GPT-2's c_attn, attn.c_proj, c_fc, mlp.c_proj, c_proj \
                             or the Llama family's q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
                        )));
                    }
                },
            };
            set.extend(add);
        }
        if set.is_empty() {
            return Err(GptError::Config("no LoRA targets given: expected e.g. attn,mlp".into()));
        }
        Ok(Self(set))
    }
}

impl Default for LoraTargets {
    /// Every projection of every block, of either family.
    fn default() -> Self {
        Self(LoraTarget::GPT2.into_iter().chain(LoraTarget::LLAMA).collect())
    }
}

impl FromStr for LoraTargets {
    type Err = GptError;

    fn from_str(s: &str) -> Result<Self> {
        Self::from_names(&s.split(',').collect::<Vec<_>>())
    }
}

impl fmt::Display for LoraTargets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.modules().join(","))
    }
}

/// Rank, scale and targets of the adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    /// The update is scaled by `alpha / rank` (PEFT's `lora_alpha`).
    pub alpha: f64,
    pub targets: LoraTargets,
}

impl LoraConfig {
    pub fn new(rank: usize, alpha: f64, targets: LoraTargets) -> Result<Self> {
        if rank == 0 {
            return Err(GptError::Config("--lora-rank must be at least 1".into()));
        }
        if !alpha.is_finite() || alpha <= 0.0 {
            return Err(GptError::Config(format!("--lora-alpha must be a positive number, got {alpha}")));
        }
        Ok(Self { rank, alpha, targets })
    }

    /// The targeted weights, by their Burn paths (GPT-2 `h.3.attn.c_attn.weight`, Llama
    /// `model.layers.3.self_attn.q_proj.weight`, or under a prefix such as the classifier's `gpt.`).
    fn param_group(&self) -> ParamGroup {
        let patterns: Vec<String> = self
            .targets
            .iter()
            .map(|t| format!(r"(^|\.)(h|layers)\.\d+\.{}\.weight$", t.module().replace('.', r"\.")))
            .collect();
        ParamGroup::from_any_regexes(patterns).expect("the LoRA target patterns are valid regexes")
    }

    /// Attaches adapters to the targeted weights of `module` (a [`crate::Gpt`], a classifier, ...) and
    /// freezes every other parameter: re-enable what else should train (a new head) afterwards.
    /// `B` starts at zero (the model is unchanged) and `A` ~ N(0, 1/rank), Burn's LoRA init, but
    /// drawn on the host from (`seed`, tensor name) rather than from the device's generator,
    /// which every thread of the process shares: two jobs in one process then cannot change
    /// each other's adapters, and a resumed run starts from the same ones.
    pub fn apply<M: Module>(&self, module: M, seed: u64) -> Result<M> {
        ensure_plain_weights(&module)?;
        let mut init = AdapterInit { seed, std: 1.0 / self.rank as f64 };
        fill_params_matching(self.attach_unfilled(module), &mut init, |name| matches!(peft_name(name), Some((_, true))))
    }

    /// The adapters attached with Burn's values, for a caller that fills them next. The factors
    /// are f32 (they train) whatever the base's dtype: a frozen base may be kept in bf16.
    fn attach_unfilled<M: Module>(&self, module: M) -> M {
        module.apply_lora(Lora::new(self.rank, self.alpha).set_dtype(FloatDType::F32).set_param_group(self.param_group()))
    }

    /// The same adapters on `model`'s family only: `attn`, `mlp` and `all` name both families'
    /// projections, a model has one family's. Naming only the other family's is an error.
    pub fn for_model(&self, model: &LanguageModel) -> Result<Self> {
        let gpt2 = matches!(model, LanguageModel::Gpt2(_));
        let family = if gpt2 { "GPT-2" } else { "Llama-family" };
        let targets = self.targets.of_family(gpt2);
        if targets.0.is_empty() {
            let expected = if gpt2 { "attn, mlp, all, c_attn, attn.c_proj, c_fc, mlp.c_proj or c_proj" } else { "attn, mlp, all, q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj" };
            return Err(GptError::Config(format!(
                "LoRA targets {} are not projections of a {family} model: expected {expected}",
                self.targets
            )));
        }
        Ok(Self { targets, ..self.clone() })
    }

    /// Attaches adapters to `model`'s targeted projections ([`Self::for_model`], [`Self::apply`]).
    pub fn apply_to(&self, model: LanguageModel, seed: u64) -> Result<LanguageModel> {
        self.for_model(&model)?.apply(model, seed)
    }

    /// A classifier with LoRA instead of a trainable set: adapters on the trunk's targeted
    /// projections and the head train, everything else is frozen.
    pub fn apply_to_classifier(&self, classifier: Classifier, seed: u64) -> Result<Classifier> {
        let lora = self.for_model(&classifier.model)?;
        let mut adapted = lora.apply(classifier, seed)?;
        adapted.score = adapted.score.clone().set_require_grad(true);
        Ok(adapted)
    }
}

/// The `A` factors of fresh adapters (see [`LoraConfig::apply`]): every tensor asked for drawn
/// from N(0, `std`), seeded from `seed` and its name.
pub struct AdapterInit {
    pub seed: u64,
    pub std: f64,
}

impl TensorSource for AdapterInit {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        Ok(TensorData::new(seeded_normal(self.seed, name, self.std, shape.iter().product())?, shape.to_vec()))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::module::{LoraAdapter, Param};
    use burn::nn::Linear;
    use burn::tensor::DType;

    use super::*;
    use crate::backend::STREAMING_MAX_ROWS;
    use crate::ops::linear::tests::{max_rel_diff, random};

    /// A LoRA layer's output and its factors' gradients, applied as `x·W + s·(x·A)·B`, against
    /// the composed weight `W + s·A·B` (what `Param::val` gives); the frozen base gets no gradient.
    /// Also with the base kept in bf16 (bf16-mixed's frozen base): the factors stay f32.
    #[test]
    fn lora_layers_match_the_composed_weight_with_gradients() {
        for base_dtype in [DType::F32, DType::BF16] {
            let ad = Device::flex().autodiff();
            let to_ad = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &ad);
            let bias = Tensor::<1>::from_data(random([1, 6], 4).reshape([6]).into_data(), &ad);
            let layer = Linear { weight: Param::from_tensor(to_ad(random([8, 6], 3)).cast(base_dtype)), bias: Some(Param::from_tensor(bias)) };
            let layer = layer.apply_lora(Lora::new(2, 4.0).set_dtype(FloatDType::F32));
            // B starts at zero: give both factors values so that every gradient is non-trivial.
            let mut factors = AdapterInit { seed: 10, std: 0.5 };
            let layer = fill_params_matching(layer, &mut factors, |name| name.contains("lora")).unwrap();
            let x = Tensor::<3>::from_data(random([STREAMING_MAX_ROWS + 4, 8], 5).reshape([1, STREAMING_MAX_ROWS + 4, 8]).into_data(), &ad).require_grad();
            let weights = Tensor::<3>::from_data(random([STREAMING_MAX_ROWS + 4, 6], 6).reshape([1, STREAMING_MAX_ROWS + 4, 6]).into_data(), &ad);

            let ours = crate::ops::linear(&layer, x.clone());
            let composed = x.clone().matmul(layer.weight.val().unsqueeze()) + layer.bias.as_ref().unwrap().val().unsqueeze();
            let adapter = layer.weight.reparameterization::<LoraAdapter>().expect("a LoRA weight");
            assert_eq!((layer.weight.base().dtype(), adapter.a.val().dtype(), adapter.b.val().dtype()), (base_dtype, DType::F32, DType::F32));
            let grads = (ours.clone() * weights.clone()).sum().backward();
            let reference = (composed.clone() * weights).sum().backward();
            let plain = |t: Tensor<3>| t.reshape([STREAMING_MAX_ROWS + 4, 6]);
            assert!(max_rel_diff(plain(ours), plain(composed)) < 1e-5, "{base_dtype:?}");
            for (name, factor) in [("A", &adapter.a), ("B", &adapter.b)] {
                let (g, r) = (factor.val().grad(&grads).unwrap(), factor.val().grad(&reference).unwrap());
                assert!(max_rel_diff(g, r) < 1e-5, "{base_dtype:?}: d{name}");
            }
            let (g, r) = (x.grad(&grads).unwrap(), x.grad(&reference).unwrap());
            assert!(max_rel_diff(g.reshape([STREAMING_MAX_ROWS + 4, 8]), r.reshape([STREAMING_MAX_ROWS + 4, 8])) < 1e-5, "{base_dtype:?}: dx");
            assert!(layer.weight.base().grad(&grads).is_none(), "the frozen base has no gradient");
        }
    }
}

/// Adapters are attached to plain weights: a model whose weights are stored 4-bit already (a
/// bitsandbytes checkpoint, or `--quantize` at load) is refused rather than trained wrongly.
pub(crate) fn ensure_plain_weights<M: Module>(module: &M) -> Result<()> {
    match crate::quant::is_quantized(module) {
        true => Err(GptError::Model(
            "the model's weights are stored quantized (a bitsandbytes 4-bit checkpoint, or --quantize): plain LoRA cannot go on them; \
             QLoRA's adapters do (LoraConfig::apply_quantized, on the model as loaded, before its quantized weights are attached)"
                .into(),
        )),
        false => Ok(()),
    }
}
