//! `--precision bf16-mixed|f16-mixed` on the backend under test (`LLMFS_TEST_DEVICE`): on the CPU
//! llmfs's kernels round the products' inputs; elsewhere (LibTorch, CUDA) the products run in the
//! backend's bf16 or f16 (`gpt::ops::matmul`). 20 AdamW steps on one batch of the tiny GPT-2 and
//! the tiny Llama (f16 with the loss scaler, as the trainer runs it): each step's loss within 2 %
//! (relative) of the same steps in f32, and not equal to them (the products did change), and the
//! model learns. The precision is process-wide, so this file's one test runs every case in turn.

use crate::gpt_common::{device, family_fixture_dir, fixture_dir};
use gpt::burn::optim::GradientsParams;
use gpt::burn::prelude::*;
use gpt::burn::tensor::DType;
use gpt::models::CausalLm;
use pipelines::train::grad_scaler::{scaled_backward, with_loss_scale};
use pipelines::train::{OptimConfig, Precision, cross_entropy_masked};

const STEPS: usize = 20;

/// The losses of STEPS AdamW steps (lr 1e-3, dropout 0) on one batch of 2 × 12 tokens.
fn losses(dir: &std::path::Path, precision: Precision) -> (Vec<f64>, &'static str) {
    let device = device().autodiff();
    let guard = precision.apply(&device).unwrap();
    let mut model = gpt::hf::load_language_model_dir(dir, &device).unwrap().with_dropout(0.0);
    let vocab = model.vocab_size() as i64;
    let ids: Vec<i64> = (0..26).map(|i| (i * 7919 + 13) % vocab).collect();
    let inputs = Tensor::<2, Int>::from_data(TensorData::new(ids[..24].to_vec(), [2, 12]), &device);
    let targets = Tensor::<2, Int>::from_data(TensorData::new(ids[2..].to_vec(), [2, 12]), &device);
    let mut optimizer = OptimConfig::default().optimizer();
    let mut losses = Vec::new();
    let mut scaler = precision.loss_scaler();
    for _ in 0..STEPS {
        let scale = scaler.as_ref().map_or(1.0, |s| s.scale());
        let (loss, grads) = with_loss_scale(scale, || {
            let loss = cross_entropy_masked(model.logits(inputs.clone()), targets.clone());
            let grads = scaled_backward(&loss);
            (loss, grads)
        });
        losses.push(loss.into_scalar::<f32>() as f64);
        let mut grads = GradientsParams::from_grads(grads, &model);
        if let Some(scaler) = scaler.as_mut() {
            let (unscaled, finite) = scaler.unscale(&model, grads);
            assert!(finite, "{precision}: a step overflowed at scale {scale}");
            scaler.update(!finite);
            grads = unscaled;
        }
        model = optimizer.step(1e-3, model, grads);
    }
    let path = guard.path();
    (losses, path)
}

#[test]
fn mixed_precision_training_follows_f32_within_two_percent() {
    for dir in [fixture_dir(), family_fixture_dir("llama-tiny")] {
        let (f32_losses, f32_path) = losses(&dir, Precision::F32);
        assert_eq!(f32_path, "f32");
        for (precision, dtype) in [(Precision::Bf16Mixed, DType::BF16), (Precision::F16Mixed, DType::F16)] {
            let device = device();
            if !gpt::backend::is_flex(&device) && !device.supports_dtype(dtype) {
                let refused = precision.apply(&device).err().map(|e| e.to_string()).unwrap_or_default();
                assert!(refused.contains(&format!("has no {dtype:?} arithmetic")), "{precision} on {device:?}: {refused}");
                eprintln!("note: {device:?} has no {dtype:?}: {precision} is refused ({refused})");
                continue;
            }
            let (mixed, path) = losses(&dir, precision);
            let worst = f32_losses.iter().zip(&mixed).map(|(a, b)| (a - b).abs() / a.abs()).fold(0.0, f64::max);
            eprintln!("{}: {precision} ({path}) vs f32, {STEPS} steps: largest relative loss difference {worst:.2e}", dir.display());
            for (step, (a, b)) in f32_losses.iter().zip(&mixed).enumerate() {
                assert!((a - b).abs() <= 0.02 * a.abs(), "{} step {}: {precision} loss {b} vs f32 {a}", dir.display(), step + 1);
            }
            if path == "f32 (no AVX512-BF16)" {
                eprintln!("note: this CPU has no AVX512-BF16: bf16-mixed ran the f32 products");
                assert_eq!(f32_losses, mixed);
            } else {
                assert_ne!(f32_losses, mixed, "{precision} ({path}): the products did not change");
            }
            assert!(mixed[STEPS - 1] < mixed[0] - 0.5, "{} {precision}: {mixed:?}", dir.display());
        }
    }
}
