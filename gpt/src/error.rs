//! The one error type of the `gpt` crate: every variant names the file, tensor or value at fault.

use std::path::{Path, PathBuf};

pub type Result<T, E = GptError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{}: invalid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },

    #[error("invalid model config: {0}")]
    Config(String),

    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Safetensors { path: PathBuf, reason: String },

    #[error("{}: missing tensor `{name}` (the config expects shape {expected:?})", path.display())]
    MissingTensor { path: PathBuf, name: String, expected: Vec<usize> },

    #[error("{}: tensor `{name}` has shape {found:?}, but the config expects {expected:?}", path.display())]
    ShapeMismatch { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("{}: unexpected tensor(s) not used by the model config.json describes: {}", path.display(), names.join(", "))]
    UnexpectedTensors { path: PathBuf, names: Vec<String> },

    #[error("{}: tensor `{name}` has dtype {dtype}; only F32, F16 and BF16 weights are supported", path.display())]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },

    #[error("{0}")]
    Model(String),

    #[error("{0}")]
    Hub(String),

    #[error("{0}")]
    Device(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("generation: {0}")]
    Generation(String),

    #[error("tensor: {0}")]
    Tensor(String),
}

impl GptError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}
