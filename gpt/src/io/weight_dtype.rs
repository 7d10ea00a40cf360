//! `--dtype`: how a model's weight matrices are kept in memory for inference. bf16 halves the
//! bytes every decoded token streams from memory; checkpoints stored in bf16 (most modern ones)
//! are then kept as they are rather than widened. Activations, norms and biases stay f32.

use std::fmt;
use std::str::FromStr;

use burn::tensor::DType;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    #[default]
    F32,
    Bf16,
}

impl WeightDtype {
    /// Burn's dtype for tensors stored this way.
    pub fn burn(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
        }
    }
}

impl fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

impl FromStr for WeightDtype {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(format!("unknown dtype `{other}`: f32 or bf16")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_alike() {
        for dtype in [WeightDtype::F32, WeightDtype::Bf16] {
            assert_eq!(dtype.to_string().parse::<WeightDtype>(), Ok(dtype));
        }
        assert_eq!("bfloat16".parse::<WeightDtype>(), Ok(WeightDtype::Bf16));
        assert!("f16".parse::<WeightDtype>().unwrap_err().contains("f32 or bf16"));
        assert_eq!(WeightDtype::Bf16.burn(), DType::BF16);
    }
}
