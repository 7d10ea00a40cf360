//! How a loaded model keeps its weights: `--dtype` (f32 or bf16 matrices) and `--quantize
//! nf4|int8` (block projections as 4-bit NormalFloat or 8-bit integers, see `gpt::quant`), shared
//! by the inference commands, the fine-tuning tasks (QLoRA: nf4 only) and the benchmarks.

use anyhow::{Result, bail};
use gpt::burn::prelude::Device;
use gpt::io::WeightDtype;
use gpt::models::LanguageModel;
use gpt::quant::{Nf4Options, QuantizeAtLoad, Quantization};
use serde_json::{Value, json};

use super::ModelRef;

/// `--quantize`: the schemes a frozen weight can be stored in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantizeScheme {
    /// 4-bit NormalFloat in blocks of 64 (bitsandbytes' `nf4`)
    Nf4,
    /// 8-bit integers, one absmax per output row (LLM.int8's weights without outlier columns);
    /// inference only
    Int8,
}

/// `--quantize nf4 [--quantize-double]` or `--quantize int8`.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct QuantizeArgs {
    /// Store the block projections' weights quantized, as bitsandbytes does: nf4 (4-bit, one
    /// absmax per 64 values) or int8 (one absmax per output row); embeddings, norms and the
    /// output head stay as they are. For fine-tuning: QLoRA, nf4 only (needs --lora-rank)
    #[arg(long, value_enum)]
    pub quantize: Option<QuantizeScheme>,
    /// With --quantize nf4: also quantize the absmax to 8 bits in blocks of 256 (bitsandbytes'
    /// double quantization, ~0.4 bit less per weight)
    #[arg(long)]
    pub quantize_double: bool,
}

impl QuantizeArgs {
    /// The NF4 settings (QLoRA's), `None` without `--quantize`; int8 is an error.
    pub fn nf4(&self) -> Result<Option<Nf4Options>> {
        match self.scheme()? {
            Some(Quantization::Nf4(nf4)) => Ok(Some(nf4)),
            Some(Quantization::Int8) => bail!("--quantize int8 is for inference: QLoRA fine-tuning takes --quantize nf4"),
            None => Ok(None),
        }
    }

    /// The scheme for inference, `None` without `--quantize`; `--quantize-double` without nf4 is
    /// an error.
    pub fn scheme(&self) -> Result<Option<Quantization>> {
        match self.quantize {
            Some(QuantizeScheme::Nf4) => Ok(Some(Quantization::Nf4(Nf4Options { double_quant: self.quantize_double }))),
            Some(QuantizeScheme::Int8) if self.quantize_double => {
                bail!("--quantize-double is for --quantize nf4 (it quantizes NF4's block absmax; int8 keeps one f32 scale per row)")
            }
            Some(QuantizeScheme::Int8) => Ok(Some(Quantization::Int8)),
            None if self.quantize_double => bail!("--quantize-double needs --quantize nf4"),
            None => Ok(None),
        }
    }

    /// What to quantize while loading for inference: every block projection, in the scheme
    /// (`None` without `--quantize`).
    pub fn at_load(&self) -> Result<Option<QuantizeAtLoad>> {
        Ok(self.scheme()?.map(gpt::lora::every_projection))
    }

    /// What run.json and the benchmarks' JSON record: `null`, `"nf4"`, `"nf4-double"` or
    /// `"int8"`.
    pub fn describe(&self) -> Value {
        match self.scheme().ok().flatten() {
            Some(Quantization::Int8) => json!("int8"),
            Some(Quantization::Nf4(nf4)) => describe(Some(nf4)),
            None => Value::Null,
        }
    }
}

/// `null`, `"nf4"` or `"nf4-double"` for run.json and the benchmarks' JSON.
pub fn describe(nf4: Option<Nf4Options>) -> Value {
    match nf4 {
        None => Value::Null,
        Some(Nf4Options { double_quant: false }) => json!("nf4"),
        Some(Nf4Options { double_quant: true }) => json!("nf4-double"),
    }
}

/// `--dtype` and `--quantize` of the commands that only run a model (generate, chat, serve,
/// logits, eval …).
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct WeightArgs {
    /// Weight matrices in memory: f32, or bf16 (half the memory and half the bytes each decoded
    /// token reads; a bf16 checkpoint is kept as stored); activations, norms and biases stay f32
    #[arg(long, default_value = "f32")]
    pub dtype: WeightDtype,
    #[command(flatten)]
    pub quantize: QuantizeArgs,
}

impl WeightArgs {
    /// Loads `model` with its matrices as `--dtype` and its block projections quantized as
    /// `--quantize` says while they are read (the f32 model is never held whole). A bitsandbytes
    /// checkpoint's weights are NF4 as stored: `--quantize nf4` adds nothing, `int8` is an error.
    pub fn load(&self, model: &ModelRef, device: &Device, seed: u64) -> Result<LanguageModel> {
        let quantize = self.quantize.at_load()?;
        Ok(model.load_language_model_quantized(device, seed, self.dtype, quantize.as_ref())?.attach()?)
    }
}
