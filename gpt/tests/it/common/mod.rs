//! Shared helpers for the tests: the fixture model and its expected outputs (made with PyTorch /
//! transformers, see tests/fixtures/gpt2-tiny/README.md).
#![allow(dead_code)]

pub mod fuzz;

use std::path::PathBuf;

use gpt::burn::prelude::*;
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gpt2-tiny")
}

/// The backend under test: `LLMFS_TEST_DEVICE` (cpu, cuda, wgpu, vulkan, metal), the CPU when unset.
pub fn device_spec() -> gpt::backend::DeviceSpec {
    gpt::backend::DeviceSpec::from_env("LLMFS_TEST_DEVICE").expect("LLMFS_TEST_DEVICE names a device")
}

pub fn device() -> Device {
    device_spec().resolve().expect("the device under test is compiled in")
}

/// How much wider than the fixture's CPU tolerances the comparisons are on this backend: 1 on the
/// CPU; on a GPU, whose f32 matmuls run in TF32 (10-bit mantissa), 100 unless
/// `LLMFS_TEST_TOLERANCE_SCALE` says otherwise. Exact checks (token ids) are never widened.
pub fn tolerance_scale() -> f64 {
    if !device_spec().is_gpu() {
        return 1.0;
    }
    std::env::var("LLMFS_TEST_TOLERANCE_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(100.0)
}

pub fn tiny_model() -> gpt::Gpt {
    gpt::hf::load_model_dir(&fixture_dir(), &device()).expect("the fixture model loads")
}

/// A Llama-family fixture (`llama-tiny`, `qwen3-tiny`; see tests/fixtures/llama-tiny/README.md).
pub fn family_fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// A tensor of `expected.safetensors` as (shape, f32 values).
pub fn expected_f32(name: &str) -> (Vec<usize>, Vec<f32>) {
    expected_f32_in(&fixture_dir(), name)
}

/// A tensor of `dir/expected.safetensors` as (shape, f32 values).
pub fn expected_f32_in(dir: &std::path::Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap_or_else(|_| panic!("expected tensor {name}"));
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (view.shape().to_vec(), values)
}

/// A tensor of `expected.safetensors` as (shape, i64 values).
pub fn expected_i64(name: &str) -> (Vec<usize>, Vec<i64>) {
    expected_i64_in(&fixture_dir(), name)
}

/// A tensor of `dir/expected.safetensors` as (shape, i64 values).
pub fn expected_i64_in(dir: &std::path::Path, name: &str) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap_or_else(|_| panic!("expected tensor {name}"));
    assert_eq!(view.dtype(), Dtype::I64, "{name}");
    let values = view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
    (view.shape().to_vec(), values)
}

/// The fixture's tolerance for a group, from expected.json's `tolerances_suggested`, times
/// [`tolerance_scale`] for the backend under test.
pub fn tolerance(group: &str, kind: &str) -> f64 {
    fixture_tolerance(group, kind) * tolerance_scale()
}

fn fixture_tolerance(group: &str, kind: &str) -> f64 {
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
