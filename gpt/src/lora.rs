//! LoRA (Hu et al. 2021) on GPT-2's projections, with Burn's own adapters: `Module::apply_lora`
//! freezes every parameter and makes the targeted weights compute `W + alpha/r · A·B`, with
//! `A` `[in, r]` ~ N(0, 1/r) and `B` `[r, out]` = 0, so a fresh adapter leaves the model unchanged.
//! The model code does not change; `materialize()` folds the adapters into plain weights.
//!
//! Adapters are saved in PEFT's layout, so `peft.PeftModel.from_pretrained(base, DIR)` loads them:
//! `adapter_config.json` + `adapter_model.safetensors` with
//! `base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight` `[r, in]` and `lora_B.weight`
//! `[out, r]` (PyTorch's `nn.Linear` layout: the transposes of Burn's `A` and `B`).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::module::{Lora, Module, ParamGroup};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{GptError, Result};
use crate::fsutil::write_atomic;
use crate::model::Gpt;
use crate::weights::{SafetensorsSource, TensorSource, fill_params_matching, named_params, seeded_normal, write_safetensors};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's prefix of every adapter tensor (`PeftModel` → `LoraModel` → the HF model).
const PEFT_PREFIX: &str = "base_model.model.";

/// A projection of a transformer block that can carry an adapter, by its HF module name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraTarget {
    /// `attn.c_attn`: the fused query/key/value projection.
    AttnQkv,
    /// `attn.c_proj`: the attention output projection.
    AttnProj,
    /// `mlp.c_fc`: the MLP's up projection.
    MlpFc,
    /// `mlp.c_proj`: the MLP's down projection.
    MlpProj,
}

impl LoraTarget {
    pub const ALL: [Self; 4] = [Self::AttnQkv, Self::AttnProj, Self::MlpFc, Self::MlpProj];

    /// The module's path inside a block (`h.{i}.<this>`), as PEFT's `target_modules` names it.
    pub fn module(self) -> &'static str {
        match self {
            Self::AttnQkv => "attn.c_attn",
            Self::AttnProj => "attn.c_proj",
            Self::MlpFc => "mlp.c_fc",
            Self::MlpProj => "mlp.c_proj",
        }
    }
}

/// Which projections get adapters. Parsed from a comma list of `attn` (both attention
/// projections), `mlp` (both MLP projections), `all`, or module names (`c_attn`, `attn.c_proj`,
/// `c_fc`, `mlp.c_proj`; a bare `c_proj` means both, as in PEFT).
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
        self.iter().map(|t| t.module().to_string()).collect()
    }

    /// From PEFT's `target_modules` (or our own names, see the type's docs).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self> {
        use LoraTarget::*;
        let mut set = BTreeSet::new();
        for name in names {
            let name = name.as_ref().trim();
            let add: &[LoraTarget] = match name {
                "attn" => &[AttnQkv, AttnProj],
                "mlp" => &[MlpFc, MlpProj],
                "all" => &LoraTarget::ALL,
                "c_attn" | "attn.c_attn" => &[AttnQkv],
                "attn.c_proj" => &[AttnProj],
                "c_fc" | "mlp.c_fc" => &[MlpFc],
                "mlp.c_proj" => &[MlpProj],
                "c_proj" => &[AttnProj, MlpProj],
                other => {
                    return Err(GptError::Config(format!(
                        "unknown LoRA target {other:?}: expected attn, mlp, all, c_attn, attn.c_proj, c_fc, mlp.c_proj or c_proj"
                    )));
                }
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
    /// Every projection of every block.
    fn default() -> Self {
        Self(LoraTarget::ALL.into_iter().collect())
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

    /// The targeted weights, by their Burn paths (`h.3.attn.c_attn.weight`, or under a prefix
    /// such as the classifier's `gpt.`).
    fn param_group(&self) -> ParamGroup {
        let patterns: Vec<String> = self
            .targets
            .iter()
            .map(|t| format!(r"(^|\.)h\.\d+\.{}\.weight$", t.module().replace('.', r"\.")))
            .collect();
        ParamGroup::from_any_regexes(patterns).expect("the LoRA target patterns are valid regexes")
    }

    /// Attaches adapters to the targeted weights of `module` (a [`Gpt`], a classifier, ...) and
    /// freezes every other parameter: re-enable what else should train (a new head) afterwards.
    /// `B` starts at zero (the model is unchanged) and `A` ~ N(0, 1/rank), Burn's LoRA init, but
    /// drawn on the host from (`seed`, tensor name) rather than from the device's generator,
    /// which every thread of the process shares: two jobs in one process then cannot change
    /// each other's adapters, and a resumed run starts from the same ones.
    pub fn apply<M: Module>(&self, module: M, seed: u64) -> Result<M> {
        let mut init = AdapterInit { seed, std: 1.0 / self.rank as f64 };
        fill_params_matching(self.attach_unfilled(module), &mut init, |name| matches!(peft_name(name), Some((_, true))))
    }

    /// The adapters attached with Burn's values, for a caller that fills them next.
    fn attach_unfilled<M: Module>(&self, module: M) -> M {
        module.apply_lora(Lora::new(self.rank, self.alpha).set_param_group(self.param_group()))
    }

    /// Parameters the adapters add to a model of this shape.
    pub fn num_params(&self, config: &crate::GptConfig) -> usize {
        let c = config.n_embd;
        let per_block: usize = self
            .targets
            .iter()
            .map(|t| {
                let (d_in, d_out) = match t {
                    LoraTarget::AttnQkv => (c, 3 * c),
                    LoraTarget::AttnProj => (c, c),
                    LoraTarget::MlpFc => (c, 4 * c),
                    LoraTarget::MlpProj => (4 * c, c),
                };
                self.rank * (d_in + d_out)
            })
            .sum();
        per_block * config.n_layer
    }
}

/// What the adapter was trained for (PEFT's `task_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdapterTask {
    #[serde(rename = "CAUSAL_LM")]
    CausalLm,
    #[serde(rename = "SEQ_CLS")]
    SequenceClassification,
}

/// `adapter_config.json`: PEFT's keys, which PEFT reads back as a `LoraConfig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub task_type: AdapterTask,
    /// What `--model` named when training: a hub id or an absolute directory.
    pub base_model_name_or_path: String,
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: Vec<String>,
    /// GPT-2's `Conv1D` stores weights `[in, out]`; PEFT must know to transpose.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default = "no_bias")]
    pub bias: String,
    /// Modules trained in full next to the adapters (the classifier's `score`).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub inference_mode: bool,
}

