//! Shared helpers for the tests: the fixture model and its expected outputs (made with PyTorch /
//! transformers, see tests/fixtures/gpt2-tiny/README.md).
#![allow(dead_code)]

use std::path::PathBuf;

use gpt::burn::prelude::*;
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gpt2-tiny")
}

pub fn device() -> Device {
    Device::flex()
}

pub fn tiny_model() -> gpt::Gpt {
    gpt::weights::load_model_dir(&fixture_dir(), &device()).expect("the fixture model loads")
}

/// A tensor of `expected.safetensors` as (shape, f32 values).
pub fn expected_f32(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture_dir().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap_or_else(|_| panic!("expected tensor {name}"));
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (view.shape().to_vec(), values)
}

/// A tensor of `expected.safetensors` as (shape, i64 values).
pub fn expected_i64(name: &str) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(fixture_dir().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap_or_else(|_| panic!("expected tensor {name}"));
    assert_eq!(view.dtype(), Dtype::I64, "{name}");
    let values = view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    (view.shape().to_vec(), values)
}

/// The fixture's tolerance for a group, from expected.json's `tolerances_suggested`.
pub fn tolerance(group: &str, kind: &str) -> f64 {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap()).unwrap();
    json["tolerances_suggested"][group][kind].as_f64().unwrap_or_else(|| panic!("tolerance {group}.{kind}"))
}

/// The fixture's `input_ids` [2, 8] as a tensor.
pub fn input_ids() -> Tensor<2, Int> {
    let (shape, ids) = expected_i64("input_ids");
    Tensor::from_data(TensorData::new(ids, shape), &device())
}

pub fn to_vec(t: Tensor<3>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// Largest |a - b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max)
}
