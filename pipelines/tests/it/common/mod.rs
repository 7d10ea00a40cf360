//! Helpers shared by the training tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository's test fixtures (the tiny GPT-2 and the data samples).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Every tensor of a run's final `model/model.safetensors`, by name, as raw bytes: two runs have
/// the same weights when these are equal.
pub fn model_weights(run: &Path) -> Vec<(String, Vec<u8>)> {
    safetensors_weights(&run.join("model/model.safetensors"))
}

/// Every tensor of a safetensors file, by name, as raw bytes.
pub fn safetensors_weights(file: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<u8>)> = st.tensors().into_iter().map(|(n, v)| (n, v.data().to_vec())).collect();
    tensors.sort();
    tensors
}