fn no_bias() -> String {
    "none".into()
}

impl AdapterConfig {
    pub fn new(lora: &LoraConfig, task: AdapterTask, base_model: &str) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: task,
            base_model_name_or_path: base_model_reference(base_model),
            r: lora.rank,
            lora_alpha: lora.alpha,
            target_modules: lora.targets.modules(),
            fan_in_fan_out: true,
            lora_dropout: 0.0,
            bias: no_bias(),
            modules_to_save: (task == AdapterTask::SequenceClassification).then(|| vec!["score".to_string()]),
            inference_mode: true,
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GptError::io(path, e))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| GptError::Json { path: path.to_path_buf(), source: e })?;
        if config.peft_type != "LORA" {
            return Err(GptError::Model(format!("{}: peft_type {:?} is not supported (only LORA)", path.display(), config.peft_type)));
        }
        if config.bias != "none" {
            return Err(GptError::Model(format!("{}: LoRA bias {:?} is not supported (only \"none\")", path.display(), config.bias)));
        }
        if !config.fan_in_fan_out {
            return Err(GptError::Model(format!(
                "{}: fan_in_fan_out is false, but GPT-2's Conv1D weights are [in, out]: this adapter is not for GPT-2",
                path.display()
            )));
        }
        config.lora().map_err(|e| GptError::Model(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    pub fn lora(&self) -> Result<LoraConfig> {
        LoraConfig::new(self.r, self.lora_alpha, LoraTargets::from_names(&self.target_modules)?)
    }
}

/// A local base directory is recorded by its absolute path (the adapter may be used from
/// elsewhere); a hub id as it is.
fn base_model_reference(base_model: &str) -> String {
    let path = Path::new(base_model);
    if path.is_dir() {
        if let Ok(absolute) = std::fs::canonicalize(path) {
            return absolute.to_string_lossy().into_owned();
        }
    }
    base_model.to_string()
}

/// Whether `dir` holds an adapter (`adapter_config.json`).
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// The PEFT name of an adapter factor from its HF-style path (`h.0.attn.c_attn.weight.lora.a`),
/// and whether it is `A` (else `B`); `None` for other parameters.
fn peft_name(name: &str) -> Option<(String, bool)> {
    let (module, factor) = name.rsplit_once(".weight.lora.")?;
    let is_a = match factor {
        "a" => true,
        "b" => false,
        _ => return None,
    };
    let matrix = if is_a { "lora_A" } else { "lora_B" };
    Some((format!("{PEFT_PREFIX}transformer.{module}.{matrix}.weight"), is_a))
}

/// The `A` factors of fresh adapters (see [`LoraConfig::apply`]): every tensor asked for drawn
/// from N(0, `std`), seeded from `seed` and its name.
pub(crate) struct AdapterInit {
    pub seed: u64,
    pub std: f64,
}

impl TensorSource for AdapterInit {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        Ok(TensorData::new(seeded_normal(self.seed, name, self.std, shape.iter().product())?, shape.to_vec()))
    }
}

