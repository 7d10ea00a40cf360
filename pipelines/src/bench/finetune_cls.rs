//! Classification fine-tuning speed (random f32 weights, products at `--precision`): batch 8 × 120 tokens, last block + final
//! norm + 2-class head trainable, AdamW — the `cls` case of `../shared/bench/torch_baseline` — with
//! and without the frozen-prefix cache. Also reports the cost of caching one example's prefix, from
//! which `scripts/bench-finetune.sh` estimates a 5-epoch run on the book's split sizes.

use std::time::Instant;

use anyhow::Result;
use gpt::burn::optim::GradientsParams;
use gpt::burn::prelude::*;
use gpt::backend::DeviceSpec;
use gpt::models::CausalLm;
use gpt::{Classifier, Trainable};
use serde_json::{Value, json};

use super::median;
use crate::train::OptimConfig;
use crate::train::precision::Precision;
use crate::train::steps::{ClassificationBatch, ClassifierInput, ClassifierTraining};

const BATCH: usize = 8;
const LENGTH: usize = 120;

/// Seconds per optimizer step (forward, backward, AdamW) of `model` on `batch`, and the losses.
fn time_steps(mut model: ClassifierTraining, batch: &ClassificationBatch, steps: usize) -> (Vec<f64>, Vec<f64>) {
    let mut optimizer = OptimConfig { decay_all: true, ..OptimConfig::default() }.optimizer();
    let mut times = Vec::new();
    let mut losses = Vec::new();
    for i in 0..steps + 2 {
        let start = Instant::now();
        let out = model.forward_batch(batch.clone());
        let loss = out.loss.clone();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(5e-5, model, grads);
        losses.push(out.loss.into_scalar::<f32>() as f64);
        if i >= 2 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    (times, losses)
}

/// The workload (`llmfs bench finetune-cls` and `cargo bench --bench finetune_cls` take these flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Timed steps of each variant (after 2 warm-up steps)
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// The products' arithmetic, as the fine-tuning commands' --precision (f16-mixed is timed
    /// without its loss scaling, whose cost is one pass over the trainable gradients)
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

/// `preset`: the model shape (`gpt2` = 124M, `smollm2-135m` ...).
pub fn run(spec: DeviceSpec, preset: &str, options: &Options) -> Result<Value> {
    let steps = options.steps;
    let device = spec.resolve()?.autodiff();
    let products = options.precision.apply(&device)?;
    let model = super::preset_model(preset, &device)?.with_dropout(0.0);
    let length = LENGTH.min(model.context_length());
    // The last id pads (GPT-2's `<|endoftext|>`); the texts are drawn below it.
    let pad = model.vocab_size() as u32 - 1;
    let classifier = Classifier::new(model, vec!["ham".into(), "spam".into()], pad, 0)?.set_trainable(Trainable::LastBlock);
    let (trainable, _) = classifier.parameter_counts();
    device.seed(1);
    let ids = Tensor::<2, Int>::random([BATCH, length], gpt::burn::tensor::Distribution::Uniform(0.0, pad as f64), &device);
    let labels = Tensor::<1, Int>::from_data(TensorData::new((0..BATCH as i64).map(|i| i % 2).collect::<Vec<_>>(), [BATCH]), &device);

    // Plain: every step runs all blocks, the frozen ones (all but the last) outside autodiff.
    let first_block = classifier.model.num_blocks() - 1;
    let plain_batch = ClassificationBatch { inputs: ClassifierInput::Tokens(ids.clone()), labels: labels.clone() };
    let plain = ClassifierTraining { classifier: classifier.clone(), first_block, grad_clip: None };
    let (plain_times, plain_losses) = time_steps(plain, &plain_batch, steps);
    // The same through autodiff all the way (what a straightforward port does).
    let autodiff = ClassifierTraining { classifier: classifier.clone(), first_block: 0, grad_clip: None };
    let (autodiff_times, _) = time_steps(autodiff, &plain_batch, steps.min(2));

    // The prefix cache: the frozen blocks once per example (inference), then steps on the last block only.
    let inference = classifier.model.valid();
    let plain_ids = Tensor::<2, Int>::from_data(ids.clone().into_data(), &inference.device());
    let start = Instant::now();
    let prefix = inference.run_blocks(inference.embed_tokens(plain_ids), 0..first_block);
    let prefix = prefix.into_data();
    let cache_per_example = start.elapsed().as_secs_f64() / BATCH as f64;
    let positions = classifier.pool_positions(&ids);
    let cached_batch = ClassificationBatch { inputs: ClassifierInput::Prefix { hidden: Tensor::from_data(prefix, &device), positions }, labels };
    let cached = ClassifierTraining { classifier, first_block, grad_clip: None };
    let (cached_times, cached_losses) = time_steps(cached, &cached_batch, steps);
    let max_rel = plain_losses.iter().zip(&cached_losses).map(|(a, b)| (a - b).abs() / a.abs()).fold(0.0, f64::max);

    Ok(json!({
        "bench": super::bench_name("cls", preset), "preset": preset, "backend": spec.to_string(), "threads": rayon::current_num_threads(),
        "batch": BATCH, "seq_len": length, "trainable_params": trainable,
        "precision": options.precision.to_string(), "matmul": products.path(),
        "plain_step": { "median_s": median(plain_times.clone()), "all_s": plain_times },
        "autodiff_everywhere_step": { "median_s": median(autodiff_times.clone()), "all_s": autodiff_times },
        "cached_step": { "median_s": median(cached_times.clone()), "all_s": cached_times },
        "cache_s_per_example": cache_per_example,
        "losses_plain": plain_losses, "losses_cached": cached_losses, "losses_max_rel_diff": max_rel,
        "peak_rss_mib": super::peak_rss_mib(),
    }))
}
