//! Checkpoints saved by `transformers` with bitsandbytes 4-bit weights (`quantization_config`
//! with `load_in_4bit` in config.json: the `…-bnb-4bit` repos on the hub). Each quantized Linear
//! weight `W` is stored as bitsandbytes' `Params4bit` serializes it: `W` (the packed bytes,
//! uint8), `W.absmax`, `W.quant_map` (the code book) and `W.quant_state.bitsandbytes__nf4` (a
//! JSON dict as uint8: shape, blocksize, ...), plus `W.nested_absmax` / `W.nested_quant_map`
//! with double quantization. The bytes are [`Nf4Matrix`]'s own layout, so they are taken as they
//! are: the model holds the checkpoint's NF4 weights, never a re-quantization of them.

use std::collections::HashMap;
use std::sync::Arc;

use burn::prelude::*;
use safetensors::Dtype;
use serde_json::Value;

use super::nf4::{Absmax, BLOCK, DOUBLE_BLOCK, DYNAMIC_MAP, DoubleAbsmax, NF4_CODE, Nf4Matrix};
use super::FrozenMatrix;
use crate::error::{GptError, Result};
use crate::io::params::TensorSource;
use crate::io::{OutInLinears, SafetensorsSource};

/// What config.json's `quantization_config` asks for, when it names bitsandbytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnbCheckpoint {
    /// No `quantization_config`, or not a bitsandbytes one.
    None,
    /// `load_in_4bit` with `nf4`: read by [`Bnb4bitLinears`].
    Nf4,
}

impl BnbCheckpoint {
    /// Reads `quantization_config` from config.json's keys (`config_path` for errors): 8-bit and
    /// FP4 checkpoints are refused by name, other quantization methods too.
    pub fn of(config: &serde_json::Map<String, Value>, config_path: &std::path::Path) -> Result<Self> {
        let Some(q) = config.get("quantization_config") else { return Ok(Self::None) };
        let refuse = |what: String| Err(GptError::Config(format!("{}: {what}", config_path.display())));
        let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
        if method != "bitsandbytes" {
            return refuse(format!("quantization_config.quant_method `{method}` is not supported (bitsandbytes 4-bit NF4 checkpoints are)"));
        }
        if q.get("load_in_8bit").and_then(Value::as_bool) == Some(true) {
            return refuse("bitsandbytes 8-bit checkpoints are not supported: load the unquantized model (--quantize nf4 quantizes it at load)".into());
        }
        match q.get("bnb_4bit_quant_type").and_then(Value::as_str) {
            Some("nf4") | None => Ok(Self::Nf4),
            Some(other) => refuse(format!("bnb_4bit_quant_type `{other}` is not supported (only nf4)")),
        }
    }
}

/// A source for a bitsandbytes 4-bit checkpoint: its NF4 weights are read into [`Nf4Matrix`]es
/// (kept in `matrices` by tensor name) and handed to the model as empty `[in, 0]` placeholders,
/// as [`super::QuantizeOnRead`] does (see [`super::Quantized::from_named`]); every other tensor
/// as `OutInLinears` reads it.
pub struct Bnb4bitLinears<'a> {
    pub source: &'a mut SafetensorsSource,
    pub is_linear: fn(&str) -> bool,
    pub matrices: HashMap<String, FrozenMatrix>,
}

impl TensorSource for Bnb4bitLinears<'_> {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        if self.source.contains(&format!("{name}.quant_state.bitsandbytes__fp4")) {
            return Err(GptError::Tensor(format!("tensor `{name}`: bitsandbytes FP4 weights are not supported (only NF4)")));
        }
        if !self.source.contains(&format!("{name}.quant_state.bitsandbytes__nf4")) {
            return OutInLinears { source: &mut *self.source, is_linear: self.is_linear }.tensor(name, shape);
        }
        let &[d_in, d_out] = shape else {
            return Err(GptError::Tensor(format!("tensor `{name}`: an NF4 weight where the model has a tensor of shape {shape:?}")));
        };
        let matrix = read_nf4(self.source, name, [d_out, d_in])?;
        self.matrices.insert(name.to_string(), FrozenMatrix::Nf4(Arc::new(matrix)));
        Ok(TensorData::new(Vec::<f32>::new(), [d_in, 0]))
    }
}

/// Reads the NF4 weight `name` (`[rows, cols]` = HF's `[out, in]`) from its bitsandbytes parts.
fn read_nf4(source: &mut SafetensorsSource, name: &str, [rows, cols]: [usize; 2]) -> Result<Nf4Matrix> {
    let bad = |what: String| GptError::Tensor(format!("tensor `{name}`: {what}"));
    let (_, _, state) = source.raw(&format!("{name}.quant_state.bitsandbytes__nf4"))?;
    let state: Value = serde_json::from_slice(&state).map_err(|e| bad(format!("quant_state is not JSON: {e}")))?;
    let shape: Option<Vec<usize>> = state.get("shape").and_then(|s| serde_json::from_value(s.clone()).ok());
    if shape != Some(vec![rows, cols]) {
        return Err(bad(format!("quant_state.shape is {:?}; the model expects [{rows}, {cols}]", state.get("shape"))));
    }
    if state.get("blocksize").and_then(Value::as_u64) != Some(BLOCK as u64) {
        return Err(bad(format!("blocksize {:?}: only NF4 in blocks of {BLOCK} is supported", state.get("blocksize"))));
    }
    let (dtype, _, packed) = source.raw(name)?;
    if dtype != Dtype::U8 {
        return Err(bad(format!("the packed NF4 weight is {dtype:?}, expected U8")));
    }
    if source.f32_values(&format!("{name}.quant_map"))? != NF4_CODE {
        return Err(bad("quant_map is not bitsandbytes' NF4 code book".into()));
    }
    let absmax_name = format!("{name}.absmax");
    let absmax = if source.contains(&format!("{name}.nested_absmax")) {
        let (dtype, _, quantized) = source.raw(&absmax_name)?;
        if dtype != Dtype::U8 {
            return Err(bad(format!("a double-quantized absmax is {dtype:?}, expected U8")));
        }
        if source.f32_values(&format!("{name}.nested_quant_map"))? != DYNAMIC_MAP {
            return Err(bad("nested_quant_map is not bitsandbytes' dynamic map".into()));
        }
        if state.get("nested_blocksize").and_then(Value::as_u64) != Some(DOUBLE_BLOCK as u64) {
            return Err(bad(format!("nested_blocksize {:?}: only {DOUBLE_BLOCK} is supported", state.get("nested_blocksize"))));
        }
        let offset = state.get("nested_offset").and_then(Value::as_f64).ok_or_else(|| bad("quant_state has no nested_offset".into()))?;
        let absmax = source.f32_values(&format!("{name}.nested_absmax"))?;
        // JSON holds the f32 offset as its shortest decimal: reading it as f64 and rounding gives it back.
        Absmax::Double(DoubleAbsmax { quantized, absmax, offset: offset as f32 })
    } else {
        Absmax::F32(source.f32_values(&absmax_name)?)
    };
    Nf4Matrix::from_parts(name, [rows, cols], packed, absmax)
}