/// A 2-D f32 tensor transposed on the host (`[r, c]` → `[c, r]`).
fn transpose(data: &TensorData) -> Result<TensorData> {
    let shape = data.shape().to_vec();
    let [rows, cols] = shape[..] else {
        return Err(GptError::Tensor(format!("expected a 2-D tensor, got shape {shape:?}")));
    };
    let values: Vec<f32> = data.try_to_vec::<f32>().map_err(|e| GptError::Tensor(format!("{e:?}")))?;
    let mut out = vec![0.0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    Ok(TensorData::new(out, [cols, rows]))
}

/// The adapter factors of a LoRA'd trunk under PEFT's names and layout.
pub fn adapter_tensors(gpt: &Gpt) -> Result<Vec<(String, TensorData)>> {
    let mut tensors = Vec::new();
    for (name, data) in named_params(gpt) {
        if let Some((peft, _)) = peft_name(&name) {
            tensors.push((peft, transpose(&data)?));
        }
    }
    if tensors.is_empty() {
        return Err(GptError::Model("the model has no LoRA adapters to save".into()));
    }
    Ok(tensors)
}

/// Writes a LoRA'd trunk's adapters (and `extra` tensors under their own names, e.g. a
/// classifier head) as `dir/adapter_config.json` + `dir/adapter_model.safetensors`, the weights
/// first, each atomically.
pub fn save_adapter_dir(dir: &Path, gpt: &Gpt, config: &AdapterConfig, extra: Vec<(String, TensorData)>) -> Result<()> {
    let mut tensors = adapter_tensors(gpt)?;
    tensors.extend(extra.into_iter().map(|(name, data)| (format!("{PEFT_PREFIX}{name}"), data)));
    std::fs::create_dir_all(dir).map_err(|e| GptError::io(dir, e))?;
    write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
    let text = serde_json::to_string_pretty(config).map_err(|e| GptError::Model(e.to_string()))?;
    write_atomic(&dir.join(ADAPTER_CONFIG), text.as_bytes())
}

/// An adapter directory opened for loading: its config and its tensors.
pub struct AdapterSource {
    pub dir: PathBuf,
    pub config: AdapterConfig,
    tensors: SafetensorsSource,
}

impl AdapterSource {
    pub fn open(dir: &Path) -> Result<Self> {
        let config = AdapterConfig::load(&dir.join(ADAPTER_CONFIG))?;
        let tensors = SafetensorsSource::open_files(&[dir.join(ADAPTER_WEIGHTS)])?;
        Ok(Self { dir: dir.to_path_buf(), config, tensors })
    }

    /// Attaches the adapters to `gpt` (the base model) and fills them from the file; everything
    /// else keeps the base's values. A missing or wrong-shaped factor names the tensor.
    pub fn attach(&mut self, gpt: Gpt) -> Result<Gpt> {
        let lora = self.config.lora()?;
        fill_params_matching(lora.attach_unfilled(gpt), self, |name| peft_name(name).is_some())
    }

    /// A non-adapter tensor stored next to the adapters (`score.weight`), by its HF name.
    pub fn extra_tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        self.tensors.tensor(&format!("{PEFT_PREFIX}{name}"), shape)
    }

    /// Call after everything was read: an adapter tensor no target asked for is an error.
    pub fn finish(self) -> Result<()> {
        self.tensors.finish()
    }
}

impl TensorSource for AdapterSource {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let (peft, _) = peft_name(name).ok_or_else(|| GptError::Model(format!("`{name}` is not a LoRA factor")))?;
        let stored_shape: Vec<usize> = shape.iter().rev().copied().collect();
        transpose(&self.tensors.tensor(&peft, &stored_shape)?)
    }
}

/// The base model an adapter directory names, with its adapters folded in: a plain model that
/// generates, evaluates and exports like any other.
pub fn load_merged(dir: &Path, device: &Device, hub: &crate::weights::HubOptions, seed: u64) -> Result<Gpt> {
    let mut source = AdapterSource::open(dir)?;
    if source.config.task_type != AdapterTask::CausalLm {
        return Err(GptError::Model(format!(
            "{} holds a classifier's adapter ({:?}), not a language model's: use `llmfs classify`",
            dir.display(),
            source.config.task_type
        )));
    }
    let base = load_base(&source, device, hub, seed)?;
    let gpt = source.attach(base)?;
    source.finish()?;
    Ok(gpt.materialize())
}

/// The base model an adapter was trained on.
pub fn load_base(source: &AdapterSource, device: &Device, hub: &crate::weights::HubOptions, seed: u64) -> Result<Gpt> {
    let base = &source.config.base_model_name_or_path;
    let spec = crate::weights::ModelSpec::parse(base).map_err(|e| {
        GptError::Model(format!("{}: the base model {base:?} of this adapter: {e}", source.dir.join(ADAPTER_CONFIG).display()))
    })?;
    if matches!(spec, crate::weights::ModelSpec::Adapter(_)) {
        return Err(GptError::Model(format!("{}: the base model {base:?} is itself an adapter", source.dir.display())));
    }
    spec.load(device, hub, seed)
}
